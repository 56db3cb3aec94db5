//! Device management in plain words: questions about devices' connectivity, health, state
//! and place ("Is pet_feeder-03 online?", "Which devices are offline?", "Show devices with
//! warnings", "List the devices on factory-floor-1"), commands ("Reboot pet_feeder-03",
//! "Recalibrate all air quality monitors on line 3", "Set sample_rate_seconds to 10 on
//! weather_station-02", "Put smart_plug-04 into maintenance") and telemetry history ("Show
//! the last 24 hours of CO2 for co2_monitor-01").
//!
//! This reading runs before the rollout reading and answers only when the words carry a
//! device-management cue: a command verb (reboot, recalibrate, identify, ...), a setting or a
//! state after "set"/"put", a connectivity, health or state word, a place after "on", "at"
//! or "in", or a telemetry window or noun. Anything about rollouts or firmware (a version, a
//! rollout id or noun, an update, rollback or cancel verb, firmware or OTA words) is left to
//! the rollout reading untouched, so every request it understood before reads as it did.
//!
//! Places are read by their shape, since the engine has no list of them: a word with a `/`
//! (`factory-floor-1/line-7`), a hyphenated name without `_` or `:` after a place word
//! (`on factory-floor-1`; `pet_feeder-03` stays a device), or place nouns with their numbers
//! (`line 7`, `factory floor 1`, `the lab`). The service matches them against the devices'
//! `location` attribute and says so when none is there.
//!
//! Commands are held to the same standard as rollouts: an unknown word or a stray number
//! makes the answer [`Intent::Unknown`], never a guess at which devices are meant.

use super::lexicon::{self, Role};
use super::numbers::{self, DeviceNumber};
use super::tokens::{self, Kind, Token};
use super::types::{Outcome, TypeHit, TypeIndex};
use super::{join_and, join_or, unknown};
use crate::device::{HealthStatus, OperationalState};
use crate::intent::fuzzy::singular;
use crate::intent::{CommandIntent, DeviceSelection, Intent, SettingWords, Vocabulary};

/// The telemetry window when a request names none: a day, in minutes.
pub(super) const DEFAULT_MINUTES: u32 = 24 * 60;

/// The longest window read: a month, in minutes (the history itself keeps 7 days by default).
const MAX_MINUTES: u32 = 31 * 24 * 60;

const ASK_DEVICES: &str =
    "Which devices? Name a device (pet_feeder-03), a type (the smart plugs), or a place (the devices on line 7).";

/// The device-management request in `text`, if it is one (see the module docs).
pub(super) fn parse(text: &str, vocab: &Vocabulary) -> Option<Intent> {
    let (tokens, _) = tokens::tokenize(text);
    if tokens.is_empty() {
        return None;
    }
    let index = TypeIndex::new(&vocab.device_types);
    let hits = index.find_hits(&tokens);
    let numbers = numbers::find(&tokens, &hits, &index);
    let mut r = Reader::new(&tokens, &hits, &numbers, &index);
    let head = r.head();
    let verb = head.and_then(|h| command_verb(&tokens[h]).map(|c| (h, c)));
    // A setting's value may look like a version ("to 1.5"): read settings before the guard.
    if let Some(h) = head
        && matches!(tokens[h].word.as_str(), "set" | "change" | "configure" | "adjust")
    {
        r.claimed[h] = true;
        if let Some(intent) = r.state_change(h) {
            return Some(intent);
        }
        if let Some(intent) = r.settings(h) {
            return Some(intent);
        }
        r.claimed.iter_mut().for_each(|c| *c = false);
    }
    if r.about_rollouts() {
        return None;
    }
    if let Some((h, verb)) = verb {
        r.claimed[h] = true;
        return Some(match verb {
            Verb::Command(command) => r.command(command, h),
            Verb::State(state) => r.state_verb(state, h),
            Verb::Place => r.state_change(h)?,
        });
    }
    r.read()
}

/// What a request's first verb asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// `reboot`, `identify`, `recalibrate`.
    Command(&'static str),
    /// "retire X", "decommission X".
    State(OperationalState),
    /// "put", "mark", "move", "place", "take", "bring": a state must follow.
    Place,
}

fn command_verb(t: &Token<'_>) -> Option<Verb> {
    if t.kind != Kind::Word && t.kind != Kind::Thing {
        return None;
    }
    Some(match t.word.as_str() {
        "reboot" | "restart" | "power-cycle" | "powercycle" => Verb::Command("reboot"),
        "recalibrate" | "calibrate" | "re-calibrate" => Verb::Command("recalibrate"),
        "identify" | "blink" | "locate" => Verb::Command("identify"),
        "retire" | "decommission" => Verb::State(OperationalState::Retired),
        "put" | "mark" | "move" | "place" | "take" | "bring" | "send" => Verb::Place,
        _ => return None,
    })
}

