//! Finds the device types a prompt names, the way people write them: `pet_feeder`,
//! `pet feeders`, `face detectors`, `doorbells`, `lerobot arms`, `pet_feedr`.
//!
//! A phrase names a type when its words appear, in order, among the type's words and the
//! last of them is the type's head noun (`feeder` in `pet_feeder`), or when it spells the
//! type's first words exactly (`vision ai`). A phrase that fits several types names all of
//! them only if it holds a word every one of them starts with (a family: `lerobot arms`);
//! otherwise (`sensors`) it is ambiguous, and the engine asks instead of choosing.

use crate::intent::UnknownName;
use crate::intent::fuzzy::{name_tolerance, singular, within};
use crate::names::DeviceType;

use super::lexicon;
use super::tokens::{Kind, Token};

/// The device types of one vocabulary, split into words once per prompt.
#[derive(Debug)]
pub(super) struct TypeIndex<'v> {
    pub types: &'v [DeviceType],
    words: Vec<Vec<&'v str>>,
}

/// A run of tokens that names device types, or tried to.
#[derive(Debug, Clone)]
pub(super) struct TypeHit {
    pub start: usize,
    pub end: usize,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Indexes into [`TypeIndex::types`].
    Types(Vec<usize>),
    /// Fits several types and none of them better: the engine asks.
    Ambiguous { text: String, types: Vec<usize> },
    /// An identifier (`pet_feedr_x`) close to no type.
    Unknown(UnknownName),
}

#[derive(Debug, Clone, Copy)]
struct WordMatch {
    ty: usize,
    pos: usize,
    /// The word as written is the type's word (no plural, no typo).
    literal: bool,
    /// The word or its singular is the type's word (no typo).
    exact: bool,
}

impl<'v> TypeIndex<'v> {
    pub fn new(types: &'v [DeviceType]) -> Self {
        TypeIndex { types, words: types.iter().map(|t| t.words().collect()).collect() }
    }

    pub fn name(&self, ty: usize) -> String {
        self.types.get(ty).map(ToString::to_string).unwrap_or_default()
    }

    /// Every type-naming run in `tokens`, in order and without overlaps.
    pub fn find_hits(&self, tokens: &[Token<'_>]) -> Vec<TypeHit> {
        let matches: Vec<Vec<WordMatch>> = tokens.iter().map(|t| self.word_matches(t)).collect();
        let mut hits = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            let single = match t.kind {
                Kind::Ident => Some(self.match_ident(t)),
                Kind::Thing => self.match_hyphenated(t),
                Kind::Word if matches[i].is_empty() && lexicon::role(&t.word).is_none() => {
                    self.match_joined(&t.word).map(|ty| Outcome::Types(vec![ty]))
                }
                _ => None,
            };
            if let Some(outcome) = single {
                hits.push(TypeHit { start: i, end: i + 1, outcome });
                i += 1;
                continue;
            }
            let (len, types, headed) = self.best_span(tokens, &matches, i);
            // A run that stops short of every head noun ("garage", "water") right after a
            // place word or right before another type's noun describes, and names nothing.
            let stray_prefix =
                !headed && (after_place_word(tokens, i) || matches.get(i + len).is_some_and(|m| !m.is_empty()));
            if len == 0 || stray_prefix {
                i += 1;
                continue;
            }
            let outcome = self.settle(&tokens[i..i + len], types);
            hits.push(TypeHit { start: i, end: i + len, outcome });
            i += len;
        }
        hits
    }

