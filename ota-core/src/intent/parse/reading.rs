//! One pass over the words of a prompt: the actions it asks for, the targets it names or
//! leaves out, and the signals that tell one kind of question from another.

use crate::intent::UnknownName;
use crate::intent::fuzzy::within;
use crate::names::JobId;

use super::lexicon::{self, Role, TYPO_TOLERANT};
use super::numbers::DeviceNumber;
use super::tokens::{Kind, Token};
use super::types::{Outcome, TypeHit, TypeIndex};

/// Targets named (or left out), as type indexes and thing mentions as written.
#[derive(Debug, Clone, Default)]
pub(super) struct Targets {
    pub types: Vec<usize>,
    pub things: Vec<String>,
    pub unknown_names: Vec<UnknownName>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.things.is_empty() && self.unknown_names.is_empty()
    }
}

/// Verbs found, before deciding whether they fit together.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Acts {
    pub update: bool,
    pub rollback: bool,
    pub cancel: bool,
    pub pause: bool,
    pub enable: bool,
    pub disable: bool,
    /// "roll out 2.0.0 to ...": "rollout" opening the request.
    pub rollout_verb: bool,
    /// "bring ... back to 1.0.0": an update that goes back.
    pub back: bool,
}

/// Everything one pass over the prompt learns.
#[derive(Debug, Clone, Default)]
pub(super) struct Reading {
    pub include: Targets,
    pub exclude: Targets,
    pub ambiguous: Vec<(String, Vec<usize>)>,
    /// Words the engine does not know, as written.
    pub unknown_words: Vec<String>,
    /// Device types close to those words.
    pub suggestions: Vec<String>,
    pub rollout_ids: Vec<JobId>,
    pub fleet: bool,
    pub quantifier: bool,
    /// "devices", "things": the fleet, when a version condition narrows it.
    pub device_noun: bool,
    pub pronoun: bool,
    pub acts: Acts,
    /// "don't update ...".
    pub negated: bool,
    /// "except those running 1.0.0": leaving out by version, which a request cannot say.
    pub excluded_version: bool,
    /// Opens with a question word: reads only, whatever verbs follow.
    pub question: bool,
    pub asks: bool,
    /// A reading word: a read verb ("show", "list") or a question word ("what", "which").
    pub read: bool,
    /// A read verb only ("show", "list", "check").
    pub read_verb: bool,
    pub status: bool,
    pub progress: bool,
    pub rollout_noun: bool,
    pub rollout_plural: bool,
    /// "the update", "update status": an update spoken of, not asked for.
    pub update_noun: bool,
    pub firmware: bool,
    /// Words about what devices run or report ("running", "installed", "failed").
    pub device_state: bool,
    /// "online", "connected", "reachable": only devices connected now.
    pub online: bool,
    /// The object of enable/disable: "OTA", "updates".
    pub ota: bool,
    /// "all rollouts", "every active deployment", "cancel everything": an all-word that
    /// governs the rollouts or the cancel verb itself (not "…, that's all").
    pub all_rollouts: bool,
    /// "outdated", "out of date", "not up to date": devices not on their type's latest.
    pub outdated: bool,
    /// Devices named by type and a bare number ("pet feeder 3"), as (mention, number): a
    /// version too, in an update that names no version otherwise.
    pub bare_device_numbers: Vec<(String, String)>,
}

/// What a word does to a list of exclusions in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Keep,
    End,
    Exclude,
}

struct Pass<'t, 'a> {
    tokens: &'t [Token<'a>],
    covered: Vec<bool>,
    consumed: Vec<bool>,
    index: &'t TypeIndex<'t>,
    r: Reading,
}