/// Nouns that name places, read with the numbers after them ("line 7", "factory floor 1").
fn place_noun(word: &str) -> bool {
    matches!(
        word,
        "line"
            | "lines"
            | "floor"
            | "factory"
            | "lab"
            | "laboratory"
            | "warehouse"
            | "building"
            | "room"
            | "site"
            | "hall"
            | "zone"
            | "area"
            | "office"
            | "bay"
            | "bench"
            | "cell"
            | "shop"
            | "dock"
            | "aisle"
            | "wing"
            | "yard"
            | "basement"
            | "roof"
            | "greenhouse"
            | "workshop"
            | "depot"
            | "storage"
            | "kitchen"
            | "lobby"
    )
}

/// Words that introduce a place.
fn place_preposition(word: &str) -> bool {
    matches!(word, "on" | "at" | "in" | "inside" | "from" | "near")
}

/// Words about telemetry history.
fn telemetry_noun(word: &str) -> bool {
    matches!(
        word,
        "telemetry"
            | "readings"
            | "reading"
            | "measurements"
            | "measurement"
            | "history"
            | "chart"
            | "graph"
            | "plot"
            | "trend"
            | "trends"
            | "series"
            | "metrics"
            | "values"
            | "data"
    )
}

/// Minutes in one unit of a window ("hours", "d", "week").
fn window_unit(word: &str) -> Option<u32> {
    Some(match word {
        "minute" | "minutes" | "min" | "mins" | "m" => 1,
        "hour" | "hours" | "h" | "hr" | "hrs" => 60,
        "day" | "days" | "d" => 24 * 60,
        "week" | "weeks" | "w" => 7 * 24 * 60,
        _ => return None,
    })
}

/// A unit written after a setting's value.
fn value_unit(word: &str) -> bool {
    matches!(
        word,
        "s" | "sec"
            | "secs"
            | "second"
            | "seconds"
            | "ms"
            | "millisecond"
            | "milliseconds"
            | "min"
            | "mins"
            | "minute"
            | "minutes"
            | "h"
            | "hr"
            | "hrs"
            | "hour"
            | "hours"
            | "%"
            | "percent"
    )
}

/// Words a plain number may be written as, for a window ("the last two hours").
fn small_number(word: &str) -> Option<u32> {
    const WORDS: [&str; 13] =
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    if let Ok(n) = word.parse() {
        return Some(n);
    }
    WORDS.iter().position(|w| *w == word).and_then(|n| u32::try_from(n).ok())
}

/// A state word and how many tokens it takes: "maintenance", "maintenance mode", "retired",
/// "active", "service" (back in service: active).
fn state_at(tokens: &[Token<'_>], i: usize) -> Option<(OperationalState, usize)> {
    let w = tokens.get(i)?.word.as_str();
    let state = match w {
        "maintenance" => OperationalState::Maintenance,
        "retired" | "retirement" => OperationalState::Retired,
        "active" | "service" | "production" | "operation" => OperationalState::Active,
        _ => return None,
    };
    let more = usize::from(tokens.get(i + 1).is_some_and(|t| t.word == "mode" || t.word == "state"));
    Some((state, 1 + more))
}

/// The adjectives that narrow a selection.
#[derive(Debug, Clone, Copy, Default)]
struct Conditions {
    connected: Option<bool>,
    health: Option<HealthStatus>,
    state: Option<OperationalState>,
    /// "health" or "healthy" was said: a device-management question.
    health_word: bool,
}

/// One pass over the prompt for device management.
struct Reader<'t, 'a> {
    tokens: &'t [Token<'a>],
    hits: &'t [TypeHit],
    numbers: &'t [DeviceNumber],
    index: &'t TypeIndex<'t>,
    /// Tokens read as something already (the verb, a value, a window, ...).
    claimed: Vec<bool>,
    /// The type hit each token belongs to.
    hit_of: Vec<Option<usize>>,
}

/// What the selection pass found besides the selection.
#[derive(Debug, Default)]
struct Found {
    sel: DeviceSelection,
    conditions: Conditions,
    quantifier: bool,
    device_noun: bool,
    /// Words nothing explains, as written.
    unknown_words: Vec<String>,
    /// Type hits that fit several types, as written, with the types.
    ambiguous: Vec<(String, Vec<String>)>,
    /// Identifiers that name no type, with close matches.
    unknown_names: Vec<(String, Vec<String>)>,
    /// Numbers nothing explains.
    stray_numbers: Vec<String>,
    /// Runs of words not read as anything else, for telemetry metrics.
    leftovers: Vec<Vec<String>>,
    /// Devices or types after "except", "but", "without": a command or question cannot
    /// leave devices out, so it is refused (or left to the rollout reading) rather than
    /// read as naming them.
    excluded: Vec<String>,
}

