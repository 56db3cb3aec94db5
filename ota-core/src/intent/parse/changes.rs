//! Several changes in one request: "update energy_meter to 2.0.0 and fish_tank_monitor to
//! 1.0.0", "update pet_feeder to 3.0.0; also roll back beehive_scale to 1.0.0".
//!
//! Tried only when the words fail as one change because they ask for several (two actions,
//! or two versions to install), so every request of one change keeps its reading: "update
//! pet_feeder and energy_meter to 2.0.0" is one change for two types, "from 1.0.0 to 2.0.0"
//! a filter and a target. The prompt is cut at connectives into pieces: hard ones end a
//! sentence (";", ". ", "also", "then"), soft ones join within it ("and", ",", "plus"). Each
//! change is the shortest run of pieces, joined by soft connectives, that reads as one update
//! or rollback naming its own target and its own version. A piece without a verb takes the
//! action of the change before it ("… and fish_tank_monitor to 1.0.0" is another update,
//! "roll back X to 1.0.0 and Y to 1.1.0" two rollbacks); one with a verb keeps its own. A
//! revert clause ("and roll back the updated ones if it aborts") applies to the changes of the
//! sentence it closes.
//!
//! Nothing is guessed: a piece that is no complete change (no target, no version, a cancel or
//! a question), a name the vocabulary lacks, or a device type or device named by two changes
//! makes the whole request [`Intent::Unknown`], with the close matches of the piece.

use std::ops::Range;

use super::{Intent, Sentence, Vocabulary, join_or, parse_request, split_revert_clause, unknown};
use crate::intent::UpdateIntent;

/// How a piece is joined to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Joint {
    /// "and", ",", "plus": the same sentence.
    Soft,
    /// ";", ". ", "also", "then": a new sentence.
    Hard,
}

/// Connectives, matched lower-case; the longest one at a position wins.
const SEPARATORS: [(&str, Joint); 18] = [
    (", and then ", Joint::Hard),
    (" and then ", Joint::Hard),
    (", and also ", Joint::Hard),
    (" and also ", Joint::Hard),
    (", also ", Joint::Hard),
    (" also ", Joint::Hard),
    (", then ", Joint::Hard),
    (" then ", Joint::Hard),
    ("; ", Joint::Hard),
    (";", Joint::Hard),
    (". ", Joint::Hard),
    (", as well as ", Joint::Soft),
    (" as well as ", Joint::Soft),
    (", plus ", Joint::Soft),
    (" plus ", Joint::Soft),
    (", and ", Joint::Soft),
    (" and ", Joint::Soft),
    (", ", Joint::Soft),
];

/// Leading words of a piece that only join it to the one before.
const LEADING: [&str; 5] = ["and ", "also ", "then ", "plus ", "as well "];

#[derive(Debug, Clone)]
struct Piece {
    range: Range<usize>,
    /// `None` for the first piece.
    joint: Option<Joint>,
}

/// One change found, with its words and the sentence it is in.
#[derive(Debug)]
struct Found {
    intent: UpdateIntent,
    words: String,
    sentence: usize,
}

/// `text`, which read as one change failed as `whole`, read as several changes; `whole`'s
/// answer when it does not ask for several, or when it is one change after all.
pub(super) fn several(text: &str, vocab: &Vocabulary, whole: Sentence) -> Intent {
    let pieces = pieces(text);
    if !whole.several || pieces.len() < 2 {
        return whole.intent;
    }
    let mut found: Vec<Found> = Vec::new();
    let mut sentence = 0;
    let mut i = 0;
    while i < pieces.len() {
        if pieces[i].joint == Some(Joint::Hard) {
            sentence += 1;
        }
        let previous = found.last().map(|f| f.intent.rollback);
        let mut j = i;
        // What the first piece alone lacked, which is what to tell when no run of pieces from
        // it reads as a change.
        let mut first_failure: Option<(&str, Box<Sentence>)> = None;
        loop {
            let words = strip_leading(&text[pieces[i].range.start..pieces[j].range.end]);
            let read = read_change(words, vocab, previous);
            if let (Err(failed), None) = (&read, &first_failure) {
                first_failure = Some((words, failed.clone()));
            }
            match read {
                Ok(intent) => {
                    found.push(Found { intent, words: words.to_string(), sentence });
                    break;
                }
                Err(_) if j == i && is_revert_clause(words) && !found.is_empty() => {
                    // It closes the sentence of the change before it, which may be the one
                    // that ended before this clause's own connective ("…. Roll back if it fails").
                    let of = found.last().map_or(sentence, |f| f.sentence);
                    found.iter_mut().filter(|f| f.sentence == of).for_each(|f| f.intent.revert_on_abort = true);
                    break;
                }
                Err(_) if j + 1 < pieces.len() && pieces[j + 1].joint == Some(Joint::Soft) => j += 1,
                Err(failed) => {
                    let (words, failed) = first_failure.unwrap_or((words, failed));
                    return refuse(words, failed);
                }
            }
        }
        i = j + 1;
    }
    if found.len() < 2 {
        return whole.intent;
    }
    if let Some(refusal) = unknown_name(&found).or_else(|| named_twice(&found)) {
        return refusal;
    }
    Intent::Updates { changes: found.into_iter().map(|f| f.intent).collect() }
}

