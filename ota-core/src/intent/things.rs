//! Resolving a thing name as written (`pet_feeder-3`) against the registry's things.
//!
//! Resolution is conservative: it corrects what can only mean one thing (case, leading
//! zeros, a typo in the type part) and refuses the rest with suggestions. It never changes
//! a number, since `pet_feeder-4` is one letter away from `pet_feeder-5` and a different
//! device, and it never picks among several equally close names.

use super::fuzzy::{name_tolerance, within};
use crate::names::ThingName;

/// Most suggestions offered for a name that did not resolve.
const MAX_SUGGESTIONS: usize = 5;

/// Result of matching a written thing name against the registry's things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingMatch {
    Found(ThingName),
    NotFound { suggestions: Vec<String> },
}

/// Resolves a mention such as `pet_feeder-3` against candidate thing names.
///
/// In order: the exact name; the name in another case; for `{prefix}-{digits}`, the thing
/// with the same number (leading zeros ignored) and the same prefix, or a prefix one or two
/// typos away when no thing has the prefix as written; otherwise the one thing within a
/// small edit distance whose numbers are the same. Anything else is `NotFound` with up to
/// five close names.
pub fn resolve_thing(mention: &str, candidates: &[ThingName]) -> ThingMatch {
    let mention = mention.trim();
    if let Some(t) = candidates.iter().find(|c| c.as_str() == mention) {
        return ThingMatch::Found(t.clone());
    }
    let lower = mention.to_ascii_lowercase();
    let named: Vec<(&ThingName, String)> = candidates.iter().map(|c| (c, c.as_str().to_ascii_lowercase())).collect();
    let same_case: Vec<&ThingName> = named.iter().filter(|(_, l)| *l == lower).map(|(c, _)| *c).collect();
    if let Some(found) = only_one(&same_case) {
        return found;
    }
    if let Some((prefix, number)) = numbered(&lower) {
        return resolve_numbered(prefix, number, &lower, &named);
    }
    let digits = digit_runs(&lower);
    let close: Vec<&ThingName> = named
        .iter()
        .filter(|(_, l)| digit_runs(l) == digits)
        .filter(|(_, l)| within(&lower, l, name_tolerance(lower.len().min(l.len()))).is_some())
        .map(|(c, _)| *c)
        .collect();
    if let [one] = close.as_slice() {
        return ThingMatch::Found((*one).clone());
    }
    ThingMatch::NotFound { suggestions: closest(&lower, &named) }
}

fn resolve_numbered(prefix: &str, number: &str, lower: &str, named: &[(&ThingName, String)]) -> ThingMatch {
    let mut prefix_known = false;
    let mut same_number: Vec<(&ThingName, &str)> = Vec::new();
    for (c, l) in named {
        if let Some((p, n)) = numbered(l) {
            prefix_known |= p == prefix;
            if n == number {
                same_number.push((c, p));
            }
        }
    }
    let exact: Vec<&ThingName> = same_number.iter().filter(|(_, p)| *p == prefix).map(|(c, _)| *c).collect();
    if let Some(found) = only_one(&exact) {
        return found;
    }
    // A prefix the registry knows is taken as meant: only its number is missing, and a
    // neighbour type with that number is not what was asked for.
    if !prefix_known {
        let max = name_tolerance(prefix.len());
        let scored: Vec<(usize, &ThingName)> =
            same_number.iter().filter_map(|(c, p)| within(prefix, p, max).map(|d| (d, *c))).collect();
        if let Some(best) = scored.iter().map(|(d, _)| *d).min() {
            let nearest: Vec<&ThingName> = scored.iter().filter(|(d, _)| *d == best).map(|(_, c)| *c).collect();
            if let Some(found) = only_one(&nearest) {
                return found;
            }
        }
    }
    ThingMatch::NotFound { suggestions: closest(lower, named) }
}

/// `Found` for exactly one candidate, `NotFound` listing several, `None` for none.
fn only_one(found: &[&ThingName]) -> Option<ThingMatch> {
    match found {
        [] => None,
        [one] => Some(ThingMatch::Found((*one).clone())),
        many => Some(ThingMatch::NotFound {
            suggestions: many.iter().take(MAX_SUGGESTIONS).map(|t| t.to_string()).collect(),
        }),
    }
}

/// `pet_feeder-03` → (`pet_feeder`, `3`): the prefix and the number without leading zeros.
fn numbered(lower: &str) -> Option<(&str, &str)> {
    let (prefix, digits) = lower.rsplit_once('-')?;
    if prefix.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((prefix, digits.trim_start_matches('0')))
}

/// The numbers in a name, without leading zeros: `esp32-cam-01` → `["32", "1"]`.
fn digit_runs(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()).map(|r| r.trim_start_matches('0')).collect()
}

