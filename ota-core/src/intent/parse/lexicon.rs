//! The words the engine knows, by the part they play in a request.
//!
//! A `match` on string literals keeps the lexicon free to build (nothing is precomputed per
//! call) and lets the compiler pick the comparisons. Words listed here are never read as
//! typo'd device types: "start" must not become `smart_plug`, nor "remove" `gesture_remote`.

/// What a known word contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Articles and "devices"-like nouns: harmless inside a list of targets.
    Filler,
    /// Also a filler; before a verb form it makes that form a noun ("the update").
    Determiner,
    Connector,
    /// "all", "every": the whole fleet when nothing narrower is named.
    Quantifier,
    /// "fleet", "everything": the whole fleet.
    Fleet,
    Pronoun,
    /// Politeness, injection attempts and other words that change nothing.
    Noise,
    Negation,
    /// Starts a list of targets to leave out.
    Exclude,
    /// "other" (than) and "apart" (from): exclusions only with their second word.
    ExcludeHead,
    Update,
    Rollback,
    /// "rollout": a verb at the start of a request, a noun elsewhere.
    Rollout,
    Cancel,
    Pause,
    Enable,
    Disable,
    /// Heads of two-word verbs: "roll back", "turn on", "go back".
    Roll,
    Turn,
    Go,
    Back,
    Off,
    RolloutNoun,
    RolloutNouns,
    Status,
    /// "going", "progress": about a rollout rather than the fleet.
    Progress,
    Read,
    Question,
    Firmware,
    /// The object of enable/disable: "OTA", "updates".
    Ota,
    /// Introduces a version: "to", "on", "older than".
    Marker,
    Latest,
    /// Words about what devices run: "installed", "failed".
    State,
}

/// The role of a lowercase word, if the engine knows it.
pub(super) fn role(word: &str) -> Option<Role> {
    use Role::*;
    Some(match word {
        "the" | "this" | "that" | "a" | "an" | "my" | "our" | "your" | "their" | "its" | "current" | "ongoing"
        | "active" | "last" | "pending" => Determiner,
        "devices" | "device" | "units" | "unit" | "boards" | "board" | "nodes" | "node" | "things" | "thing"
        | "types" | "type" | "kinds" | "kind" | "models" | "model" | "hardware" | "gadgets" | "gadget" | "esp32"
        | "esp32s" | "esp32s3" | "xiao" | "of" | "for" | "in" | "by" | "via" | "using" | "only" | "ones" | "one"
        | "any" | "also" | "too" | "then" | "just" | "both" | "same" | "group" | "groups" | "fleets" | "named"
        | "called" | "single" | "out" => Filler,
        "and" | "or" | "nor" | "plus" | "&" | "+" | "but" => Connector,
        "all" | "every" | "each" => Quantifier,
        "fleet" | "everything" | "whole" | "entire" | "fleetwide" | "everywhere" => Fleet,
        "it" | "them" | "they" | "those" | "these" => Pronoun,
        "not" | "don't" | "dont" | "never" | "no" | "doesn't" | "doesnt" | "isn't" | "isnt" | "aren't" | "arent"
        | "won't" | "wont" | "shouldn't" | "can't" | "cant" | "cannot" => Negation,
        "except" | "excluding" | "exclude" | "besides" | "without" | "skip" | "skipping" | "ignore" | "ignoring"
        | "omit" | "omitting" | "leave" | "leaving" => Exclude,
        "other" | "apart" => ExcludeHead,
        "update" | "upgrade" | "flash" | "reflash" | "deploy" | "install" | "push" | "move" | "put" | "bring"
        | "apply" | "migrate" | "ship" | "set" => Update,
        "rollback" | "revert" | "downgrade" | "restore" | "undo" => Rollback,
        "rollout" => Rollout,
        "cancel" | "stop" | "abort" | "halt" | "kill" | "terminate" | "end" => Cancel,
        "pause" | "suspend" => Pause,
        "enable" | "allow" | "permit" | "unblock" | "unfreeze" | "unlock" | "activate" | "reactivate" | "reenable" => {
            Enable
        }
        "disable" | "block" | "forbid" | "prevent" | "freeze" | "lock" | "deactivate" => Disable,
        "roll" | "rolling" => Roll,
        "turn" | "switch" => Turn,
        "go" => Go,
        "back" => Back,
        "off" => Off,
        "deployment" | "job" | "campaign" => RolloutNoun,
        "rollouts" | "deployments" | "jobs" | "campaigns" | "rollbacks" => RolloutNouns,
        "status" | "state" | "states" | "health" | "overview" | "summary" | "stats" | "statistics" | "doing" => Status,
        "progress" | "going" | "progressing" | "inprogress" | "done" | "finished" | "complete" | "completed" => {
            Progress
        }
        "list" | "show" | "display" | "get" | "see" | "view" | "give" | "tell" | "find" | "count" | "check"
        | "monitor" | "watch" | "track" | "describe" | "print" | "report" | "fetch" | "lookup" | "look" | "query"
        | "summarize" | "summarise" => Read,
        "what" | "which" | "how" | "where" | "when" | "who" | "why" | "whats" | "what's" | "hows" | "how's"
        | "many" | "much" | "whos" | "who's" => Question,
        "firmware" | "firmwares" | "version" | "versions" | "release" | "releases" | "build" | "builds" | "image"
        | "images" | "catalog" | "catalogue" | "binary" | "binaries" | "fw" | "available" | "exist" | "exists"
        | "artifacts" | "artifact" | "v" => Firmware,
        "ota" | "otas" | "fota" | "updates" | "upgrades" | "flashing" | "overtheair" | "autoupdate" | "autoupdates"
        | "updating" | "upgrading" | "deploying" => Ota,
        "to" | "onto" | "into" | "at" | "on" | "from" | "with" | "than" | "older" | "lower" | "earlier" | "less"
        | "below" | "before" | "under" | "prior" | "newer" | "higher" | "greater" | "above" | "after" | "since"
        | "run" | "runs" | "running" | "have" | "has" | "having" | "still" | "currently" | "pre" | "over"
        | "beyond" => Marker,
        "latest" | "newest" | "recent" => Latest,
        "updated" | "upgraded" | "deployed" | "flashed" | "installed" | "reverted" | "downgraded" | "restored"
        | "rolled" | "cancelled" | "canceled" | "stopped" | "aborted" | "enabled" | "disabled" | "blocked"
        | "allowed" | "paused" | "failed" | "failing" | "failure" | "failures" | "succeeded" | "successful"
        | "success" | "queued" | "stuck" | "offline" | "online" | "connected" | "disconnected" | "healthy"
        | "broken" | "error" | "errors" | "reported" | "reporting" | "outdated" | "uptodate" | "date" | "behind"
        | "remaining" | "left" | "need" | "needs" | "migrated" | "pushed" | "applied" | "locked" | "deploys"
        | "updater" | "installs" | "reverts" | "cancels" | "enables" | "disables" | "upgrader" => State,
        "please" | "pls" | "plz" | "kindly" | "thanks" | "thank" | "you" | "i" | "me" | "we" | "us" | "can"
        | "could" | "would" | "will" | "shall" | "should" | "may" | "might" | "must" | "let" | "lets" | "let's"
        | "ahead" | "want" | "wanna" | "like" | "make" | "sure" | "ok" | "okay" | "hey" | "hi" | "hello" | "yes"
        | "now" | "right" | "away" | "immediately" | "asap" | "today" | "tonight" | "quickly" | "fast" | "soon"
        | "urgently" | "urgent" | "again" | "as" | "admin" | "administrator" | "root" | "sudo" | "superuser"
        | "force" | "forced" | "forcefully" | "forcibly" | "bypass" | "bypassing" | "override" | "overriding"
        | "rules" | "rule" | "checks" | "safety" | "security" | "restrictions" | "restriction" | "limits" | "limit"
        | "policy" | "policies" | "permission" | "permissions" | "privileges" | "privilege" | "instructions"
        | "previous" | "mode" | "authorized" | "authorised" | "god" | "developer" | "emergency" | "guard"
        | "guards" | "guardrails" | "validation" | "verification" | "confirmation" | "prompt" | "system" | "am"
        | "be" | "is" | "are" | "was" | "were" | "been" | "being" | "do" | "does" | "did" | "had" | "got" | "there"
        | "here" | "so" | "if" | "yet" | "already" | "new" | "later" | "start" | "begin" | "remove" | "found"
        | "stale" | "most" | "it's" | "i'm" | "im" | "i'd" | "we're" | "there's" | "some" | "well" | "up"
        | "anyway" | "actually" | "really" | "mine" | "note" | "quick" | "everyone" | "etc" | "frankly" | "hereby"
        | "order" | "command" | "commands" | "say" | "said" | "told" | "telling" | "good" | "great" | "fine"
        | "cool" | "perfect" | "alright" | "automatic" | "automatically" | "auto" | "automated" => Noise,
        _ => return None,
    })
}