/// Whether `rest`, the words after a connective, go on past a sentence end with more words:
/// a revert clause there is not the end of the request.
pub(super) fn more_follows(rest: &str) -> bool {
    pieces(rest).iter().any(|p| p.joint == Some(Joint::Hard))
}

/// The pieces of `text` between connectives, blank ones left out (their joints merge into
/// the next, a hard one winning).
fn pieces(text: &str) -> Vec<Piece> {
    let lower = text.to_ascii_lowercase();
    let mut out: Vec<Piece> = Vec::new();
    let mut start = 0;
    let mut pending: Option<Joint> = None;
    let push = |range: Range<usize>, pending: &mut Option<Joint>, out: &mut Vec<Piece>| {
        if !text[range.clone()].trim().is_empty() {
            out.push(Piece { range, joint: if out.is_empty() { None } else { pending.take() } });
        }
    };
    let mut i = 0;
    while i < lower.len() {
        if !lower.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &lower[i..];
        let sep = SEPARATORS.iter().filter(|(s, _)| rest.starts_with(s)).max_by_key(|(s, _)| s.len());
        match sep {
            Some((s, joint)) => {
                push(start..i, &mut pending, &mut out);
                pending = Some(pending.map_or(*joint, |p| p.max(*joint)));
                i += s.len();
                start = i;
            }
            None => i += 1,
        }
    }
    push(start..text.len(), &mut pending, &mut out);
    out
}

fn strip_leading(words: &str) -> &str {
    let mut w = words.trim();
    while let Some(rest) = LEADING.iter().find_map(|l| {
        let head = w.get(..l.len())?;
        head.eq_ignore_ascii_case(l).then(|| &w[l.len()..])
    }) {
        w = rest.trim_start();
    }
    w
}

/// `words` as one complete change (an update or rollback with its own target and version).
/// Words without a verb take the action of the change before them, if any.
fn read_change(words: &str, vocab: &Vocabulary, previous: Option<bool>) -> Result<UpdateIntent, Box<Sentence>> {
    let own = parse_request(words, vocab);
    if let Some(u) = complete(&own.intent) {
        return Ok(u);
    }
    let Some(rollback) = previous.filter(|_| !own.verb) else { return Err(Box::new(own)) };
    let verb = if rollback { "roll back" } else { "update" };
    let inherited = parse_request(&format!("{verb} {words}"), vocab);
    complete(&inherited.intent).ok_or_else(|| Box::new(inherited))
}

/// The update of `intent` when it names a target of its own (a version it always has).
fn complete(intent: &Intent) -> Option<UpdateIntent> {
    match intent {
        Intent::Update(u)
            if u.whole_fleet
                || !u.device_types.is_empty()
                || !u.thing_mentions.is_empty()
                || !u.unknown_names.is_empty() =>
        {
            Some(u.clone())
        }
        _ => None,
    }
}

/// "and roll back the updated ones if it aborts", alone in its piece.
fn is_revert_clause(words: &str) -> bool {
    let probe = format!("x, {words}");
    matches!(split_revert_clause(&probe), ("x", true))
}

fn refuse(words: &str, failed: Box<Sentence>) -> Intent {
    match failed.intent {
        Intent::Unknown { message, suggestions } => unknown(
            format!(
                "That reads as several changes, and I could not plan \"{words}\" as one: {message} Nothing was planned."
            ),
            suggestions,
        ),
        _ => unknown(
            format!(
                "That reads as several changes, but \"{words}\" is not an update or rollback with its own devices and version. I plan several updates and rollbacks together; ask for anything else on its own."
            ),
            Vec::new(),
        ),
    }
}

/// A name of some change that matched no type: nothing is planned, never the rest alone.
fn unknown_name(found: &[Found]) -> Option<Intent> {
    let (f, name) = found.iter().find_map(|f| f.intent.unknown_names.first().map(|n| (f, n)))?;
    let hint = if name.suggestions.is_empty() {
        String::new()
    } else {
        format!(" Did you mean {}?", join_or(&name.suggestions))
    };
    Some(unknown(
        format!("I don't know \"{}\" (in \"{}\"), so I will not plan any of these changes.{hint}", name.text, f.words),
        name.suggestions.clone(),
    ))
}

/// A device type, device or the whole fleet named by two changes: two changes for the same
/// devices conflict, and a type gets one rollout at a time.
fn named_twice(found: &[Found]) -> Option<Intent> {
    let names = |f: &Found| -> Vec<String> {
        let mut n: Vec<String> = f.intent.device_types.iter().map(ToString::to_string).collect();
        n.extend(f.intent.thing_mentions.iter().map(|t| t.to_ascii_lowercase()));
        if f.intent.whole_fleet {
            n.push("the whole fleet".to_string());
        }
        n
    };
    for (a, first) in found.iter().enumerate() {
        for second in &found[a + 1..] {
            let theirs = names(second);
            if let Some(name) = names(first).into_iter().find(|n| theirs.contains(n)) {
                return Some(unknown(
                    format!(
                        "{name} is named by two of these changes (\"{}\" and \"{}\"). They would conflict, and a device type gets one rollout at a time: name it in one change only. Nothing was planned.",
                        first.words, second.words
                    ),
                    Vec::new(),
                ));
            }
        }
    }
    None
}
