use crate::names::ThingName;

/// Result of matching a written thing name against the registry's things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingMatch {
    Found(ThingName),
    NotFound { suggestions: Vec<String> },
}

/// Resolves a mention such as `pet_feeder-3` against candidate thing names.
pub fn resolve_thing(mention: &str, candidates: &[ThingName]) -> ThingMatch {
    match candidates.iter().find(|c| c.as_str() == mention) {
        Some(t) => ThingMatch::Found(t.clone()),
        None => ThingMatch::NotFound { suggestions: vec![] },
    }
}
