//! Closeness of names, for "did you mean" hints. Never used to pick a target silently.

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), bounded:
/// returns `max + 1` as soon as the distance is known to exceed `max`.
pub fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
            row_min = row_min.min(d);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(max + 1)
}

/// Up to `n` names closest to `word` (distance at most a third of its length, at least 2, or
/// sharing a word with it), closest first.
pub fn closest_names<'a>(word: &str, names: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<String> {
    let word = word.to_ascii_lowercase();
    let max = (word.chars().count() / 3).max(2);
    let words: Vec<&str> = word.split(['_', '-', ' ']).filter(|w| w.len() >= 3).collect();
    let mut scored: Vec<(usize, String)> = names
        .into_iter()
        .filter_map(|name| {
            let d = edit_distance(&word, &name.to_ascii_lowercase(), max);
            if d <= max {
                return Some((d, name.to_string()));
            }
            let shares = name.split(['_', '-']).any(|p| words.contains(&p));
            shares.then(|| (max + 1, name.to_string()))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(n).map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("pet_feeder", "pet_feeder", 2), 0);
        assert_eq!(edit_distance("pet_feder", "pet_feeder", 2), 1);
        assert_eq!(edit_distance("pte_feeder", "pet_feeder", 2), 1);
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance("a", "abcdef", 2), 3);
    }

    #[test]
    fn closest_names_ranks_and_limits() {
        let names = ["pet_feeder", "bird_feeder_camera", "smart_plug"];
        assert_eq!(closest_names("pet_feedr", names, 3), ["pet_feeder"]);
        assert_eq!(closest_names("feeder", names, 3), ["bird_feeder_camera", "pet_feeder"]);
        assert!(closest_names("zzz", names, 3).is_empty());
    }
}
