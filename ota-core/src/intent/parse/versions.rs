//! Which version a prompt asks for and which versions it selects devices by.
//!
//! The word in front of a version decides its part: "to 2.0.0" is the target, "on 1.x",
//! "running 1.0.0" and "from 1.0.0" select devices by what they run now, "older than 2.0.0"
//! selects those below. A bare number counts as a version only where such a word (or
//! "version") says so, so "3 feeders" never becomes version 3.

use crate::version::{FirmwareVersion, VersionFilter, VersionRequest};

use super::lexicon::{self, Role};
use super::tokens::{Kind, Token};

/// The part a version plays in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Target,
    Filter,
    Below,
    /// "with 2.0.0": the target, unless another version is the target.
    With,
    /// No word says: the target when it is the only one.
    Unmarked,
    /// A selection the request types cannot express ("newer than", "not on").
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
pub(super) struct Mention {
    /// Without `v`: `2.0.0`, `1.x`, `2`.
    pub text: String,
    pub slot: Slot,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Versions {
    pub mentions: Vec<Mention>,
    /// "to latest", "the newest version".
    pub latest: bool,
    /// "on the latest": not a condition devices can be selected by.
    pub latest_filter: bool,
    /// "not on the latest", "isn't running the latest": devices whose type's latest version
    /// they do not run (per type, so no [`VersionFilter`]).
    pub not_latest: bool,
    /// Bare numbers no word marks as versions.
    pub stray: Vec<String>,
}

/// What an update asks for.
#[derive(Debug, Clone, Default)]
pub(super) struct Chosen {
    pub target: Option<VersionRequest>,
    pub filter: Option<VersionFilter>,
}

const UNSUPPORTED_FILTER: &str =
    "I can select devices only by the version they run now: \"on 1.x\", \"still on 1.0.0\" or \"older than 2.0.0\"";

/// The versions of the prompt; tokens marked in `skip` (device numbers) are not versions.
pub(super) fn find(tokens: &[Token<'_>], skip: &[bool]) -> Versions {
    let mut out = Versions::default();
    for (i, t) in tokens.iter().enumerate() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        match t.kind {
            Kind::Version { below } => {
                let slot = if below { Slot::Below } else { govern(tokens, i).0 };
                out.mentions.push(Mention { text: t.word.clone(), slot });
            }
            Kind::Number => match govern(tokens, i) {
                (Slot::Unmarked, false) => out.stray.push(t.raw.to_string()),
                (slot, _) => out.mentions.push(Mention { text: t.word.clone(), slot }),
            },
            Kind::Word if lexicon::role(&t.word) == Some(Role::Latest) => {
                let at = match t.word.as_str() {
                    "recent" if i > 0 && tokens[i - 1].word == "most" => i - 1,
                    "recent" => continue,
                    _ => i,
                };
                // "what is the latest firmware" asks about it; "still on the latest" selects by it.
                let asked_about = at > 0
                    && matches!(tokens[at - 1].word.as_str(), "is" | "are" | "was" | "whats" | "what's")
                    || at > 1
                        && tokens[at - 1].word == "the"
                        && matches!(tokens[at - 2].word.as_str(), "is" | "are" | "was" | "whats" | "what's");
                match govern(tokens, at).0 {
                    _ if asked_about => out.latest = true,
                    Slot::Unsupported("not on") => out.not_latest = true,
                    Slot::Filter | Slot::Below | Slot::Unsupported(_) => out.latest_filter = true,
                    _ => out.latest = true,
                }
            }
            _ => {}
        }
    }
    out
}

/// The slot of the version at `i`, from the word before it, and whether a word such as
/// "version" stood in between (which makes a bare number a version).
fn govern(tokens: &[Token<'_>], i: usize) -> (Slot, bool) {
    let mut j = i;
    let mut named = false;
    loop {
        if j == 0 {
            return (Slot::Unmarked, named);
        }
        j -= 1;
        let t = &tokens[j];
        if t.kind == Kind::Word && lexicon::version_lead_in(&t.word) {
            named |= matches!(t.word.as_str(), "version" | "versions" | "v" | "release" | "build" | "firmware" | "fw");
            continue;
        }
        break;
    }
    let marker = tokens[j].word.as_str();
    let before = if j > 0 { tokens[j - 1].word.as_str() } else { "" };
    let slot = match marker {
        "to" | "onto" | "into" if before == "prior" => Slot::Below,
        "to" | "onto" | "into" => Slot::Target,
        "at" if matches!(
            before,
            "still"
                | "currently"
                | "are"
                | "is"
                | "stuck"
                | "sitting"
                | "remain"
                | "remains"
                | "were"
                | "was"
                | "being"
        ) =>
        {
            Slot::Filter
        }
        "at" => Slot::Target,
        "on" | "running" | "run" | "runs" | "from" | "have" | "has" | "having" | "still" | "currently" | "are"
        | "is" | "remain" | "remains" => Slot::Filter,
        "with" => Slot::With,
        "than" if matches!(before, "older" | "lower" | "earlier" | "less" | "smaller") => Slot::Below,
        "than" => Slot::Unsupported("newer than"),
        "below" | "before" | "under" | "pre" => Slot::Below,
        "above" | "after" | "over" | "beyond" | "since" | "newer" | "higher" => Slot::Unsupported("newer than"),
        _ if matches!(lexicon::role(marker), Some(Role::Negation | Role::Exclude)) => Slot::Unsupported("not on"),
        _ => return (Slot::Unmarked, named),
    };
    if matches!(slot, Slot::Filter | Slot::Below) && negated(tokens, j) {
        return (Slot::Unsupported("not on"), named);
    }
    if slot == Slot::Target && negated_target(tokens, j) {
        return (Slot::Unsupported("not on"), named);
    }
    (slot, named)
}

/// "haven't been updated to 2.0.0", "that weren't moved to the latest": the devices *not* on
/// that version, which "to" alone would read the other way round.
fn negated_target(tokens: &[Token<'_>], marker: usize) -> bool {
    for t in tokens[..marker].iter().rev().take(5) {
        match lexicon::role(&t.word) {
            Some(Role::Negation) => return true,
            _ if matches!(
                t.word.as_str(),
                "been"
                    | "updated"
                    | "upgraded"
                    | "flashed"
                    | "moved"
                    | "migrated"
                    | "gone"
                    | "got"
                    | "yet"
                    | "already"
                    | "still"
                    | "have"
                    | "has"
                    | "are"
                    | "is"
                    | "were"
                    | "was"
                    | "being"
                    | "do"
                    | "does"
            ) => {}
            _ => return false,
        }
    }
    false
}

/// "not on 1.x", "aren't yet running 1.0.0", "except those on 1.0.0": a condition that
/// would select exactly the devices the speaker meant to leave out.
fn negated(tokens: &[Token<'_>], marker: usize) -> bool {
    for t in tokens[..marker].iter().rev().take(5) {
        match lexicon::role(&t.word) {
            Some(Role::Negation | Role::Exclude) => return true,
            _ if matches!(
                t.word.as_str(),
                "still"
                    | "currently"
                    | "yet"
                    | "already"
                    | "are"
                    | "is"
                    | "that"
                    | "which"
                    | "who"
                    | "were"
                    | "was"
                    | "being"
                    | "those"
                    | "ones"
                    | "the"
                    | "do"
                    | "does"
                    | "run"
                    | "running"
                    | "devices"
                    | "things"
            ) => {}
            _ => return false,
        }
    }
    false
}

impl Versions {
    /// Whether any version selects devices by what they run.
    pub fn selects_devices(&self) -> bool {
        self.latest_filter
            || self.not_latest
            || self.mentions.iter().any(|m| !matches!(m.slot, Slot::Target | Slot::Unmarked))
    }

    /// Distinct versions written as the one to install ("to 2.0.0").
    pub fn target_count(&self) -> usize {
        let mut seen: Vec<&str> = Vec::new();
        for m in self.mentions.iter().filter(|m| m.slot == Slot::Target) {
            if !seen.contains(&m.text.as_str()) {
                seen.push(&m.text);
            }
        }
        seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mentions.is_empty() && !self.latest && !self.latest_filter && !self.not_latest
    }

    /// The target and the current-version condition of an update or rollback.
    pub fn for_update(&self) -> Result<Chosen, String> {
        self.check_supported()?;
        let explicit = self.mentions.iter().any(|m| m.slot == Slot::Target);
        let mut targets: Vec<VersionRequest> = Vec::new();
        let mut filters: Vec<VersionFilter> = Vec::new();
        for m in &self.mentions {
            match m.slot {
                Slot::Target | Slot::Unmarked => push_new(&mut targets, request(&m.text)?),
                Slot::With if !explicit => push_new(&mut targets, request(&m.text)?),
                Slot::With | Slot::Filter => push_new(&mut filters, filter(&m.text)?),
                Slot::Below => push_new(&mut filters, below(&m.text)?),
                Slot::Unsupported(_) => {}
            }
        }
        if targets.len() > 1 {
            let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
            // Several changes, each with its own target and version, are read by
            // `changes::several` before this; these are versions it could not give a target each.
            if self.mentions.iter().filter(|m| m.slot == Slot::Target).count() == targets.len() {
                return Err(format!(
                    "I found several versions to install ({}), each after \"to\", and could not tell which devices each is for. Give each change its own target, e.g. \"update pet_feeder to {} and energy_meter to 2.0.0\", or send them one by one.",
                    list.join(", "),
                    list[0]
                ));
            }
            return Err(format!(
                "I found several versions to install ({}). Say the one to install after \"to\" and the one devices run now after \"on\", e.g. \"from 1.0.0 to 2.0.0\".",
                list.join(", ")
            ));
        }
        let mut target = targets.pop();
        if self.not_latest {
            // "update every device not on the latest": the latest, which leaves out the
            // devices already on it. Any other target would need a per-type condition.
            if !filters.is_empty() {
                return Err("Devices can be selected by one condition at a time: \"not on the latest\" or a version they run, not both.".into());
            }
            match &target {
                None | Some(VersionRequest::Latest) => {
                    return Ok(Chosen { target: Some(VersionRequest::Latest), filter: None });
                }
                Some(other) => {
                    return Err(format!(
                        "Devices not on the latest are updated to the latest, not to {other}: say \"to latest\", or select by the version they run (\"older than {other}\")."
                    ));
                }
            }
        }
        if self.latest {
            match &target {
                None => target = Some(VersionRequest::Latest),
                Some(VersionRequest::Partial { .. }) => {}
                Some(other) => {
                    return Err(format!("Both \"latest\" and {other} were asked for; say which one to install."));
                }
            }
        }
        if filters.len() > 1 {
            let list: Vec<String> = filters.iter().map(ToString::to_string).collect();
            return Err(format!(
                "Devices can be selected by one current version at a time, not {}.",
                list.join(" and ")
            ));
        }
        Ok(Chosen { target, filter: filters.pop() })
    }

    /// In a question, every version names what devices run.
    pub fn for_read(&self) -> Result<Option<VersionFilter>, String> {
        self.check_supported()?;
        let mut filters: Vec<VersionFilter> = Vec::new();
        for m in &self.mentions {
            let f = if m.slot == Slot::Below { below(&m.text)? } else { filter(&m.text)? };
            push_new(&mut filters, f);
        }
        if self.not_latest && !filters.is_empty() {
            return Err(
                "Ask about one condition at a time: \"not on the latest\" or a version they run, not both.".into()
            );
        }
        if filters.len() > 1 {
            let list: Vec<String> = filters.iter().map(ToString::to_string).collect();
            return Err(format!("Ask about one version at a time, not {}.", list.join(" and ")));
        }
        Ok(filters.pop())
    }

    fn check_supported(&self) -> Result<(), String> {
        if let Some(what) = self.mentions.iter().find_map(|m| match m.slot {
            Slot::Unsupported(what) => Some(what),
            _ => None,
        }) {
            return Err(format!("{UNSUPPORTED_FILTER}; \"{what}\" is not one of them."));
        }
        if self.latest_filter {
            return Err(format!("{UNSUPPORTED_FILTER}; name the version rather than \"latest\"."));
        }
        Ok(())
    }
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn request(text: &str) -> Result<VersionRequest, String> {
    let core = text.strip_suffix(".x").or_else(|| text.strip_suffix(".*")).unwrap_or(text);
    VersionRequest::parse(core).map_err(|e| e.to_string())
}

fn filter(text: &str) -> Result<VersionFilter, String> {
    VersionFilter::parse(text).map_err(|e| e.to_string())
}

/// "older than 2" means below 2.0.0: a partial version is padded with zeros.
fn below(text: &str) -> Result<VersionFilter, String> {
    match request(text)? {
        VersionRequest::Exact(v) => Ok(VersionFilter::Below(v)),
        VersionRequest::Partial { major, minor } => {
            Ok(VersionFilter::Below(FirmwareVersion::new(major, minor.unwrap_or(0), 0)))
        }
        VersionRequest::Latest => Err("\"older than latest\" is not a version".to_string()),
    }
}
