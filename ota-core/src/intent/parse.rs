//! Plain words to an [`Intent`], by rules: no model, no state, the same answer every time.
//!
//! The prompt is split into words ([`tokens`]), device types are found in it ([`types`]),
//! one pass reads verbs, targets and exclusions ([`reading`]), versions get their part from
//! the words before them ([`versions`]), and [`parse`] puts it together. Requests that
//! change the fleet (update, roll back, cancel, enable or disable OTA) are held to a
//! stricter standard than questions: an unknown word, a stray number or an ambiguous name
//! makes the answer [`Intent::Unknown`], because acting on a half-understood request could
//! reach devices the operator did not mean.

mod changes;
mod devices;
mod lexicon;
mod numbers;
mod reading;
mod tokens;
mod types;
mod versions;

#[cfg(test)]
mod tests;

use super::{Intent, RolloutRef, UpdateIntent, Vocabulary};
use crate::names::DeviceType;
use reading::Reading;
use types::TypeIndex;
use versions::Versions;

/// Longest prompt read, in characters: a request is a sentence or two, and the cap keeps
/// the cost of one parse bounded whatever is pasted in.
const MAX_PROMPT_CHARS: usize = 2_000;

const ASK_VERSION: &str = "Which version? Say \"to latest\" or a version such as 2.0.0.";
const ASK_TARGETS: &str =
    "Which devices? Name a device type (pet_feeder), a device (pet_feeder-03) or say \"the whole fleet\".";
const HELP: &str = "I can update or roll back firmware, list firmware, show fleet and rollout status, cancel a rollout, and enable or disable OTA per device type. For example: \"update pet_feeder to 2.0.0\", \"roll back pet_feeder-03 to 1.0.0\", \"which pet_feeder devices are still on 1.x?\", \"how is the rollout going?\". I also manage devices: \"Is pet_feeder-03 online?\", \"Which devices are offline?\", \"Reboot pet_feeder-03\", \"Set sample_rate_seconds to 10 on weather_station-02\", \"Show the last 24 hours of CO2 for co2_monitor-01\".";

/// Parses a plain-language request.
pub fn parse(text: &str, vocab: &Vocabulary) -> Intent {
    if text.len() > MAX_PROMPT_CHARS && text.chars().count() > MAX_PROMPT_CHARS {
        return unknown(
            format!(
                "That request is too long: at most {MAX_PROMPT_CHARS} characters are read. Ask for one thing in a sentence or two."
            ),
            Vec::new(),
        );
    }
    // Device management (status, commands, telemetry) answers only on its own cues and
    // never for words about rollouts or firmware, so those read exactly as before.
    if let Some(intent) = devices::parse(text, vocab) {
        return intent;
    }
    let whole = parse_request(text, vocab);
    // Read whole first, so every request of one change keeps its meaning; only words that
    // fail as one change are tried as several ("… to 2.0.0 and fish_tank_monitor to 1.0.0").
    match whole.intent {
        Intent::Unknown { .. } => changes::several(text, vocab, whole),
        intent => intent,
    }
}

/// One sentence read as one request, and what the reading saw besides.
#[derive(Debug, Clone)]
struct Sentence {
    intent: Intent,
    /// A change verb (update, roll back, cancel, enable, ...) is in the words.
    verb: bool,
    /// The words ask for several changes or several versions to install, which one
    /// request of one change cannot hold.
    several: bool,
}

/// One change, with an optional "… and roll back the updated ones if it aborts".
fn parse_request(text: &str, vocab: &Vocabulary) -> Sentence {
    // "… and roll back the updated ones if it aborts" is an option of the change before it,
    // not a second action; anything else is read whole, as written.
    if let (head, true) = split_revert_clause(text) {
        let mut s = parse_sentence(head, vocab);
        if let Intent::Update(u) = &mut s.intent {
            u.revert_on_abort = true;
            return s;
        }
    }
    parse_sentence(text, vocab)
}