    /// The type words one plain word stands for. Known words (verbs, fillers) only count
    /// when spelled exactly, and typos are tried only when nothing matches exactly.
    fn word_matches(&self, token: &Token<'_>) -> Vec<WordMatch> {
        let mut out = Vec::new();
        if token.kind != Kind::Word {
            return out;
        }
        let w = token.word.as_str();
        let one = singular(w);
        for (ty, words) in self.words.iter().enumerate() {
            for (pos, tw) in words.iter().enumerate() {
                if *tw == w || *tw == one {
                    out.push(WordMatch { ty, pos, literal: *tw == w, exact: true });
                }
            }
        }
        if !out.is_empty() || lexicon::role(w).is_some() {
            return out;
        }
        for (ty, words) in self.words.iter().enumerate() {
            for (pos, tw) in words.iter().enumerate() {
                if tw.len() >= 5 && (within(w, tw, 1).is_some() || within(&one, tw, 1).is_some()) {
                    out.push(WordMatch { ty, pos, literal: false, exact: false });
                }
            }
        }
        out
    }

    /// The longest run starting at `start` that names some type, the types it names, and
    /// whether it reaches the head noun of any of them.
    fn best_span(&self, tokens: &[Token<'_>], matches: &[Vec<WordMatch>], start: usize) -> (usize, Vec<usize>, bool) {
        let mut best_len = 0;
        let mut best: Vec<usize> = Vec::new();
        let mut headed = false;
        let mut seen: Vec<usize> = Vec::new();
        for m in &matches[start] {
            if seen.contains(&m.ty) {
                continue;
            }
            seen.push(m.ty);
            let (len, head) = self.span_for(tokens, matches, start, m.ty);
            if len > best_len {
                best_len = len;
                best.clear();
                headed = false;
            }
            if len == best_len && len > 0 {
                best.push(m.ty);
                headed |= head;
            }
        }
        (best_len, best, headed)
    }

    /// How many tokens from `start` name type `ty` (up to its head noun, or its exact first
    /// words), and whether they reach the head. A run of known words alone ("monitor")
    /// names nothing: it reads as a verb.
    fn span_for(&self, tokens: &[Token<'_>], matches: &[Vec<WordMatch>], start: usize, ty: usize) -> (usize, bool) {
        let head = self.words[ty].len().saturating_sub(1);
        let mut prev: Option<usize> = None;
        let mut content = false;
        let mut head_len = 0;
        let mut prefix_len = 0;
        let mut prefix_content = false;
        let mut prefix_open = true;
        let mut j = start;
        while j < tokens.len() {
            let next = matches[j].iter().filter(|m| m.ty == ty && prev.is_none_or(|p| m.pos > p)).min_by_key(|m| m.pos);
            let Some(m) = next else { break };
            content |= lexicon::role(&tokens[j].word).is_none();
            // A lone first word must be spelled as is ("sounds good" is no `sound_level_meter`);
            // a longer prefix may end in a plural ("led strips").
            if prefix_open && m.exact && m.pos == j - start && (m.literal || j > start) {
                prefix_len = j - start + 1;
                prefix_content = content;
            } else {
                prefix_open = false;
            }
            if m.pos == head && content {
                head_len = j - start + 1;
            }
            prev = Some(m.pos);
            j += 1;
        }
        if head_len > 0 {
            (head_len, true)
        } else if prefix_content {
            (prefix_len, false)
        } else {
            (0, false)
        }
    }

    /// Picks among the types a run fits: the one it spells in full, all of them when they
    /// share the run's family word, or none (ambiguous).
    fn settle(&self, run: &[Token<'_>], types: Vec<usize>) -> Outcome {
        if types.len() == 1 {
            return Outcome::Types(types);
        }
        let spelled: Vec<usize> = types
            .iter()
            .copied()
            .filter(|&ty| {
                let words = &self.words[ty];
                words.len() == run.len() && run.iter().zip(words).all(|(t, w)| singular(&t.word) == *w || t.word == *w)
            })
            .collect();
        if spelled.len() == 1 {
            return Outcome::Types(spelled);
        }
        let family = run.iter().any(|t| types.iter().all(|&ty| self.words[ty].first() == Some(&t.word.as_str())));
        if family {
            return Outcome::Types(types);
        }
        let text = run.iter().map(|t| t.raw).collect::<Vec<_>>().join(" ");
        Outcome::Ambiguous { text, types }
    }

    /// An identifier is a type name, plural or a small typo of one with the same number of
    /// words; anything else is refused with suggestions rather than guessed.
    fn match_ident(&self, token: &Token<'_>) -> Outcome {
        if let Some(ty) = self.exact_name(&token.word) {
            return Outcome::Types(vec![ty]);
        }
        let parts = token.word.split('_').count();
        let mut best: Option<(usize, usize)> = None;
        let mut tied = false;
        for (ty, t) in self.types.iter().enumerate() {
            if self.words[ty].len() != parts {
                continue;
            }
            let Some(d) = within(&token.word, t.as_str(), name_tolerance(t.as_str().len())) else { continue };
            match best {
                Some((_, bd)) if bd < d => {}
                Some((_, bd)) if bd == d => tied = true,
                _ => {
                    best = Some((ty, d));
                    tied = false;
                }
            }
        }
        match best {
            Some((ty, _)) if !tied => Outcome::Types(vec![ty]),
            _ => Outcome::Unknown(UnknownName { text: token.raw.to_string(), suggestions: self.suggest(&token.word) }),
        }
    }

    /// `pet-feeders` names `pet_feeder`; other hyphenated words stay thing names.
    fn match_hyphenated(&self, token: &Token<'_>) -> Option<Outcome> {
        if token.word.bytes().any(|b| b.is_ascii_digit() || b == b':' || b == b'_') {
            return None;
        }
        self.exact_name(&token.word.replace('-', "_")).map(|ty| Outcome::Types(vec![ty]))
    }

    fn exact_name(&self, name: &str) -> Option<usize> {
        let one = singular(name);
        self.types.iter().position(|t| t.as_str() == name || t.as_str() == one)
    }

    /// `petfeeders` or `smartplug`: a type written as one word.
    fn match_joined(&self, word: &str) -> Option<usize> {
        if word.len() < 6 {
            return None;
        }
        let one = singular(word);
        let mut found: Option<(usize, usize)> = None;
        let mut tied = false;
        for (ty, words) in self.words.iter().enumerate() {
            let joined = words.concat();
            let max = name_tolerance(joined.len());
            let d = [word, one.as_ref()].iter().filter_map(|w| within(w, &joined, max)).min();
            let Some(d) = d else { continue };
            match found {
                Some((_, fd)) if fd < d => {}
                Some((_, fd)) if fd == d => tied = true,
                _ => {
                    found = Some((ty, d));
                    tied = false;
                }
            }
        }
        found.filter(|_| !tied).map(|(ty, _)| ty)
    }

    /// Up to five types close to `text`: by whole name, then by any of its words.
    pub fn suggest(&self, text: &str) -> Vec<String> {
        let text = text.to_ascii_lowercase();
        let parts: Vec<&str> = text.split(['_', '-', ' ']).filter(|p| p.len() >= 3).collect();
        let whole_max = (text.len() / 3).max(2);
        let mut scored: Vec<(usize, &str)> = Vec::new();
        for (ty, t) in self.types.iter().enumerate() {
            let mut score = within(&text, t.as_str(), whole_max);
            for p in &parts {
                let one = singular(p);
                for tw in &self.words[ty] {
                    let max = match tw.len() {
                        0..5 => 0,
                        5..8 => 1,
                        _ => 2,
                    };
                    let d = within(&one, tw, max).or_else(|| within(p, tw, max)).map(|d| d + 1);
                    score = match (score, d) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            if let Some(s) = score {
                scored.push((s, t.as_str()));
            }
        }
        scored.sort();
        scored.into_iter().take(5).map(|(_, t)| t.to_string()).collect()
    }
}

/// "in the garage", "near the water": a place, not the `garage_door_controller` type. A
/// run that spells whole type names or head nouns is not affected.
fn after_place_word(tokens: &[Token<'_>], start: usize) -> bool {
    tokens[..start].iter().rev().find(|t| !matches!(t.word.as_str(), "the" | "a" | "an" | "my" | "our")).is_some_and(
        |t| matches!(t.word.as_str(), "in" | "at" | "near" | "inside" | "outside" | "by" | "behind" | "under"),
    )
}