/// Up to five names close to `lower`, closest first.
fn closest(lower: &str, named: &[(&ThingName, String)]) -> Vec<String> {
    let max = (lower.len() / 2).max(3);
    let mut scored: Vec<(usize, &str)> =
        named.iter().filter_map(|(c, l)| within(lower, l, max).map(|d| (d, c.as_str()))).collect();
    scored.sort();
    scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, name)| name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn things(names: &[&str]) -> Vec<ThingName> {
        names.iter().map(|n| ThingName::parse(n).unwrap()).collect()
    }

    fn found(name: &str) -> ThingMatch {
        ThingMatch::Found(ThingName::parse(name).unwrap())
    }

    fn demo() -> Vec<ThingName> {
        things(&[
            "pet_feeder-01",
            "pet_feeder-02",
            "pet_feeder-03",
            "pet_feeder-04",
            "smart_plug-01",
            "kitchen-sensor-1",
        ])
    }

    #[test]
    fn exact_names_and_other_cases_resolve() {
        assert_eq!(resolve_thing("pet_feeder-03", &demo()), found("pet_feeder-03"));
        assert_eq!(resolve_thing("PET_FEEDER-03", &demo()), found("pet_feeder-03"));
        assert_eq!(resolve_thing("kitchen-sensor-1", &demo()), found("kitchen-sensor-1"));
    }

    #[test]
    fn leading_zeros_do_not_matter() {
        assert_eq!(resolve_thing("pet_feeder-3", &demo()), found("pet_feeder-03"));
        assert_eq!(resolve_thing("pet_feeder-003", &demo()), found("pet_feeder-03"));
        assert_eq!(resolve_thing("kitchen-sensor-01", &demo()), found("kitchen-sensor-1"));
    }

    #[test]
    fn a_typo_in_the_type_part_is_corrected_when_only_one_thing_fits() {
        assert_eq!(resolve_thing("pet_feedr-3", &demo()), found("pet_feeder-03"));
        assert_eq!(resolve_thing("petfeeder-02", &demo()), found("pet_feeder-02"));
        assert_eq!(resolve_thing("pet_feeder03", &demo()), found("pet_feeder-03"));
    }

    #[test]
    fn numbers_are_never_changed() {
        let ThingMatch::NotFound { suggestions } = resolve_thing("pet_feeder-7", &demo()) else {
            panic!("pet_feeder-7 does not exist and must not resolve to a neighbour");
        };
        assert_eq!(suggestions, ["pet_feeder-01", "pet_feeder-02", "pet_feeder-03", "pet_feeder-04"]);
        // One edit away, but a different device.
        assert!(matches!(resolve_thing("smart_plug-02", &demo()), ThingMatch::NotFound { .. }));
        // No thing carries the number 34, however close the rest of the name.
        let cams = things(&["esp32-cam-a", "esp33-cam-a"]);
        assert_eq!(
            resolve_thing("esp34-cam-a", &cams),
            ThingMatch::NotFound { suggestions: vec!["esp32-cam-a".into(), "esp33-cam-a".into()] }
        );
    }

    #[test]
    fn a_typo_elsewhere_resolves_when_only_one_thing_is_close() {
        let doors = things(&["garage-door-left", "garage-door-right"]);
        assert_eq!(resolve_thing("garage-dor-left", &doors), found("garage-door-left"));
        assert_eq!(resolve_thing("esp32-cam-b", &things(&["esp32-cam-a"])), found("esp32-cam-a"));
        let pair = things(&["lamp-a", "lamp-b"]);
        assert!(
            matches!(resolve_thing("lamp-c", &pair), ThingMatch::NotFound { suggestions } if suggestions.len() == 2)
        );
    }

    #[test]
    fn equally_close_things_are_never_chosen_between() {
        let twins = things(&["pet_feeder-03", "pet_feeder-003"]);
        let ThingMatch::NotFound { suggestions } = resolve_thing("pet_feeder-3", &twins) else {
            panic!("two things carry number 3");
        };
        assert_eq!(suggestions.len(), 2);
        let near = things(&["pet_feedera-1", "pet_feederb-1"]);
        assert!(
            matches!(resolve_thing("pet_feeder-1", &near), ThingMatch::NotFound { suggestions } if suggestions.len() == 2)
        );
        let cases = things(&["Lamp-1", "LAMP-1"]);
        assert!(matches!(resolve_thing("lamp-1", &cases), ThingMatch::NotFound { .. }));
    }

    #[test]
    fn a_known_prefix_is_not_corrected_into_another_type() {
        // pet_feeder-05 does not exist; pet_feedex-05 does, one letter away in the prefix.
        let mixed = things(&["pet_feeder-01", "pet_feedex-05"]);
        assert!(matches!(resolve_thing("pet_feeder-5", &mixed), ThingMatch::NotFound { .. }));
    }

    #[test]
    fn unknown_names_get_close_suggestions_or_none() {
        let ThingMatch::NotFound { suggestions } = resolve_thing("smart_plg-9", &demo()) else { panic!() };
        assert_eq!(suggestions.first().map(String::as_str), Some("smart_plug-01"));
        assert_eq!(resolve_thing("zzzzzzzzzzzzzzzzzzzz", &demo()), ThingMatch::NotFound { suggestions: vec![] });
        assert_eq!(resolve_thing("", &demo()), ThingMatch::NotFound { suggestions: vec![] });
        assert_eq!(resolve_thing("pet_feeder-03", &[]), ThingMatch::NotFound { suggestions: vec![] });
    }
}
