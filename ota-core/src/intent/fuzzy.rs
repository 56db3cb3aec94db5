//! Tolerance for how people write names: plurals and small typos. Shared by the prompt parser
//! (device types) and thing resolution (registry names).

use std::borrow::Cow;

use crate::similarity::edit_distance;

/// Longest ASCII strings compared on the stack; longer or non-ASCII ones take the general path.
const SHORT: usize = 64;

/// The edit distance (with adjacent transpositions) between `a` and `b` when it is at most
/// `max`.
pub(super) fn within(a: &str, b: &str, max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let d = if a.len() <= SHORT && b.len() <= SHORT && a.is_ascii() && b.is_ascii() {
        short_distance(a.as_bytes(), b.as_bytes(), max)
    } else {
        edit_distance(a, b, max)
    };
    (d <= max).then_some(d)
}

/// [`edit_distance`] for short ASCII strings without allocating: the engine compares each
/// unknown word with every type word, so this runs thousands of times on a long prompt.
fn short_distance(a: &[u8], b: &[u8], max: usize) -> usize {
    let n = b.len();
    let mut rows = [[0usize; SHORT + 1]; 3];
    for (j, cell) in rows[1].iter_mut().enumerate().take(n + 1) {
        *cell = j;
    }
    let (mut two_up, mut up, mut cur) = (0, 1, 2);
    for i in 1..=a.len() {
        rows[cur][0] = i;
        let mut row_min = i;
        for j in 1..=n {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[up][j] + 1).min(rows[cur][j - 1] + 1).min(rows[up][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[two_up][j - 2] + 1);
            }
            rows[cur][j] = d;
            row_min = row_min.min(d);
        }
        if row_min > max {
            return max + 1;
        }
        (two_up, up, cur) = (up, cur, two_up);
    }
    rows[up][n].min(max + 1)
}

/// How many edits a whole name may be off by and still be recognised: names of ten
/// characters or more carry enough letters for two typos to stay unambiguous.
pub(super) fn name_tolerance(len: usize) -> usize {
    if len >= 10 { 2 } else { 1 }
}

/// The singular of an English plural, by the two rules that cover device nouns:
/// `switches` → `switch`, `batteries` → `battery`, `feeders` → `feeder`. Words that are
/// not plurals come back unchanged.
pub(super) fn singular(word: &str) -> Cow<'_, str> {
    if word.len() > 4
        && let Some(stem) = word.strip_suffix("ies")
    {
        return Cow::Owned(format!("{stem}y"));
    }
    if let Some(stem) = word.strip_suffix("es")
        && (stem.ends_with("sh") || stem.ends_with("ch") || stem.ends_with('x') || stem.ends_with('s'))
        && stem.len() >= 3
    {
        return Cow::Borrowed(stem);
    }
    if word.len() > 3
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && let Some(stem) = word.strip_suffix('s')
    {
        return Cow::Borrowed(stem);
    }
    Cow::Borrowed(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_become_singular_and_singulars_stay() {
        for (plural, one) in [
            ("feeders", "feeder"),
            ("switches", "switch"),
            ("boxes", "box"),
            ("batteries", "battery"),
            ("scales", "scale"),
            ("arms", "arm"),
            ("glass", "glass"),
            ("status", "status"),
            ("feeder", "feeder"),
            ("co2", "co2"),
        ] {
            assert_eq!(singular(plural), one, "{plural}");
        }
    }

    #[test]
    fn the_short_path_agrees_with_the_general_one() {
        let words = ["", "a", "ab", "ba", "feeder", "feedr", "fedeer", "pet_feeder", "pte_feeder", "kitten", "sitting"];
        for a in words {
            for b in words {
                for max in 0..4 {
                    assert_eq!(
                        short_distance(a.as_bytes(), b.as_bytes(), max),
                        edit_distance(a, b, max),
                        "{a} {b} {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn distance_is_bounded() {
        assert_eq!(within("feedr", "feeder", 1), Some(1));
        assert_eq!(within("upgarde", "upgrade", 1), Some(1));
        assert_eq!(within("feeder", "camera", 2), None);
        assert_eq!(within("a", "abcdef", 2), None);
    }
}
