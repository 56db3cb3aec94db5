use super::{Intent, Vocabulary};

/// Parses a plain-language request.
pub fn parse(_text: &str, _vocab: &Vocabulary) -> Intent {
    Intent::Unknown { message: "not implemented yet".into(), suggestions: vec![] }
}