/// Verbs whose one-letter typos are still read as the verb ("upgarde", "updte"). Short
/// verbs ("flash", "push") are left out: one letter off, they are other English words.
pub(super) const TYPO_TOLERANT: [(&str, Role); 16] = [
    ("update", Role::Update),
    ("upgrade", Role::Update),
    ("deploy", Role::Update),
    ("install", Role::Update),
    ("reflash", Role::Update),
    ("migrate", Role::Update),
    ("rollback", Role::Rollback),
    ("revert", Role::Rollback),
    ("downgrade", Role::Rollback),
    ("rollout", Role::Rollout),
    ("cancel", Role::Cancel),
    ("enable", Role::Enable),
    ("disable", Role::Disable),
    ("status", Role::Status),
    ("firmware", Role::Firmware),
    ("rollouts", Role::RolloutNouns),
];

/// Words that open a question: a request that starts with one of them only reads.
pub(super) fn opens_question(word: &str) -> bool {
    matches!(
        word,
        "what"
            | "which"
            | "whats"
            | "what's"
            | "how"
            | "hows"
            | "how's"
            | "where"
            | "when"
            | "who"
            | "why"
            | "is"
            | "are"
            | "does"
            | "do"
            | "did"
            | "has"
            | "have"
            | "was"
            | "were"
            | "should"
    )
}

/// Words skipped when looking back from a version for the word that introduces it
/// ("to the firmware version 2.0.0").
pub(super) fn version_lead_in(word: &str) -> bool {
    matches!(
        word,
        "version"
            | "versions"
            | "firmware"
            | "fw"
            | "release"
            | "build"
            | "image"
            | "v"
            | "the"
            | "a"
            | "an"
            | "exactly"
            | "just"
            | "only"
            | "same"
    )
}