pub(super) fn read(
    tokens: &[Token<'_>],
    hits: &[TypeHit],
    numbers: &[DeviceNumber],
    index: &TypeIndex<'_>,
    question_mark: bool,
) -> Reading {
    let mut covered = vec![false; tokens.len()];
    for h in hits {
        covered[h.start..h.end].iter_mut().for_each(|c| *c = true);
    }
    let mut pass = Pass { tokens, covered, consumed: vec![false; tokens.len()], index, r: Reading::default() };
    // "Do not roll back ..." opens like a question but is a (negated) request.
    pass.r.question = tokens.first().is_some_and(|t| t.kind == Kind::Word && lexicon::opens_question(&t.word))
        && !tokens.get(1).is_some_and(|t| lexicon::role(&t.word) == Some(Role::Negation));
    pass.r.asks = question_mark;
    let mut excluding = false;
    let mut hits = hits.iter().enumerate().peekable();
    let mut i = 0;
    while i < tokens.len() {
        if let Some((h, hit)) = hits.next_if(|(_, h)| h.start == i) {
            // "pet feeder 3" names the device `pet_feeder-3`, not the type.
            if let Some(n) = numbers.iter().find(|n| n.hit == h) {
                pass.targets(excluding).things.push(n.mention.clone());
                pass.consumed[n.tokens.clone()].iter_mut().for_each(|c| *c = true);
                if n.bare {
                    pass.r.bare_device_numbers.push((n.mention.clone(), n.number.clone()));
                }
            } else {
                pass.add_hit(hit, excluding);
            }
            i = hit.end;
            if tokens[i - 1].clause_end {
                excluding = false;
            }
            continue;
        }
        let t = &tokens[i];
        let scope = if pass.consumed[i] {
            Scope::Keep
        } else {
            match t.kind {
                Kind::Thing => {
                    pass.targets(excluding).things.push(t.raw.to_string());
                    Scope::Keep
                }
                Kind::RolloutId => {
                    pass.r.rollout_ids.extend(JobId::parse(t.raw).ok());
                    Scope::End
                }
                Kind::Word => pass.word(i),
                Kind::Ident | Kind::Number | Kind::Version { .. } => Scope::End,
            }
        };
        match scope {
            Scope::Exclude => excluding = true,
            Scope::End => {
                pass.r.excluded_version |= excluding && pass.leads_to_version(i);
                excluding = false;
            }
            Scope::Keep => {}
        }
        if t.clause_end {
            excluding = false;
        }
        i += 1;
    }
    pass.r.outdated = outdated(tokens);
    pass.r
}

/// "outdated", "out of date", "not up to date", "aren't up-to-date": words for devices not
/// on their type's latest version.
fn outdated(tokens: &[Token<'_>]) -> bool {
    let words: Vec<&str> = tokens.iter().map(|t| t.word.as_str()).collect();
    words.iter().enumerate().any(|(i, w)| match *w {
        "outdated" => true,
        "date" if i >= 2 && words[i - 2] == "out" && words[i - 1] == "of" => true,
        "date" | "uptodate" => {
            let start = if *w == "date" && i >= 2 && words[i - 2] == "up" && words[i - 1] == "to" {
                i - 2
            } else if *w == "uptodate" || (*w == "date" && i >= 1 && words[i - 1] == "up-to") {
                i
            } else {
                return false;
            };
            words[..start].iter().rev().take(3).any(|w| lexicon::role(w) == Some(Role::Negation))
        }
        _ => false,
    })
}

impl Pass<'_, '_> {
    fn targets(&mut self, excluding: bool) -> &mut Targets {
        if excluding { &mut self.r.exclude } else { &mut self.r.include }
    }

    fn add_hit(&mut self, hit: &TypeHit, excluding: bool) {
        match &hit.outcome {
            Outcome::Types(types) => self.targets(excluding).types.extend(types),
            Outcome::Ambiguous { text, types } => self.r.ambiguous.push((text.clone(), types.clone())),
            Outcome::Unknown(name) => self.targets(excluding).unknown_names.push(name.clone()),
        }
    }

    fn role_at(&self, i: usize) -> Option<Role> {
        let t = self.tokens.get(i)?;
        if t.kind != Kind::Word || self.covered[i] {
            return None;
        }
        lexicon::role(&t.word).or_else(|| typo_role(&t.word))
    }

    fn word(&mut self, i: usize) -> Scope {
        let w = self.tokens[i].word.as_str();
        let Some(role) = self.role_at(i) else {
            self.r.unknown_words.push(self.tokens[i].raw.to_string());
            // A handful of unknown words is enough to answer; a pasted essay is not searched.
            let suggest = if self.r.unknown_words.len() <= 8 { self.index.suggest(w) } else { Vec::new() };
            for s in suggest {
                if !self.r.suggestions.contains(&s) {
                    self.r.suggestions.push(s);
                }
            }
            return Scope::End;
        };
        match role {
            Role::Filler | Role::Determiner | Role::Connector => {
                self.r.device_noun |= matches!(w, "devices" | "things" | "units" | "nodes" | "boards");
                if w == "but" && (self.r.fleet || self.r.quantifier || self.follows_whole_fleet(i)) {
                    return Scope::Exclude;
                }
                return Scope::Keep;
            }
            // "…, that's all", "that is all": the end of the request, not a quantifier.
            Role::Quantifier
                if w == "all" && i >= 2 && self.tokens[i - 2].word == "that" && self.tokens[i - 1].word == "is" =>
            {
                return Scope::Keep;
            }
            Role::Quantifier | Role::Fleet | Role::Pronoun => {
                self.r.all_rollouts |= role != Role::Pronoun && self.names_all_rollouts(i);
                self.r.quantifier |= role == Role::Quantifier;
                self.r.fleet |= role == Role::Fleet;
                // "those on 1.x" narrows; "them", "it", "all those devices" point at an
                // earlier message the engine cannot see.
                self.r.pronoun |= role == Role::Pronoun && !self.introduces_condition(i);
                return Scope::Keep;
            }
            Role::Negation => return self.negation(i),
            Role::Exclude => return Scope::Exclude,
            Role::ExcludeHead => {
                let second = if w == "other" { "than" } else { "from" };
                if self.tokens.get(i + 1).is_some_and(|t| t.word == second) {
                    self.consumed[i + 1] = true;
                    return Scope::Exclude;
                }
                return Scope::Keep;
            }
            // "set OTA off for ..." switches like "turn"; "set pet feeders to 2.0.0" updates.
            Role::Update if w == "set" && self.switch_word(i).is_some() => self.turn(i),
            Role::Update | Role::Rollback | Role::Rollout => self.verb(i, role),
            Role::Cancel | Role::Pause | Role::Enable | Role::Disable => self.command(i, role),
            Role::Roll => self.roll(i),
            Role::Turn => self.turn(i),
            Role::Go if self.tokens.get(i + 1).is_some_and(|t| t.word == "back") => {
                self.consumed[i + 1] = true;
                self.verb(i, Role::Rollback);
            }
            Role::Go => {}
            Role::Back => self.r.acts.back = true,
            Role::Off | Role::Noise | Role::Latest => {}
            Role::RolloutNoun => self.r.rollout_noun = true,
            Role::RolloutNouns => {
                self.r.rollout_noun = true;
                self.r.rollout_plural = true;
            }
            Role::Status => self.r.status = true,
            Role::Progress => self.r.progress = true,
            Role::Read => {
                self.r.read = true;
                self.r.read_verb = true;
            }
            Role::Question => self.r.read = true,
            Role::Firmware => self.r.firmware = true,
            Role::Ota => self.r.ota = true,
            Role::Marker => {
                self.r.device_state |= matches!(w, "running" | "run" | "runs" | "have" | "has" | "on");
            }
            Role::State => {
                self.r.device_state = true;
                self.r.online |= matches!(w, "online" | "connected");
            }
        }
        Scope::End
    }

    /// Whether the word at `i` is a version or selects by one ("running 1.0.0", "older
    /// than 2"). "to 2.0.0" after an exclusion is the target, not part of it.
    fn leads_to_version(&self, i: usize) -> bool {
        let t = &self.tokens[i];
        match t.kind {
            Kind::Version { .. } | Kind::Number => return true,
            Kind::Word
                if lexicon::role(&t.word) == Some(Role::Marker)
                    && !matches!(t.word.as_str(), "to" | "onto" | "into") => {}
            _ => return false,
        }
        self.tokens[i + 1..]
            .iter()
            .take(4)
            .find(|t| {
                t.kind != Kind::Word
                    || !(lexicon::version_lead_in(&t.word) || lexicon::role(&t.word) == Some(Role::Marker))
            })
            .is_some_and(|t| {
                matches!(t.kind, Kind::Version { .. } | Kind::Number) || lexicon::role(&t.word) == Some(Role::Latest)
            })
    }

    /// Whether the all-word at `i` is about the rollouts: followed by a rollout noun
    /// ("all rollouts", "every active deployment", "all of the running jobs") or the object
    /// of a cancel verb with nothing after it ("cancel everything", "stop all now").
    fn names_all_rollouts(&self, i: usize) -> bool {
        let next = self.tokens[i + 1..].iter().find(|t| {
            !matches!(
                t.word.as_str(),
                "the" | "of" | "my" | "our" | "active" | "current" | "ongoing" | "running" | "pending" | "open"
            )
        });
        if next.is_some_and(|t| {
            matches!(lexicon::role(&t.word), Some(Role::RolloutNoun | Role::RolloutNouns | Role::Rollout))
                || matches!(t.word.as_str(), "updates" | "upgrades" | "rollbacks")
        }) {
            return true;
        }
        let after_verb = (0..i)
            .rev()
            .find(|&j| !matches!(self.role_at(j), Some(Role::Noise)))
            .is_some_and(|j| self.role_at(j) == Some(Role::Cancel));
        // "cancel everything", "stop all now", "cancel everything that's running".
        let nothing_after = self.tokens[i].clause_end
            || self.tokens[i + 1..].iter().all(|t| {
                matches!(lexicon::role(&t.word), Some(Role::Noise))
                    || matches!(
                        t.word.as_str(),
                        "that" | "which" | "running" | "active" | "ongoing" | "going" | "on" | "in" | "progress"
                    )
            });
        after_verb && nothing_after
    }

    fn introduces_condition(&self, i: usize) -> bool {
        matches!(self.tokens[i].word.as_str(), "those" | "these" | "ones")
            && self.tokens.get(i + 1).is_some_and(|t| {
                matches!(t.word.as_str(), "that" | "which" | "who") || lexicon::role(&t.word) == Some(Role::Marker)
            })
    }

    /// "everything but the pet feeders", "all devices but smart plugs".
    fn follows_whole_fleet(&self, i: usize) -> bool {
        self.tokens[..i]
            .iter()
            .rev()
            .find(|t| !matches!(t.word.as_str(), "devices" | "device" | "things" | "types" | "my" | "our" | "the"))
            .is_some_and(|t| matches!(lexicon::role(&t.word), Some(Role::Fleet | Role::Quantifier)))
    }

    /// "not" before a verb negates the request; before a target it leaves the target out;
    /// before a version the version reader deals with it.
    fn negation(&mut self, i: usize) -> Scope {
        let next = (i + 1..self.tokens.len()).find(|&j| !matches!(self.role_at(j), Some(Role::Noise)));
        match next.map(|j| (j, self.role_at(j))) {
            Some((
                _,
                Some(
                    Role::Update
                    | Role::Rollback
                    | Role::Rollout
                    | Role::Cancel
                    | Role::Pause
                    | Role::Enable
                    | Role::Disable
                    | Role::Roll
                    | Role::Turn
                    | Role::Go,
                ),
            )) => {
                self.r.negated = true;
                Scope::End
            }
            Some((_, Some(Role::Marker))) => Scope::End,
            _ => Scope::Exclude,
        }
    }

    /// An update or rollback verb, unless the words around it make it a noun: "the update",
    /// "pet_feeder rollout", "update status", "cancel update", "disable updates".
    fn verb(&mut self, i: usize, role: Role) {
        let prev = i.checked_sub(1);
        // "the pet_feeder rollout" names a rollout; "pet_feeder update to 2.0.0" still asks.
        let named_rollout =
            role == Role::Rollout && prev.is_some_and(|p| self.covered[p] || self.tokens[p].kind == Kind::Thing);
        let noun = named_rollout
            || prev.is_some_and(|p| matches!(self.role_at(p), Some(Role::Determiner)))
            || matches!(self.role_at(i + 1), Some(Role::Status | Role::Progress))
            || self.object_of_command(i);
        if noun {
            if role == Role::Rollout || role == Role::Rollback {
                self.r.rollout_noun = true;
            }
            self.r.update_noun = true;
            return;
        }
        if self.negated_before(i) {
            self.r.negated = true;
            return;
        }
        match role {
            Role::Rollback => self.r.acts.rollback = true,
            Role::Rollout if self.opens_request(i) => self.r.acts.rollout_verb = true,
            Role::Rollout => self.r.rollout_noun = true,
            _ => self.r.acts.update = true,
        }
    }

    /// Cancel, pause, enable and disable; "the stop" or "the end" are nouns and do nothing.
    fn command(&mut self, i: usize, role: Role) {
        if i > 0 && matches!(self.role_at(i - 1), Some(Role::Determiner)) {
            return;
        }
        if self.negated_before(i) {
            self.r.negated = true;
            return;
        }
        let acts = &mut self.r.acts;
        match role {
            Role::Cancel => acts.cancel = true,
            Role::Pause => acts.pause = true,
            Role::Enable => acts.enable = true,
            _ => acts.disable = true,
        }
    }

    /// "roll back", "rolling out", "roll pet_feeder-03 back".
    fn roll(&mut self, i: usize) {
        let particle = (i + 1..self.tokens.len()).find(|&j| {
            !self.consumed[j]
                && self.tokens[j].kind == Kind::Word
                && matches!(self.tokens[j].word.as_str(), "back" | "out")
        });
        if let Some(j) = particle {
            self.consumed[j] = true;
            let role = if self.tokens[j].word == "back" { Role::Rollback } else { Role::Rollout };
            self.verb(i, role);
        }
    }

    /// "turn on OTA", "switch updates off".
    fn turn(&mut self, i: usize) {
        if let Some(j) = self.switch_word(i) {
            self.consumed[j] = true;
            self.r.ota |= j > i + 1;
            let role = if self.tokens[j].word == "on" { Role::Enable } else { Role::Disable };
            self.command(i, role);
        }
    }

    /// The "on" or "off" that completes a switch verb at `i`, across "OTA" or "the".
    fn switch_word(&self, i: usize) -> Option<usize> {
        for j in i + 1..self.tokens.len().min(i + 4) {
            match self.tokens[j].word.as_str() {
                "on" | "off" => return Some(j),
                _ if matches!(self.role_at(j), Some(Role::Ota | Role::Determiner | Role::Filler)) => {}
                _ => break,
            }
        }
        None
    }

    /// A verb form right after cancel/enable/disable is what they act on: "cancel update",
    /// "disable update for X", "allow upgrades".
    fn object_of_command(&self, i: usize) -> bool {
        self.tokens[..i]
            .iter()
            .enumerate()
            .rev()
            .find(|(j, _)| {
                !self.covered[*j] && !matches!(self.role_at(*j), Some(Role::Determiner | Role::Ota | Role::Firmware))
            })
            .is_some_and(|(j, _)| {
                matches!(self.role_at(j), Some(Role::Cancel | Role::Pause | Role::Enable | Role::Disable))
            })
    }

    fn negated_before(&self, i: usize) -> bool {
        self.tokens[..i]
            .iter()
            .enumerate()
            .rev()
            .take(3)
            .find(|(j, _)| !matches!(self.role_at(*j), Some(Role::Noise)))
            .is_some_and(|(j, _)| self.role_at(j) == Some(Role::Negation))
    }

    /// Only politeness before it: "please roll out ...", "let's roll out ...".
    fn opens_request(&self, i: usize) -> bool {
        (0..i).all(|j| matches!(self.role_at(j), Some(Role::Noise | Role::Go | Role::Connector)))
    }
}

/// A one-letter typo of a verb long enough for that to be unambiguous.
fn typo_role(word: &str) -> Option<Role> {
    let mut found = None;
    for (verb, role) in TYPO_TOLERANT {
        if within(word, verb, 1).is_some() {
            match found {
                Some(r) if r != role => return None,
                _ => found = Some(role),
            }
        }
    }
    found
}
