//! Splits a prompt into words and says what each word looks like: a plain word, a version,
//! a device-type identifier, a thing name or a rollout id.

use crate::names::{JobId, ThingName};
use crate::version::VersionRequest;

use super::lexicon;

/// One word of the prompt.
#[derive(Debug, Clone)]
pub(super) struct Token<'a> {
    /// As written, without surrounding punctuation: thing names keep their case.
    pub raw: &'a str,
    /// Lowercase; for versions, without the `v` or `<` in front.
    pub word: String,
    pub kind: Kind,
    /// A `.`, `!`, `?` or `;` followed the word.
    pub clause_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Word,
    /// A bare integer: a version only where a word such as "to" or "version" says so.
    Number,
    /// `2.0.0`, `v2`, `1.x`; `below` for `<2.0.0`.
    Version {
        below: bool,
    },
    /// Contains `_`: compared whole against the device types.
    Ident,
    /// Contains `-` or `:`: a thing name as far as the parser can tell.
    Thing,
    /// `update-...` or `rollback-...`: the id of a rollout.
    RolloutId,
}

/// Characters that separate words outright.
fn separates(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '(' | ')' | '"' | '[' | ']' | '{' | '}' | '“' | '”' | '`' | '*')
}

/// Punctuation trimmed from the ends of a word.
fn trims(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | ';' | ':' | '\'' | '‘' | '’' | '…' | '¿' | '¡')
}

/// The words of `text`, and whether it asked a question (a `?` anywhere).
pub(super) fn tokenize(text: &str) -> (Vec<Token<'_>>, bool) {
    let mut tokens = Vec::new();
    for piece in text.split(separates) {
        let before_end = piece.trim_end_matches(trims);
        let clause_end = piece[before_end.len()..].chars().any(|c| matches!(c, '.' | '!' | '?' | ';'));
        let raw = before_end.trim_start_matches(trims);
        if raw.is_empty() {
            // A lone "." or "?" ends the clause of the word before it.
            if clause_end && let Some(last) = tokens.last_mut() {
                let last: &mut Token<'_> = last;
                last.clause_end = true;
            }
            continue;
        }
        let raw = strip_possessive(raw);
        let lower = raw.to_lowercase().replace('’', "'");
        if let Some(words) = expand_contraction(&lower) {
            let last = words.len() - 1;
            for (k, word) in words.into_iter().enumerate() {
                tokens.push(Token { raw, word, kind: Kind::Word, clause_end: clause_end && k == last });
            }
            continue;
        }
        let (word, kind) = classify(raw, lower);
        tokens.push(Token { raw, word, kind, clause_end });
    }
    (tokens, text.contains('?'))
}

/// `pet_feeder-03's` → `pet_feeder-03`; plain words keep theirs ("what's" is a known word).
fn strip_possessive(raw: &str) -> &str {
    let stem = raw.strip_suffix("'s").or_else(|| raw.strip_suffix("’s"));
    match stem {
        Some(s) if s.contains(['_', '-']) => s,
        _ => raw,
    }
}

/// A contraction or possessive the lexicon does not list, as the words it stands for:
/// "that's" → "that is", "wasn't" → "was not", "won't" → "will not", "they're" → "they
/// are", and "feeder's" → "feeder" (a possessive: any "'s" after a word other than a
/// pronoun or question word such as "that", "it", "what", "where"). Words the lexicon lists as they are ("don't",
/// "what's") keep their own role, so the answer to "don't" and "do not" is the same
/// negation. `None` for a word with no apostrophe, or one that is not a contraction.
fn expand_contraction(lower: &str) -> Option<Vec<String>> {
    if !lower.contains('\'') || lexicon::role(lower).is_some() {
        return None;
    }
    let (stem, tail) = lower.rsplit_once('\'')?;
    if stem.is_empty() || !stem.chars().all(|c| c.is_alphabetic()) {
        return None;
    }
    let words: Vec<&str> = match tail {
        "t" if stem.ends_with('n') => {
            let verb = &stem[..stem.len() - 1];
            match verb {
                "wo" => vec!["will", "not"],
                "ca" => vec!["can", "not"],
                "sha" => vec!["shall", "not"],
                "" => return None,
                v => vec![v, "not"],
            }
        }
        "s" if matches!(
            stem,
            "that"
                | "this"
                | "it"
                | "what"
                | "which"
                | "where"
                | "how"
                | "who"
                | "there"
                | "here"
                | "everything"
                | "when"
        ) =>
        {
            vec![stem, "is"]
        }
        "s" => vec![stem],
        "re" => vec![stem, "are"],
        "m" => vec![stem, "am"],
        "ll" => vec![stem, "will"],
        "d" => vec![stem, "would"],
        "ve" => vec![stem, "have"],
        _ => return None,
    };
    Some(words.into_iter().map(str::to_string).collect())
}

