//! Device numbers written after a type name: "weather station 2", "pet feeder three",
//! "pet_feeder 3", "pet feeder number 3", "smart plug #1".
//!
//! The rule, so that a version is never read as a device nor a device as a version:
//!
//! - A number is a device number only right after a name that fits exactly one device type
//!   written in the singular ("pet feeder 3", not "pet feeders 3": a plural before a number
//!   is a list of devices, and the number is more likely a version) and in the same clause.
//! - A number a word marks as a version is never a device number: "to 2", "version 2",
//!   "v2", "on 1", "older than 2" all have such a word between the type name and the
//!   number, so "update pet feeders to 2" stays version 2.
//! - "number 3", "no 3", "#3" after the type name is always a device number. Numbers may
//!   be words up to "twenty"; "one" only after "number" (elsewhere it is a pronoun: "which
//!   pet feeder one").
//! - A bare number ("pet feeder 3", "pet feeder three") in an update or rollback that names
//!   no version otherwise could be either ("update pet feeder 2": device 2, or version 2?):
//!   the engine asks instead of choosing (see [`DeviceNumber::bare`]). In a question, or in
//!   an update whose version is said elsewhere ("update pet feeder 2 to 3.0.0"), it is the
//!   device.
//!
//! The mention becomes `{type}-{number}` (`weather_station-2`), which the service resolves
//! against the registry like any written thing name (leading zeros ignored); a number that
//! names no device there is refused with close matches, never changed.

use super::tokens::{Kind, Token};
use super::types::{Outcome, TypeHit, TypeIndex};
use crate::intent::fuzzy::singular;

/// A device named by type and number.
#[derive(Debug, Clone)]
pub(super) struct DeviceNumber {
    /// Index of the type hit in the hits of the prompt.
    pub hit: usize,
    /// The tokens after the hit that hold the number (one, or two for "number 3").
    pub tokens: std::ops::Range<usize>,
    /// `weather_station-2`.
    pub mention: String,
    /// The number as written.
    pub number: String,
    /// Written without "number" or "#": a version too, in an update that names none.
    pub bare: bool,
}

/// Largest device number read from a word ("twenty").
const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// The number a token stands for, written in digits or as a word. "one" counts only after
/// "number": "the pet feeder one", "which pet feeder one" use it as a pronoun.
fn number_at(t: &Token<'_>, after_number_word: bool) -> Option<u64> {
    match t.kind {
        Kind::Number => t.word.parse().ok(),
        Kind::Word if t.word == "one" && !after_number_word => None,
        Kind::Word => NUMBER_WORDS.iter().position(|w| *w == t.word).map(|n| n as u64),
        _ => None,
    }
}

/// Every device number in the prompt (see the module's rule).
pub(super) fn find(tokens: &[Token<'_>], hits: &[TypeHit], index: &TypeIndex<'_>) -> Vec<DeviceNumber> {
    let mut out = Vec::new();
    for (h, hit) in hits.iter().enumerate() {
        let Outcome::Types(types) = &hit.outcome else { continue };
        let [ty] = types.as_slice() else { continue };
        let last = &tokens[hit.end - 1];
        if last.clause_end || !singular_name(last, &index.name(*ty)) {
            continue;
        }
        let Some(next) = tokens.get(hit.end) else { continue };
        let (n, range, bare) = if let Some(n) = number_at(next, false) {
            (n, hit.end..hit.end + 1, true)
        } else if let Some(n) = next.word.strip_prefix('#').and_then(|d| d.parse::<u64>().ok()) {
            (n, hit.end..hit.end + 1, false)
        } else if matches!(next.word.as_str(), "number" | "no" | "nr" | "num")
            && !next.clause_end
            && let Some(n) = tokens.get(hit.end + 1).and_then(|t| number_at(t, true))
        {
            (n, hit.end..hit.end + 2, false)
        } else {
            continue;
        };
        let number = tokens[range.end - 1].raw.to_string();
        out.push(DeviceNumber { hit: h, tokens: range, mention: format!("{}-{n}", index.name(*ty)), number, bare });
    }
    out
}

/// Whether the last word of a type name is written in the singular: `pet_feeder`, "feeder",
/// not `pet_feeders` or "feeders".
fn singular_name(last: &Token<'_>, type_name: &str) -> bool {
    match last.kind {
        Kind::Ident => last.word == type_name,
        _ => singular(&last.word) == last.word,
    }
}