fn parse_sentence(text: &str, vocab: &Vocabulary) -> Sentence {
    let (tokens, question_mark) = tokens::tokenize(text);
    if tokens.is_empty() {
        let intent = unknown(format!("Say what should happen. {HELP}"), Vec::new());
        return Sentence { intent, verb: false, several: false };
    }
    let index = TypeIndex::new(&vocab.device_types);
    let hits = index.find_hits(&tokens);
    let numbers = numbers::find(&tokens, &hits, &index);
    let mut skip = vec![false; tokens.len()];
    for n in &numbers {
        skip[n.tokens.clone()].iter_mut().for_each(|s| *s = true);
    }
    let reading = reading::read(&tokens, &hits, &numbers, &index, question_mark);
    let versions = versions::find(&tokens, &skip);
    let a = reading.acts;
    let updates = a.update || a.rollout_verb;
    let kinds = [a.rollback || (updates && a.back), updates && !a.back, a.cancel, a.enable, a.disable];
    let changes = kinds.iter().filter(|k| **k).count();
    let targets = versions.target_count();
    let several = changes > 1 || targets > 1 || (targets == 1 && versions.latest);
    let intent = Decision { r: &reading, v: &versions, index: &index }.decide();
    Sentence { intent, verb: changes > 0 || a.pause, several }
}

/// Splits off a trailing clause asking for a revert on abort ("… and roll back the updated
/// ones if it aborts", "…, revert on abort", "… with automatic rollback if it fails"), which
/// would otherwise read as a second action. Returns the rest and whether the clause was there.
fn split_revert_clause(text: &str) -> (&str, bool) {
    const STARTS: [&str; 6] = [", and ", " and ", ", ", "; ", " with ", " but "];
    const REVERT: [&str; 6] = ["roll back", "rollback", "roll them back", "roll it back", "revert", "undo"];
    const ABORT: [&str; 6] = ["abort", "fails", "fail ", "failure", "goes wrong", "stops"];
    let lower = text.to_ascii_lowercase();
    let mut cut: Option<usize> = None;
    for start in STARTS {
        let mut from = 0;
        while let Some(i) = lower[from..].find(start).map(|i| i + from) {
            let tail = &lower[i..];
            let tail_end = format!("{tail} ");
            // A clause followed by another change ("…; also update energy_meter to 2.0.0")
            // is not cut here: `changes::several` gives it to the changes before it.
            if i > 0
                && REVERT.iter().any(|w| tail.contains(w))
                && ABORT.iter().any(|w| tail_end.contains(w))
                && !changes::more_follows(&tail[start.len()..])
            {
                // The last such connective: "… to 3.0.0 and smart_plug to 2.0.0 and roll back
                // the updated ones if it aborts" keeps every change before the clause.
                cut = Some(cut.map_or(i, |c| c.max(i)));
            }
            from = i + start.len();
        }
    }
    match cut {
        Some(i) => (text[..i].trim_end(), true),
        None => (text, false),
    }
}

/// Words asking for reasons or advice, which a listing does not answer.
const ADVICE_WORDS: [&str; 11] = [
    "why",
    "should",
    "recommend",
    "recommendation",
    "recommendations",
    "advice",
    "advise",
    "suggest",
    "suggestion",
    "suggestions",
    "explain",
];

/// Whether `text`, which [`parse`] read as `intent`, is a question the engine can answer only
/// with a listing, where a language model could do better: a question asking for reasons or
/// advice ("why did it fail?", "which feeders should I upgrade?"), or one that names nothing
/// the engine can act on (no device type, device, version or rollout, and no words about
/// status, progress, firmware, devices or the fleet: "what do you recommend?", "any advice?").
/// Requests to change something never are.
pub fn is_open_question(text: &str, intent: &Intent, vocab: &Vocabulary) -> bool {
    let read_only = matches!(
        intent,
        Intent::FleetStatus { .. }
            | Intent::RolloutStatus { .. }
            | Intent::ListFirmware { .. }
            | Intent::DeviceStatus { .. }
            | Intent::Telemetry { .. }
    );
    if !read_only {
        return false;
    }
    let (tokens, question_mark) = tokens::tokenize(text);
    if tokens.iter().any(|t| ADVICE_WORDS.contains(&t.word.as_str())) {
        return true;
    }
    let generic = matches!(
        intent,
        Intent::FleetStatus { device_types, thing_mentions, current_version: None, not_latest: false }
            if device_types.is_empty() && thing_mentions.is_empty()
    );
    if !generic {
        return false;
    }
    let index = TypeIndex::new(&vocab.device_types);
    let hits = index.find_hits(&tokens);
    let numbers = numbers::find(&tokens, &hits, &index);
    let r = reading::read(&tokens, &hits, &numbers, &index, question_mark);
    !(r.read_verb
        || r.status
        || r.progress
        || r.rollout_noun
        || r.firmware
        || r.device_state
        || r.fleet
        || r.device_noun
        || !r.rollout_ids.is_empty())
}