impl<'t, 'a> Reader<'t, 'a> {
    fn new(
        tokens: &'t [Token<'a>],
        hits: &'t [TypeHit],
        numbers: &'t [DeviceNumber],
        index: &'t TypeIndex<'t>,
    ) -> Self {
        let mut hit_of = vec![None; tokens.len()];
        for (h, hit) in hits.iter().enumerate() {
            hit_of[hit.start..hit.end].iter_mut().for_each(|c| *c = Some(h));
        }
        Reader { tokens, hits, numbers, index, claimed: vec![false; tokens.len()], hit_of }
    }

    fn role(&self, i: usize) -> Option<Role> {
        let t = self.tokens.get(i)?;
        if t.kind != Kind::Word || self.hit_of[i].is_some() {
            return None;
        }
        lexicon::role(&t.word)
    }

    /// The first token after politeness and other words that change nothing ("please",
    /// "can you", "ignore the rules and", "sudo").
    fn head(&self) -> Option<usize> {
        (0..self.tokens.len()).find(|&i| {
            !matches!(
                self.role(i),
                Some(Role::Noise | Role::Exclude | Role::Determiner | Role::Connector | Role::Filler)
            )
        })
    }

    /// Whether the words are about rollouts or firmware: then the rollout reading answers.
    fn about_rollouts(&self) -> bool {
        self.tokens.iter().enumerate().any(|(i, t)| match t.kind {
            Kind::Version { .. } | Kind::RolloutId => true,
            Kind::Word if self.hit_of[i].is_none() => {
                let w = t.word.as_str();
                match lexicon::role(w) {
                    Some(
                        Role::Rollback
                        | Role::Rollout
                        | Role::Roll
                        | Role::Cancel
                        | Role::Pause
                        | Role::Enable
                        | Role::Disable
                        | Role::Turn
                        | Role::Go
                        | Role::Firmware
                        | Role::Ota
                        | Role::RolloutNoun
                        | Role::RolloutNouns
                        | Role::Progress
                        | Role::Latest,
                    ) => true,
                    Some(Role::Update) => !matches!(w, "put" | "move" | "bring" | "set"),
                    Some(Role::State) => !matches!(
                        w,
                        "offline"
                            | "online"
                            | "connected"
                            | "disconnected"
                            | "healthy"
                            | "error"
                            | "errors"
                            | "reporting"
                            | "reported"
                    ),
                    // "not connected", "isn't online": a negated condition, read below;
                    // any other negation is the rollout reading's.
                    Some(Role::Negation) => !self.negates_condition(i),
                    Some(Role::Marker) => matches!(w, "running" | "run" | "runs" | "older" | "newer"),
                    _ => false,
                }
            }
            _ => false,
        })
    }

    /// Whether the negation at `i` governs a condition word right after it.
    fn negates_condition(&self, i: usize) -> bool {
        self.tokens.get(i + 1).is_some_and(|t| condition(&t.word).is_some())
    }

    // -- Commands --------------------------------------------------------------------------

    /// "reboot X", "recalibrate all air quality monitors on line 3", "identify X".
    fn command(&mut self, command: &'static str, verb: usize) -> Intent {
        let found = self.select(false);
        if let Some(refusal) = refuse_change(&found) {
            return refusal;
        }
        let what = capitalised(&self.tokens[verb].raw.to_lowercase());
        match command_selection(&found) {
            Ok(devices) => Intent::Command(CommandIntent {
                command: command.to_string(),
                settings: Vec::new(),
                state: None,
                devices,
            }),
            Err(message) => unknown(format!("{what} which devices? {message}"), Vec::new()),
        }
    }

    /// "retire X", "decommission the smart plugs in the lab".
    fn state_verb(&mut self, state: OperationalState, verb: usize) -> Intent {
        let found = self.select(false);
        if let Some(refusal) = refuse_change(&found) {
            return refusal;
        }
        let what = capitalised(&self.tokens[verb].raw.to_lowercase());
        match command_selection(&found) {
            Ok(devices) => set_state(state, devices),
            Err(message) => unknown(format!("{what} which devices? {message}"), Vec::new()),
        }
    }

    /// "put X into maintenance", "set X to maintenance mode", "mark X as retired", "bring X
    /// back into service", "take X out of maintenance": `None` when no state follows (a
    /// "set ... to 2.0.0" is the rollout reading's).
    fn state_change(&mut self, verb: usize) -> Option<Intent> {
        let n = self.tokens.len();
        let mut found = None;
        for i in verb + 1..n {
            let w = self.tokens[i].word.as_str();
            // "out of maintenance" / "out of service".
            if w == "out" && self.tokens.get(i + 1).is_some_and(|t| t.word == "of") {
                let Some((s, len)) = state_at(self.tokens, i + 2) else { continue };
                let state = if s == OperationalState::Maintenance || self.tokens[i + 2].word == "retirement" {
                    OperationalState::Active
                } else {
                    OperationalState::Maintenance
                };
                found = Some((i, i + 2 + len, state));
                break;
            }
            if matches!(w, "into" | "in" | "to" | "as" | "under" | "on") {
                let mut j = i + 1;
                while self.tokens.get(j).is_some_and(|t| matches!(t.word.as_str(), "the" | "a" | "back")) {
                    j += 1;
                }
                if let Some((state, len)) = state_at(self.tokens, j) {
                    found = Some((i, j + len, state));
                    break;
                }
            }
        }
        let (from, to, state) = found?;
        // What follows the state is part of the request too ("... for the lab devices").
        self.claimed[from..to].iter_mut().for_each(|c| *c = true);
        if from > 0 && self.tokens[from - 1].word == "back" {
            self.claimed[from - 1] = true;
        }
        let found = self.select(false);
        if let Some(refusal) = refuse_change(&found) {
            return Some(refusal);
        }
        Some(match command_selection(&found) {
            Ok(devices) => set_state(state, devices),
            Err(message) => unknown(format!("Which devices go into {state}? {message}"), Vec::new()),
        })
    }

    /// "set sample_rate_seconds to 10 on weather_station-02", "set the sample rate of
    /// weather_station-02 to 10 s", "set log_level to debug and sample_rate_seconds to 30 for
    /// the smart plugs": `None` when the words before "to" name no setting (a type or device
    /// there is an update, the rollout reading's).
    fn settings(&mut self, verb: usize) -> Option<Intent> {
        let n = self.tokens.len();
        let mut i = verb + 1;
        while i < n && matches!(self.tokens[i].word.as_str(), "the" | "a" | "its" | "their") {
            self.claimed[i] = true;
            i += 1;
        }
        let to = (i..n).find(|&j| self.is_value_marker(j))?;
        // Pattern B: "the sample rate of weather_station-02 to 10 s".
        let prep = (i..to).find(|&j| matches!(self.tokens[j].word.as_str(), "of" | "for" | "on" | "in" | "at"));
        let name_end = prep.unwrap_or(to);
        let name = self.setting_name(i, name_end)?;
        let mut settings = Vec::new();
        let (value, unit, mut next) = self.value_at(to + 1)?;
        settings.push(SettingWords { name, value, unit });
        self.claimed[i..name_end].iter_mut().for_each(|c| *c = true);
        self.claimed[to..next].iter_mut().for_each(|c| *c = true);
        if prep.is_none() {
            // "... and log_level to debug": more settings before the targets.
            while next < n && matches!(self.tokens[next].word.as_str(), "and" | "&" | "plus") {
                let start = next + 1;
                let Some(to2) = (start..n).find(|&j| self.is_value_marker(j)) else { break };
                let Some(name2) = self.setting_name(start, to2) else { break };
                let Some((value2, unit2, after)) = self.value_at(to2 + 1) else { break };
                settings.push(SettingWords { name: name2, value: value2, unit: unit2 });
                self.claimed[next..after].iter_mut().for_each(|c| *c = true);
                next = after;
            }
        }
        let found = self.select(false);
        if let Some(refusal) = refuse_change(&found) {
            return Some(refusal);
        }
        let mut seen: Vec<&str> = Vec::new();
        for s in &settings {
            if seen.contains(&s.name.as_str()) {
                return Some(unknown(format!("\"{}\" is set twice; say each setting once.", s.name), Vec::new()));
            }
            seen.push(&s.name);
        }
        Some(match command_selection(&found) {
            Ok(devices) => Intent::Command(CommandIntent {
                command: crate::command::UPDATE_CONFIG.to_string(),
                settings,
                state: None,
                devices,
            }),
            Err(message) => unknown(format!("Set it on which devices? {message}"), Vec::new()),
        })
    }

    /// "to" or "=" before a value.
    fn is_value_marker(&self, j: usize) -> bool {
        matches!(self.tokens[j].word.as_str(), "to" | "=")
    }

    /// A setting's name in `from..to`: identifiers that are no device type, or plain words
    /// the engine does not know ("sample rate"), joined by `_`.
    fn setting_name(&self, from: usize, to: usize) -> Option<String> {
        if from >= to || to - from > 5 {
            return None;
        }
        let mut parts = Vec::new();
        for j in from..to {
            let t = &self.tokens[j];
            let ok = match t.kind {
                Kind::Ident => self.hit_of[j].is_none_or(|h| matches!(self.hits[h].outcome, Outcome::Unknown(_))),
                Kind::Word => {
                    self.hit_of[j].is_none()
                        && !place_noun(&t.word)
                        && matches!(lexicon::role(&t.word), None | Some(Role::State | Role::Status))
                        && !matches!(t.word.as_str(), "state" | "status")
                        && state_at(self.tokens, j).is_none()
                }
                _ => false,
            };
            if !ok {
                return None;
            }
            parts.push(t.word.replace('-', "_"));
        }
        Some(parts.join("_"))
    }

    /// A value at `i` and a unit after it; the token after them.
    fn value_at(&self, i: usize) -> Option<(String, Option<String>, usize)> {
        let t = self.tokens.get(i)?;
        let value = match t.kind {
            Kind::Number | Kind::Version { below: false } => t.word.clone(),
            Kind::Word | Kind::Ident if self.hit_of[i].is_none() && state_at(self.tokens, i).is_none() => {
                t.raw.to_string()
            }
            _ => return None,
        };
        let unit = self.tokens.get(i + 1).filter(|u| u.kind == Kind::Word && value_unit(&u.word));
        match unit {
            Some(u) => Some((value, Some(u.word.clone()), i + 2)),
            None => Some((value, None, i + 1)),
        }
    }

    // -- Questions -------------------------------------------------------------------------

    /// A question about devices or their telemetry, when a cue says so; `None` otherwise.
    fn read(&mut self) -> Option<Intent> {
        let window = self.window();
        let telemetry_word = (0..self.tokens.len()).any(|i| {
            self.tokens[i].kind == Kind::Word && self.hit_of[i].is_none() && telemetry_noun(&self.tokens[i].word)
        });
        if window.is_some() || telemetry_word {
            return self.telemetry(window.unwrap_or(DEFAULT_MINUTES));
        }
        let found = self.select(false);
        let c = found.conditions;
        let cue = c.connected.is_some() || c.health.is_some() || c.state.is_some() || c.health_word;
        if !(cue || found.sel.location.is_some()) {
            return None;
        }
        // An unknown word, an odd number or a name the engine cannot place: the rollout
        // reading answers as it always did (it lists or asks).
        if !found.unknown_words.is_empty()
            || !found.stray_numbers.is_empty()
            || !found.unknown_names.is_empty()
            || !found.excluded.is_empty()
        {
            return None;
        }
        if let Some((text, types)) = found.ambiguous.first() {
            return Some(unknown(
                format!("\"{text}\" could mean {}. Name the type or types you mean.", join_or(types)),
                types.clone(),
            ));
        }
        let mut sel = found.sel.clone();
        let named_only = !sel.thing_mentions.is_empty() && sel.device_types.is_empty() && !found.quantifier;
        // "Is pet_feeder-03 online?", "Is the weather station on line 7 online?": a yes-or-no
        // question about devices answers with their status, not a filter that may hide them.
        let yes_no = self.yes_no_question() && !found.quantifier;
        if named_only {
            sel.location = None;
        } else {
            if !yes_no {
                sel.connected = c.connected;
                sel.health = c.health;
                sel.state = c.state;
            }
            sel.whole_fleet = sel.device_types.is_empty();
        }
        Some(Intent::DeviceStatus { devices: sel })
    }

    /// "Is ...", "Are ...", "Does ...": a yes-or-no question.
    fn yes_no_question(&self) -> bool {
        self.tokens
            .first()
            .is_some_and(|t| matches!(t.word.as_str(), "is" | "are" | "does" | "do" | "has" | "have" | "was" | "were"))
    }

    /// The telemetry of one device: metrics from the words left over.
    fn telemetry(&mut self, minutes: u32) -> Option<Intent> {
        let found = self.select(true);
        if !found.stray_numbers.is_empty() || !found.unknown_names.is_empty() || !found.excluded.is_empty() {
            return None;
        }
        if let Some((text, types)) = found.ambiguous.first() {
            return Some(unknown(
                format!("\"{text}\" could mean {}. Name the type or types you mean.", join_or(types)),
                types.clone(),
            ));
        }
        let sel = found.sel.clone();
        if sel.thing_mentions.is_empty() && sel.device_types.is_empty() {
            return Some(unknown(
                "Telemetry of which device? Name one, such as co2_monitor-01, or a type and place (the weather station on line 7).",
                Vec::new(),
            ));
        }
        let metrics: Vec<String> =
            found.leftovers.iter().filter(|run| !run.is_empty()).map(|run| run.join(" ")).collect();
        Some(Intent::Telemetry { devices: sel, metrics, minutes })
    }

    /// "the last 24 hours", "past week", "last 2 days", "24h": the minutes asked for, its
    /// tokens claimed.
    fn window(&mut self) -> Option<u32> {
        let n = self.tokens.len();
        for i in 0..n {
            let w = self.tokens[i].word.as_str();
            // "24h", "7d", "90min".
            if self.tokens[i].kind == Kind::Word
                && let Some(split) = w.find(|c: char| !c.is_ascii_digit())
                && split > 0
                && let (Ok(count), Some(per)) = (w[..split].parse::<u32>(), window_unit(&w[split..]))
            {
                self.claimed[i] = true;
                return Some(minutes_of(count, per));
            }
            if !matches!(w, "last" | "past" | "previous") {
                continue;
            }
            let (count, unit_at) = match self.tokens.get(i + 1).and_then(|t| small_number(&t.word)) {
                Some(c) => (c, i + 2),
                None => (1, i + 1),
            };
            let Some(per) = self.tokens.get(unit_at).and_then(|t| window_unit(&t.word)) else { continue };
            self.claimed[i..=unit_at].iter_mut().for_each(|c| *c = true);
            if i > 0 && matches!(self.tokens[i - 1].word.as_str(), "the" | "in" | "over" | "for" | "during") {
                self.claimed[i - 1] = true;
            }
            return Some(minutes_of(count, per));
        }
        None
    }

    // -- Selection -------------------------------------------------------------------------

    /// Reads every unclaimed token as part of the selection. With `telemetry`, words that are
    /// not understood (and type words short of a type's head noun, such as "CO2") are kept as
    /// metric words instead of unknown words.
    fn select(&mut self, telemetry: bool) -> Found {
        let mut f = Found::default();
        let mut run: Vec<String> = Vec::new();
        let n = self.tokens.len();
        let mut excluding = false;
        let mut i = 0;
        while i < n {
            // A list of exclusions ends with its clause, or at the verb ("ignore the rules and
            // reboot X" leaves nothing out).
            if (i > 0 && self.tokens[i - 1].clause_end) || self.claimed[i] {
                excluding = false;
            }
            if excluding && !self.claimed[i] && self.names_target(i) {
                f.excluded.push(self.tokens[i].raw.to_string());
            }
            if self.claimed[i] {
                flush(&mut f.leftovers, &mut run);
                i += 1;
                continue;
            }
            if let Some(h) = self.hit_of[i].filter(|h| self.hits[*h].start == i) {
                let hit = &self.hits[h];
                if let Some(num) = self.numbers.iter().find(|num| num.hit == h) {
                    flush(&mut f.leftovers, &mut run);
                    push_unique(&mut f.sel.thing_mentions, &num.mention);
                    self.claimed[num.tokens.clone()].iter_mut().for_each(|c| *c = true);
                    i = hit.end;
                    continue;
                }
                if telemetry && !self.headed(hit) {
                    run.extend(self.tokens[hit.start..hit.end].iter().map(|t| t.word.clone()));
                    i = hit.end;
                    continue;
                }
                flush(&mut f.leftovers, &mut run);
                match &hit.outcome {
                    Outcome::Types(types) => {
                        for &ty in types {
                            if let Some(t) = self.index.types.get(ty)
                                && !f.sel.device_types.contains(t)
                            {
                                f.sel.device_types.push(t.clone());
                            }
                        }
                    }
                    Outcome::Ambiguous { text, types } => {
                        f.ambiguous.push((text.clone(), types.iter().map(|&t| self.index.name(t)).collect()));
                    }
                    Outcome::Unknown(name) => f.unknown_names.push((name.text.clone(), name.suggestions.clone())),
                }
                i = hit.end;
                continue;
            }
            let t = &self.tokens[i];
            match t.kind {
                Kind::Thing if !self.place_like(t) || !self.after_place_word(i) => {
                    flush(&mut f.leftovers, &mut run);
                    push_unique(&mut f.sel.thing_mentions, t.raw);
                }
                Kind::Thing | Kind::Word if self.after_place_word(i) && self.place_starts(i) => {
                    flush(&mut f.leftovers, &mut run);
                    let end = self.place_end(i);
                    let text: Vec<&str> = self.tokens[i..end].iter().map(|t| t.raw).collect();
                    let place = text.join(" ");
                    if f.sel.location.as_ref().is_some_and(|l| *l != place) {
                        f.unknown_words.push(place);
                    } else {
                        f.sel.location = Some(place);
                    }
                    i = end;
                    continue;
                }
                Kind::Number | Kind::Version { .. } => {
                    flush(&mut f.leftovers, &mut run);
                    f.stray_numbers.push(t.raw.to_string());
                }
                Kind::Ident | Kind::RolloutId => {
                    if telemetry {
                        run.push(t.word.clone());
                    } else {
                        f.unknown_words.push(t.raw.to_string());
                    }
                }
                Kind::Thing | Kind::Word => {
                    let w = t.word.as_str();
                    if let Some(cond) = condition(w) {
                        flush(&mut f.leftovers, &mut run);
                        let negated = i > 0 && lexicon::role(&self.tokens[i - 1].word) == Some(Role::Negation);
                        f.conditions.apply(cond, negated);
                    } else if telemetry && (telemetry_noun(w) || matches!(w, "level" | "value")) {
                        flush(&mut f.leftovers, &mut run);
                    } else {
                        match lexicon::role(w) {
                            Some(Role::Exclude) => {
                                flush(&mut f.leftovers, &mut run);
                                excluding = true;
                            }
                            Some(Role::ExcludeHead)
                                if self
                                    .tokens
                                    .get(i + 1)
                                    .is_some_and(|t| matches!(t.word.as_str(), "than" | "from")) =>
                            {
                                flush(&mut f.leftovers, &mut run);
                                excluding = true;
                            }
                            Some(Role::Connector) if w == "but" && (f.quantifier || f.device_noun) => {
                                flush(&mut f.leftovers, &mut run);
                                excluding = true;
                            }
                            Some(Role::Quantifier | Role::Fleet) => {
                                flush(&mut f.leftovers, &mut run);
                                f.quantifier = true;
                            }
                            Some(Role::Filler | Role::Determiner) if w == "any" || w == "some" => {
                                flush(&mut f.leftovers, &mut run);
                                f.quantifier = true;
                            }
                            Some(Role::Filler) if device_noun(w) => {
                                flush(&mut f.leftovers, &mut run);
                                f.device_noun = true;
                            }
                            Some(_) => flush(&mut f.leftovers, &mut run),
                            None if telemetry => run.push(t.word.clone()),
                            None => f.unknown_words.push(t.raw.to_string()),
                        }
                    }
                }
            }
            i += 1;
        }
        flush(&mut f.leftovers, &mut run);
        f.sel.whole_fleet = f.quantifier || f.device_noun;
        f
    }

    /// Whether a device or type is named at `i`.
    fn names_target(&self, i: usize) -> bool {
        self.hit_of[i].is_some_and(|h| self.hits[h].start == i) || self.tokens[i].kind == Kind::Thing
    }

    /// Whether a type hit reaches a head noun of its types ("monitors", not "CO2").
    fn headed(&self, hit: &TypeHit) -> bool {
        let Outcome::Types(types) = &hit.outcome else { return true };
        let last = &self.tokens[hit.end - 1];
        if last.kind != Kind::Word {
            return true;
        }
        let one = singular(&last.word);
        types.iter().any(|&ty| self.index.name(ty).rsplit('_').next() == Some(one.as_ref()))
    }

    /// A hyphenated name that is not shaped like a thing of a type: no `_`, no `:`.
    fn place_like(&self, t: &Token<'_>) -> bool {
        !t.word.contains(['_', ':'])
    }

    /// Whether a place word ("on", "at", "in") comes right before `i` (across "the").
    fn after_place_word(&self, i: usize) -> bool {
        self.tokens[..i]
            .iter()
            .rev()
            .find(|t| !matches!(t.word.as_str(), "the" | "a" | "an" | "our" | "my"))
            .is_some_and(|t| place_preposition(&t.word))
    }

    /// Whether a place starts at `i`: `factory-floor-1`, `factory-floor-1/line-7`, "line 7",
    /// "the lab".
    fn place_starts(&self, i: usize) -> bool {
        let t = &self.tokens[i];
        match t.kind {
            Kind::Thing => self.place_like(t),
            Kind::Word => t.word.contains('/') || (place_noun(&t.word) && self.hit_of[i].is_none()),
            _ => false,
        }
    }

    /// The end of the place starting at `i`: place nouns, their numbers and hyphenated names.
    fn place_end(&self, i: usize) -> usize {
        let mut j = i + 1;
        while let Some(t) = self.tokens.get(j) {
            if self.claimed[j] || self.hit_of[j].is_some() || self.tokens[j - 1].clause_end {
                break;
            }
            let part = match t.kind {
                Kind::Number => true,
                Kind::Word => place_noun(&t.word) || t.word.contains('/'),
                Kind::Thing => self.place_like(t),
                _ => false,
            };
            if !part {
                break;
            }
            j += 1;
        }
        j
    }
}