fn classify(raw: &str, lower: String) -> (String, Kind) {
    if let Some(rest) = lower.strip_prefix('<')
        && let Some((v, _)) = version_shape(rest)
    {
        return (v, Kind::Version { below: true });
    }
    if let Some((v, kind)) = version_shape(&lower) {
        return (v, kind);
    }
    if (lower.starts_with("update-") || lower.starts_with("rollback-")) && JobId::parse(raw).is_ok() {
        return (lower, Kind::RolloutId);
    }
    if lower.contains(['-', ':']) {
        let has_digit = lower.bytes().any(|b| b.is_ascii_digit());
        if !has_digit && !lower.contains(['_', ':']) {
            // "roll-out", "over-the-air", "fleet-wide" are words, not thing names.
            let joined: String = lower.chars().filter(|c| *c != '-').collect();
            if lexicon::role(&joined).is_some() {
                return (joined, Kind::Word);
            }
        }
        if ThingName::parse(raw).is_ok() {
            return (lower, Kind::Thing);
        }
        return (lower, Kind::Word);
    }
    if lower.contains('_') && lower.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return (lower, Kind::Ident);
    }
    (lower, Kind::Word)
}

/// Recognises `2.0.0`, `v2`, `V2.1`, `1.x`, `2.0.0-rc.1` and bare integers. Returns the
/// text without the `v`, and whether it is a full version or only a bare number.
fn version_shape(lower: &str) -> Option<(String, Kind)> {
    let (body, prefixed) = match lower.strip_prefix('v') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => (rest, true),
        _ => (lower, false),
    };
    if !body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (core, wildcard) = match body.strip_suffix(".x").or_else(|| body.strip_suffix(".*")) {
        Some(core) => (core, true),
        None => (body, false),
    };
    VersionRequest::parse(core).ok()?;
    let bare_number = core.bytes().all(|b| b.is_ascii_digit());
    let kind = if bare_number && !prefixed && !wildcard { Kind::Number } else { Kind::Version { below: false } };
    Some((body.to_string(), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(String, Kind)> {
        tokenize(text).0.into_iter().map(|t| (t.word, t.kind)).collect()
    }

    #[test]
    fn words_versions_and_names_are_told_apart() {
        let k = kinds("Update pet_feeder-03, smart_plug and V2.0.0 (1.x) 2 <2.0.0 2.0.0-rc.1 update-pet_feeder-ab");
        assert_eq!(
            k,
            vec![
                ("update".to_string(), Kind::Word),
                ("pet_feeder-03".to_string(), Kind::Thing),
                ("smart_plug".to_string(), Kind::Ident),
                ("and".to_string(), Kind::Word),
                ("2.0.0".to_string(), Kind::Version { below: false }),
                ("1.x".to_string(), Kind::Version { below: false }),
                ("2".to_string(), Kind::Number),
                ("2.0.0".to_string(), Kind::Version { below: true }),
                ("2.0.0-rc.1".to_string(), Kind::Version { below: false }),
                ("update-pet_feeder-ab".to_string(), Kind::RolloutId),
            ]
        );
    }

    #[test]
    fn contractions_become_their_words_and_possessives_their_noun() {
        let words = |text: &str| tokenize(text).0.into_iter().map(|t| t.word).collect::<Vec<_>>();
        assert_eq!(
            words("that's wasn’t couldn't they're I'll feeder's"),
            ["that", "is", "was", "not", "could", "not", "they", "are", "i", "will", "feeder"]
        );
        // Listed words keep their own role; odd ones are left as written.
        assert_eq!(words("don't what's isn’t o'clock 'quoted'"), ["don't", "what's", "isn't", "o'clock", "quoted"]);
        let (t, _) = tokenize("that's.");
        assert!(!t[0].clause_end && t[1].clause_end);
        assert_eq!((t[0].raw, t[1].raw), ("that's", "that's"));
    }

    #[test]
    fn punctuation_ends_clauses_and_marks_questions() {
        let (t, question) = tokenize("Which pet feeders are on 1.x? Stop; now.");
        assert!(question);
        assert_eq!(t[5].word, "1.x");
        assert!(t[5].clause_end);
        assert!(t[6].clause_end);
        assert!(!t[4].clause_end);
        let (t, question) = tokenize("roll-out the PET_FEEDER-03's firmware");
        assert!(!question);
        assert_eq!((t[0].word.as_str(), t[0].kind), ("rollout", Kind::Word));
        assert_eq!((t[2].raw, t[2].kind), ("PET_FEEDER-03", Kind::Thing));
    }
}