/// The one change a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Update { rollback: bool },
    Cancel,
    SetOta { enabled: bool },
}

struct Decision<'a> {
    r: &'a Reading,
    v: &'a Versions,
    index: &'a TypeIndex<'a>,
}

impl Decision<'_> {
    fn decide(&self) -> Intent {
        let r = self.r;
        if r.acts.pause && !r.question {
            return unknown("Pausing a rollout is not supported; say \"cancel the rollout\" to stop it.", Vec::new());
        }
        let change = match self.change() {
            Ok(c) => c,
            Err(message) => return unknown(message, Vec::new()),
        };
        if let Some((text, types)) = r.ambiguous.first() {
            let names = self.names(types);
            return unknown(
                format!("\"{text}\" could mean {}. Name the type or types you mean.", join_or(&names)),
                names,
            );
        }
        match change {
            Some(Change::Update { rollback }) => self.update(rollback),
            Some(Change::Cancel) => self.cancel(),
            Some(Change::SetOta { enabled }) => self.set_ota(enabled),
            None => self.read_only(),
        }
    }

    /// The change asked for, if any: questions change nothing, and two changes in one
    /// request are refused rather than half done.
    fn change(&self) -> Result<Option<Change>, String> {
        let r = self.r;
        if r.question {
            return Ok(None);
        }
        if r.negated {
            return Err("I act on what should happen, not on what should not: leave out the \"don't\", or say \"cancel the rollout\" to stop one.".into());
        }
        let a = r.acts;
        let updates = a.update || a.rollout_verb;
        let mut changes = Vec::new();
        if a.rollback || (updates && a.back) {
            changes.push(Change::Update { rollback: true });
        }
        if updates && !a.back {
            changes.push(Change::Update { rollback: false });
        }
        if a.cancel {
            changes.push(Change::Cancel);
        }
        if a.enable {
            changes.push(Change::SetOta { enabled: true });
        }
        if a.disable {
            changes.push(Change::SetOta { enabled: false });
        }
        if changes.len() > 1 {
            return Err("That asks for several changes, and I could not tell which devices and version each one is for. Give each change its own target and version, e.g. \"update pet_feeder to 3.0.0 and roll back smart_plug to 1.0.0\", or send them one by one.".into());
        }
        Ok(changes.pop())
    }

    /// Why a change cannot go ahead on what was understood, if it cannot.
    fn refuse_change(&self) -> Option<Intent> {
        let r = self.r;
        if !r.unknown_words.is_empty() {
            let words: Vec<String> = r.unknown_words.iter().map(|w| format!("\"{w}\"")).collect();
            let hint = if r.suggestions.is_empty() {
                String::new()
            } else {
                format!(" Did you mean {}?", join_or(&r.suggestions))
            };
            return Some(unknown(
                format!("I did not understand {}, so I will not act on it.{hint}", join_and(&words)),
                r.suggestions.clone(),
            ));
        }
        if let Some(n) = self.v.stray.first() {
            return Some(unknown(
                format!(
                    "What does \"{n}\" stand for? Write a version as \"to 2.0.0\" or \"version 2\", and a device by its name, such as pet_feeder-03."
                ),
                Vec::new(),
            ));
        }
        if r.excluded_version {
            return Some(unknown(
                "I can't leave devices out by version. Say which devices to include instead: \"only those on 1.x\" or \"older than 2.0.0\".",
                Vec::new(),
            ));
        }
        if let Some(name) = r.exclude.unknown_names.first() {
            let hint = if name.suggestions.is_empty() {
                String::new()
            } else {
                format!(" Did you mean {}?", join_or(&name.suggestions))
            };
            return Some(unknown(
                format!("I don't know \"{}\", so I can't leave it out.{hint}", name.text),
                name.suggestions.clone(),
            ));
        }
        None
    }

    fn update(&self, rollback: bool) -> Intent {
        if let Some(refusal) = self.refuse_change() {
            return refusal;
        }
        let r = self.r;
        if let Some(id) = r.rollout_ids.first() {
            return unknown(format!("\"{id}\" is a rollout; name devices or device types to update."), Vec::new());
        }
        let chosen = match self.v.for_update() {
            Ok(c) => c,
            Err(message) => return unknown(message, Vec::new()),
        };
        let named = !r.include.is_empty();
        let whole_fleet = !named
            && (r.fleet
                || (r.quantifier && !r.pronoun)
                || (r.device_noun && (chosen.filter.is_some() || self.v.not_latest)));
        if !named && !whole_fleet {
            let message = if r.pronoun {
                format!("{ASK_TARGETS} I can't see earlier messages, so \"them\" or \"it\" does not tell me.")
            } else {
                ASK_TARGETS.to_string()
            };
            return unknown(message, Vec::new());
        }
        if chosen.target.is_none()
            && !self.v.latest
            && let Some((mention, number)) = r.bare_device_numbers.first()
        {
            return unknown(
                format!(
                    "Does \"{number}\" name the device {mention} or version {number}? Say \"{mention} to 2.0.0\" for the device, or \"to version {number}\" for the version."
                ),
                vec![mention.clone()],
            );
        }
        let Some(version) = chosen.target else {
            return unknown(ASK_VERSION, Vec::new());
        };
        Intent::Update(UpdateIntent {
            rollback,
            version: Some(version),
            whole_fleet,
            device_types: self.types(&r.include.types),
            thing_mentions: dedup(&r.include.things),
            current_version: chosen.filter,
            exclude_types: self.types(&r.exclude.types),
            exclude_thing_mentions: dedup(&r.exclude.things),
            only_connected: r.online,
            revert_on_abort: false,
            unknown_names: r.include.unknown_names.clone(),
        })
    }

    fn cancel(&self) -> Intent {
        if let Some(refusal) = self.refuse_change() {
            return refusal;
        }
        let r = self.r;
        if let Some(refusal) = self.unknown_name() {
            return refusal;
        }
        if !r.include.things.is_empty() {
            return unknown(
                "Cancelling works on a rollout, not on one device: name the rollout's device type or id, or say \"stop the rollout\".",
                Vec::new(),
            );
        }
        let types = self.types(&r.include.types);
        match (r.rollout_ids.as_slice(), types.as_slice()) {
            ([id], []) => Intent::Cancel { rollout: RolloutRef::Id(id.clone()) },
            ([], [t]) => Intent::Cancel { rollout: RolloutRef::DeviceType(t.clone()) },
            ([], []) if !(r.fleet || r.quantifier || r.rollout_plural) => {
                Intent::Cancel { rollout: RolloutRef::Current }
            }
            // "stop all rollouts", "cancel everything": every active one, confirmed once. A
            // list of exceptions is not read here; the rollouts to keep would be guessed.
            ([], []) if r.all_rollouts && !r.pronoun && r.exclude.is_empty() => {
                Intent::Cancel { rollout: RolloutRef::AllActive }
            }
            _ => {
                let names: Vec<String> = types.iter().map(ToString::to_string).collect();
                unknown(
                    "I cancel one rollout at a time: name its device type or id, or say \"stop the rollout\" when only one is running.",
                    names,
                )
            }
        }
    }

    fn set_ota(&self, enabled: bool) -> Intent {
        if let Some(refusal) = self.refuse_change() {
            return refusal;
        }
        let r = self.r;
        let verb = if enabled { "enable" } else { "disable" };
        if !(r.ota || r.update_noun || r.rollout_noun) {
            return unknown(format!("{} what? Say \"{verb} OTA for pet_feeder\".", capitalised(verb)), Vec::new());
        }
        if let Some(refusal) = self.unknown_name() {
            return refusal;
        }
        if !r.include.things.is_empty() || !r.exclude.things.is_empty() {
            return unknown(
                "OTA is switched per device type, not per device: name the type, such as pet_feeder.",
                Vec::new(),
            );
        }
        if !self.v.is_empty() || !r.rollout_ids.is_empty() {
            return unknown("OTA is switched per device type for every version: leave the version out.", Vec::new());
        }
        let device_types = if !r.include.types.is_empty() {
            self.types_except(&r.include.types)
        } else if r.fleet || r.quantifier {
            self.types_except(&(0..self.index.types.len()).collect::<Vec<_>>())
        } else {
            return unknown(format!("For which device types? Say \"{verb} OTA for pet_feeder\"."), Vec::new());
        };
        Intent::SetOta { enabled, device_types }
    }

    /// Questions: rollout status, firmware listing or fleet status.
    fn read_only(&self) -> Intent {
        let r = self.r;
        let cue = r.question || r.asks || r.read || r.status || r.progress || r.rollout_noun || r.firmware;
        if !(cue || r.device_state || !r.rollout_ids.is_empty()) {
            let hint = if r.suggestions.is_empty() {
                String::new()
            } else {
                format!(" Did you mean {}?", join_or(&r.suggestions))
            };
            return unknown(format!("I did not understand that.{hint} {HELP}"), r.suggestions.clone());
        }
        if !r.suggestions.is_empty() {
            let words: Vec<String> = r.unknown_words.iter().map(|w| format!("\"{w}\"")).collect();
            return unknown(
                format!("I don't know {}. Did you mean {}?", join_and(&words), join_or(&r.suggestions)),
                r.suggestions.clone(),
            );
        }
        if let Some(refusal) = self.unknown_name() {
            return refusal;
        }
        if !r.exclude.things.is_empty() || !r.exclude.unknown_names.is_empty() {
            return unknown("Status can leave out device types, not single devices.", Vec::new());
        }
        let types = if r.include.types.is_empty() && !r.exclude.types.is_empty() {
            self.types_except(&(0..self.index.types.len()).collect::<Vec<_>>())
        } else {
            self.types_except(&r.include.types)
        };
        let things = dedup(&r.include.things);
        let about_rollout = !r.rollout_ids.is_empty() || r.rollout_noun || r.progress || (r.update_noun && r.status);
        if about_rollout && (things.is_empty() || !r.rollout_ids.is_empty()) {
            let rollout = match (r.rollout_ids.as_slice(), types.as_slice()) {
                ([id], _) => Some(RolloutRef::Id(id.clone())),
                ([], [t]) => Some(RolloutRef::DeviceType(t.clone())),
                ([], []) if !(r.rollout_plural || r.quantifier || r.fleet) => Some(RolloutRef::Current),
                _ => None,
            };
            return Intent::RolloutStatus { rollout };
        }
        let current_version = match self.v.for_read() {
            Ok(f) => f,
            Err(message) => return unknown(message, Vec::new()),
        };
        if r.firmware && things.is_empty() && !r.device_state && !self.v.selects_devices() {
            return Intent::ListFirmware { device_types: types };
        }
        let not_latest = self.v.not_latest || r.outdated;
        if not_latest && current_version.is_some() {
            return unknown(
                "Ask about one condition at a time: \"not on the latest\" or a version they run, not both.",
                Vec::new(),
            );
        }
        Intent::FleetStatus { device_types: types, thing_mentions: things, current_version, not_latest }
    }

    /// An identifier that names no type, outside an update (where it is reported instead).
    fn unknown_name(&self) -> Option<Intent> {
        let name = self.r.include.unknown_names.first()?;
        let hint = if name.suggestions.is_empty() {
            String::new()
        } else {
            format!(" Did you mean {}?", join_or(&name.suggestions))
        };
        Some(unknown(format!("I don't know the device type \"{}\".{hint}", name.text), name.suggestions.clone()))
    }

    fn names(&self, types: &[usize]) -> Vec<String> {
        types.iter().map(|&t| self.index.name(t)).collect()
    }

    /// Types by index, in prompt order, each once.
    fn types(&self, types: &[usize]) -> Vec<DeviceType> {
        let mut out: Vec<DeviceType> = Vec::new();
        for t in types.iter().filter_map(|&t| self.index.types.get(t)) {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// Types by index less the excluded ones.
    fn types_except(&self, types: &[usize]) -> Vec<DeviceType> {
        let excluded = self.types(&self.r.exclude.types);
        self.types(types).into_iter().filter(|t| !excluded.contains(t)).collect()
    }
}

fn unknown(message: impl Into<String>, suggestions: Vec<String>) -> Intent {
    Intent::Unknown { message: message.into(), suggestions }
}

fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

fn join_with(items: &[String], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

fn join_or(items: &[String]) -> String {
    join_with(items, "or")
}

fn join_and(items: &[String]) -> String {
    join_with(items, "and")
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}