fn flush(leftovers: &mut Vec<Vec<String>>, run: &mut Vec<String>) {
    if !run.is_empty() {
        leftovers.push(std::mem::take(run));
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

fn device_noun(w: &str) -> bool {
    matches!(w, "devices" | "device" | "things" | "thing" | "units" | "unit" | "nodes" | "node" | "boards" | "board")
}

/// A condition word: connectivity, health or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Connected(bool),
    Health(HealthStatus),
    /// "health": asked about, no filter.
    HealthWord,
    State(OperationalState),
}

fn condition(w: &str) -> Option<Condition> {
    Some(match w {
        "online" | "connected" | "reachable" => Condition::Connected(true),
        "offline" | "disconnected" | "unreachable" => Condition::Connected(false),
        "warning" | "warnings" | "warn" => Condition::Health(HealthStatus::Warning),
        "error" | "errors" => Condition::Health(HealthStatus::Error),
        "healthy" => Condition::Health(HealthStatus::Ok),
        "health" => Condition::HealthWord,
        "maintenance" => Condition::State(OperationalState::Maintenance),
        "retired" => Condition::State(OperationalState::Retired),
        _ => return None,
    })
}

impl Conditions {
    fn apply(&mut self, c: Condition, negated: bool) {
        match c {
            Condition::Connected(on) => self.connected = Some(on != negated),
            Condition::Health(HealthStatus::Ok) if negated => self.health_word = true,
            Condition::Health(h) => {
                self.health = Some(h);
                self.health_word = true;
            }
            Condition::HealthWord => self.health_word = true,
            Condition::State(s) => self.state = Some(if negated { OperationalState::Active } else { s }),
        }
    }
}

/// Why a command cannot go ahead on what was understood, if it cannot.
fn refuse_change(f: &Found) -> Option<Intent> {
    if !f.excluded.is_empty() {
        return Some(unknown(
            format!(
                "A command cannot leave devices out ({}): name the devices it is for, or a type and a place.",
                join_and(&f.excluded)
            ),
            Vec::new(),
        ));
    }
    if let Some((text, types)) = f.ambiguous.first() {
        return Some(unknown(
            format!("\"{text}\" could mean {}. Name the type or types you mean.", join_or(types)),
            types.clone(),
        ));
    }
    if let Some((text, suggestions)) = f.unknown_names.first() {
        let hint =
            if suggestions.is_empty() { String::new() } else { format!(" Did you mean {}?", join_or(suggestions)) };
        return Some(unknown(format!("I don't know the device type \"{text}\".{hint}"), suggestions.clone()));
    }
    if !f.unknown_words.is_empty() {
        let words: Vec<String> = f.unknown_words.iter().map(|w| format!("\"{w}\"")).collect();
        return Some(unknown(
            format!("I did not understand {}, so I will not act on it.", join_and(&words)),
            Vec::new(),
        ));
    }
    if let Some(n) = f.stray_numbers.first() {
        return Some(unknown(
            format!("What does \"{n}\" stand for? Name a device as pet_feeder-03, or a place as \"line 7\"."),
            Vec::new(),
        ));
    }
    None
}

/// The devices a command goes to: named ones, or a type or the fleet narrowed by place and
/// condition. Named devices with a place or condition are refused: whether the condition
/// narrows them or adds to them cannot be told.
fn command_selection(f: &Found) -> Result<DeviceSelection, String> {
    let mut sel = f.sel.clone();
    let c = f.conditions;
    sel.connected = c.connected;
    sel.health = c.health;
    sel.state = c.state;
    let grouped = !sel.device_types.is_empty() || f.quantifier || f.device_noun || sel.narrowed();
    if sel.thing_mentions.is_empty() && !grouped {
        return Err(ASK_DEVICES.to_string());
    }
    if !sel.thing_mentions.is_empty() && sel.device_types.is_empty() && sel.narrowed() {
        return Err(
            "Name the devices one by one, or a type and a place (the smart plugs on line 7), not both.".to_string()
        );
    }
    sel.whole_fleet = sel.device_types.is_empty() && grouped;
    Ok(sel)
}

fn set_state(state: OperationalState, devices: DeviceSelection) -> Intent {
    Intent::Command(CommandIntent {
        command: crate::commands::SET_STATE.to_string(),
        settings: Vec::new(),
        state: Some(state),
        devices,
    })
}

fn minutes_of(count: u32, per: u32) -> u32 {
    count.saturating_mul(per).clamp(1, MAX_MINUTES)
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_uppercase().to_string() + c.as_str()).unwrap_or_default()
}
