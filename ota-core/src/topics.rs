//! The MQTT topic grammar of AWS IoT's reserved topics, in one place for the device, the
//! local engine and endpoint, and `ota-aws`: the Jobs API and the device shadow (classic
//! and named) under `$aws/things/{thing}/`, and the Commands API under
//! `$aws/commands/things/{thing}/executions/{id}/` (the device's commands, see
//! [`crate::command`]), and the devices' telemetry topic `dt/ota/{thing}/telemetry`.
//!
//! Building and parsing are inverses: [`ThingTopic::to_topic`] writes what [`parse`] reads
//! back. Parsing is structural and allocates nothing: every level must be non-empty and
//! free of the MQTT wildcards `+` and `#` (a topic *name* never holds one), and the known
//! shapes are recognized; whether a level is a valid thing name or job id is for the caller
//! to check with [`crate::names`], so each keeps its own answer to a bad name (a device
//! ignores it, the engine replies `rejected`). Building takes any level, so a `+` builds a
//! subscription filter (see [`WILDCARD`]).

use std::fmt::Write;

/// The prefix under which every thing's Jobs and shadow topics live.
pub const THINGS_PREFIX: &str = "$aws/things/";

/// The prefix of the Commands API's topics.
pub const COMMANDS_PREFIX: &str = "$aws/commands/things/";

/// The job id level that names "the next pending job" (`jobs/$next/get`).
pub const NEXT_JOB: &str = "$next";

/// A single-level wildcard, for building subscription filters (`jobs/+/update/accepted`).
pub const WILDCARD: &str = "+";

/// The answer on a request's topic: `.../accepted` or `.../rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    Accepted,
    Rejected,
}

impl Reply {
    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Accepted => "accepted",
            Reply::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Reply::Accepted),
            "rejected" => Some(Reply::Rejected),
            _ => None,
        }
    }
}

/// A topic of the Jobs API, below `$aws/things/{thing}/jobs/`. `None` replies are the
/// request a device publishes; `Some` the answer it subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobsTopic<'a> {
    /// `jobs/notify`: the list of pending executions changed.
    Notify,
    /// `jobs/notify-next`: the next pending execution changed.
    NotifyNext,
    /// `jobs/get[/reply]`: list the pending executions.
    List(Option<Reply>),
    /// `jobs/start-next[/reply]`: start the next pending execution.
    StartNext(Option<Reply>),
    /// `jobs/{jobId}/get[/reply]`; the job id may be [`NEXT_JOB`].
    Get(&'a str, Option<Reply>),
    /// `jobs/{jobId}/update[/reply]`: a device reports an execution's status.
    Update(&'a str, Option<Reply>),
}

/// What is asked of a shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowOp {
    Update,
    Get,
    Delete,
}

impl ShadowOp {
    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOp::Update => "update",
            ShadowOp::Get => "get",
            ShadowOp::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "update" => Some(ShadowOp::Update),
            "get" => Some(ShadowOp::Get),
            "delete" => Some(ShadowOp::Delete),
            _ => None,
        }
    }
}

/// The shadow service's answers. `Delta` and `Documents` follow updates only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowReply {
    Accepted,
    Rejected,
    Delta,
    Documents,
}

impl ShadowReply {
    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowReply::Accepted => "accepted",
            ShadowReply::Rejected => "rejected",
            ShadowReply::Delta => "delta",
            ShadowReply::Documents => "documents",
        }
    }

    fn parse(op: ShadowOp, s: &str) -> Option<Self> {
        match (op, s) {
            (_, "accepted") => Some(ShadowReply::Accepted),
            (_, "rejected") => Some(ShadowReply::Rejected),
            (ShadowOp::Update, "delta") => Some(ShadowReply::Delta),
            (ShadowOp::Update, "documents") => Some(ShadowReply::Documents),
            _ => None,
        }
    }
}

/// A shadow topic: `shadow/{op}[/reply]` (the classic shadow) or
/// `shadow/name/{name}/{op}[/reply]` (a named shadow, e.g. `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShadowTopic<'a> {
    /// `None`: the classic (unnamed) shadow.
    pub name: Option<&'a str>,
    pub op: ShadowOp,
    pub reply: Option<ShadowReply>,
}

impl ShadowTopic<'static> {
    /// The classic shadow's `op` request.
    pub const fn classic(op: ShadowOp) -> Self {
        ShadowTopic { name: None, op, reply: None }
    }
}

/// One of a thing's reserved topics, without the thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThingTopic<'a> {
    Jobs(JobsTopic<'a>),
    Shadow(ShadowTopic<'a>),
}

impl<'a> ThingTopic<'a> {
    /// The answer `reply` to this request: `jobs/{id}/update` → `jobs/{id}/update/accepted`,
    /// `shadow/get` → `shadow/get/rejected`. The notify topics have no answers and come back
    /// as they are.
    pub fn with_reply(self, reply: Reply) -> ThingTopic<'a> {
        match self {
            ThingTopic::Jobs(j) => ThingTopic::Jobs(match j {
                JobsTopic::Notify | JobsTopic::NotifyNext => j,
                JobsTopic::List(_) => JobsTopic::List(Some(reply)),
                JobsTopic::StartNext(_) => JobsTopic::StartNext(Some(reply)),
                JobsTopic::Get(id, _) => JobsTopic::Get(id, Some(reply)),
                JobsTopic::Update(id, _) => JobsTopic::Update(id, Some(reply)),
            }),
            ThingTopic::Shadow(s) => ThingTopic::Shadow(ShadowTopic {
                reply: Some(match reply {
                    Reply::Accepted => ShadowReply::Accepted,
                    Reply::Rejected => ShadowReply::Rejected,
                }),
                ..s
            }),
        }
    }

    /// The full topic for `thing` (or `+`, for a filter over every thing).
    pub fn to_topic(&self, thing: &str) -> String {
        let mut out = String::with_capacity(THINGS_PREFIX.len() + thing.len() + 40);
        out.push_str(THINGS_PREFIX);
        out.push_str(thing);
        out.push('/');
        self.write_rest(&mut out);
        out
    }

    /// Appends the part below `$aws/things/{thing}/` to `out`.
    pub fn write_rest(&self, out: &mut String) {
        let reply = |out: &mut String, r: Option<&'static str>| {
            if let Some(r) = r {
                out.push('/');
                out.push_str(r);
            }
        };
        match *self {
            ThingTopic::Jobs(j) => {
                out.push_str("jobs/");
                match j {
                    JobsTopic::Notify => out.push_str("notify"),
                    JobsTopic::NotifyNext => out.push_str("notify-next"),
                    JobsTopic::List(r) => {
                        out.push_str("get");
                        reply(out, r.map(Reply::as_str));
                    }
                    JobsTopic::StartNext(r) => {
                        out.push_str("start-next");
                        reply(out, r.map(Reply::as_str));
                    }
                    JobsTopic::Get(id, r) | JobsTopic::Update(id, r) => {
                        let verb = if matches!(j, JobsTopic::Get(..)) { "get" } else { "update" };
                        let _ = write!(out, "{id}/{verb}");
                        reply(out, r.map(Reply::as_str));
                    }
                }
            }
            ThingTopic::Shadow(s) => {
                out.push_str("shadow/");
                if let Some(name) = s.name {
                    let _ = write!(out, "name/{name}/");
                }
                out.push_str(s.op.as_str());
                reply(out, s.reply.map(ShadowReply::as_str));
            }
        }
    }
}

/// A level of a topic name: non-empty, no wildcard (and no separator).
fn level(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains(['+', '#', '/'])).then_some(s)
}

/// An optional last level: `Some(None)` when absent, `Some(Some(_))` when it reads as `f`
/// says, `None` when it is there but malformed.
fn optional<T>(l: Option<Option<&str>>, f: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    match l {
        None => Some(None),
        Some(l) => Some(Some(f(l?)?)),
    }
}

/// The thing and the rest of a topic under `$aws/things/`: `None` unless the thing level
/// and something below it are there.
pub fn split_thing(topic: &str) -> Option<(&str, &str)> {
    let (thing, rest) = topic.strip_prefix(THINGS_PREFIX)?.split_once('/')?;
    (level(thing).is_some() && !rest.is_empty()).then_some((thing, rest))
}

/// Parses a topic under `$aws/things/`: the thing level and which of its topics it is.
/// `None` for any other topic (another prefix, an unknown shape, an empty level or a
/// wildcard).
pub fn parse(topic: &str) -> Option<(&str, ThingTopic<'_>)> {
    let (thing, rest) = split_thing(topic)?;
    Some((thing, parse_rest(rest)?))
}

/// [`parse`] for the topics of one `thing` (a device reading its own): `None` for
/// another thing's.
pub fn parse_for<'a>(thing: &str, topic: &'a str) -> Option<ThingTopic<'a>> {
    let rest = topic.strip_prefix(THINGS_PREFIX)?.strip_prefix(thing)?.strip_prefix('/')?;
    level(thing)?;
    parse_rest(rest)
}

/// Parses the part below `$aws/things/{thing}/`.
pub fn parse_rest(rest: &str) -> Option<ThingTopic<'_>> {
    let mut levels = rest.split('/');
    let first = levels.next()?;
    let mut levels = levels.map(level);
    let mut next = || levels.next();
    let topic = match first {
        "jobs" => ThingTopic::Jobs(match next()?? {
            "notify" => JobsTopic::Notify,
            "notify-next" => JobsTopic::NotifyNext,
            "get" => JobsTopic::List(optional(next(), Reply::parse)?),
            "start-next" => JobsTopic::StartNext(optional(next(), Reply::parse)?),
            id => {
                let verb = next()??;
                let reply = optional(next(), Reply::parse)?;
                match verb {
                    "get" => JobsTopic::Get(id, reply),
                    "update" => JobsTopic::Update(id, reply),
                    _ => return None,
                }
            }
        }),
        "shadow" => {
            let mut op = next()??;
            let mut name = None;
            if op == "name" {
                name = Some(next()??);
                op = next()??;
            }
            let op = ShadowOp::parse(op)?;
            let reply = optional(next(), |r| ShadowReply::parse(op, r))?;
            ThingTopic::Shadow(ShadowTopic { name, op, reply })
        }
        _ => return None,
    };
    // Nothing may follow a complete topic.
    next().is_none().then_some(topic)
}

/// The Commands API's topics of one command execution
/// (`$aws/commands/things/{thing}/executions/{id}/...`), JSON payloads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandTopic {
    /// `request/json`: cloud → device, the command.
    Request,
    /// `response/json`: device → cloud, the execution's status.
    Response,
    /// `response/accepted/json` or `response/rejected/json`: the answer to a response.
    ResponseReply(Reply),
}

impl CommandTopic {
    /// The full topic for execution `id` of `thing` (either may be `+`, for a filter).
    pub fn to_topic(&self, thing: &str, id: &str) -> String {
        let tail = match self {
            CommandTopic::Request => "request/json",
            CommandTopic::Response => "response/json",
            CommandTopic::ResponseReply(Reply::Accepted) => "response/accepted/json",
            CommandTopic::ResponseReply(Reply::Rejected) => "response/rejected/json",
        };
        format!("{COMMANDS_PREFIX}{thing}/executions/{id}/{tail}")
    }
}

/// Parses a Commands API topic: (thing, execution id, which one).
pub fn parse_command(topic: &str) -> Option<(&str, &str, CommandTopic)> {
    let rest = topic.strip_prefix(COMMANDS_PREFIX)?;
    let mut levels = rest.split('/').map(level);
    let thing = levels.next()??;
    if levels.next()?? != "executions" {
        return None;
    }
    let id = levels.next()??;
    let kind = match (levels.next()??, levels.next()??) {
        ("request", "json") => CommandTopic::Request,
        ("response", "json") => CommandTopic::Response,
        ("response", reply) => {
            let reply = Reply::parse(reply)?;
            if levels.next()?? != "json" {
                return None;
            }
            CommandTopic::ResponseReply(reply)
        }
        _ => return None,
    };
    levels.next().is_none().then_some((thing, id, kind))
}

/// The prefix of the devices' telemetry topics: `dt/ota/{thing}/telemetry` (a `dt/`
/// data topic, as AWS IoT's topic design guidance names telemetry; not a reserved topic).
pub const TELEMETRY_PREFIX: &str = "dt/ota/";

/// The named shadow that holds a device's configuration (desired by operators, reported
/// by the device).
pub const CONFIG_SHADOW: &str = "config";

/// The telemetry topic of `thing` (or `+`, for a filter over every thing).
pub fn telemetry_topic(thing: &str) -> String {
    format!("{TELEMETRY_PREFIX}{thing}/telemetry")
}

/// The thing of a telemetry topic; `None` for any other topic.
pub fn parse_telemetry(topic: &str) -> Option<&str> {
    let thing = topic.strip_prefix(TELEMETRY_PREFIX)?.strip_suffix("/telemetry")?;
    level(thing)
}

impl ShadowTopic<'_> {
    /// Named shadow `name`'s `op` request.
    pub const fn named(name: &str, op: ShadowOp) -> ShadowTopic<'_> {
        ShadowTopic { name: Some(name), op, reply: None }
    }
}

/// The thing a device topic belongs to, whichever family it is in: its Jobs and shadow
/// topics, its Commands API topics, or its telemetry. `None` for anything else (a
/// wildcard, an unknown shape, another prefix). The endpoint routes and confines by it.
pub fn thing_of(topic: &str) -> Option<&str> {
    if let Some((thing, _)) = parse(topic) {
        return Some(thing);
    }
    if let Some((thing, _, _)) = parse_command(topic) {
        return Some(thing);
    }
    parse_telemetry(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(j: JobsTopic<'static>) -> ThingTopic<'static> {
        ThingTopic::Jobs(j)
    }

    fn shadow(name: Option<&'static str>, op: ShadowOp, reply: Option<ShadowReply>) -> ThingTopic<'static> {
        ThingTopic::Shadow(ShadowTopic { name, op, reply })
    }

    /// Every shape, with the topic AWS IoT spells for it.
    fn table() -> Vec<(ThingTopic<'static>, &'static str)> {
        use JobsTopic::{Get, List, Notify, NotifyNext, StartNext, Update};
        use ShadowOp::{Delete, Get as SGet, Update as SUpdate};
        vec![
            (jobs(Notify), "jobs/notify"),
            (jobs(NotifyNext), "jobs/notify-next"),
            (jobs(List(None)), "jobs/get"),
            (jobs(List(Some(Reply::Accepted))), "jobs/get/accepted"),
            (jobs(StartNext(None)), "jobs/start-next"),
            (jobs(StartNext(Some(Reply::Rejected))), "jobs/start-next/rejected"),
            (jobs(Get(NEXT_JOB, None)), "jobs/$next/get"),
            (jobs(Get(NEXT_JOB, Some(Reply::Accepted))), "jobs/$next/get/accepted"),
            (jobs(Get("job-1", Some(Reply::Rejected))), "jobs/job-1/get/rejected"),
            (jobs(Update("job-1", None)), "jobs/job-1/update"),
            (jobs(Update("job-1", Some(Reply::Accepted))), "jobs/job-1/update/accepted"),
            (shadow(None, SUpdate, None), "shadow/update"),
            (shadow(None, SUpdate, Some(ShadowReply::Delta)), "shadow/update/delta"),
            (shadow(None, SUpdate, Some(ShadowReply::Documents)), "shadow/update/documents"),
            (shadow(None, SGet, Some(ShadowReply::Accepted)), "shadow/get/accepted"),
            (shadow(None, Delete, Some(ShadowReply::Rejected)), "shadow/delete/rejected"),
            (shadow(Some("config"), SUpdate, None), "shadow/name/config/update"),
            (shadow(Some("config"), SUpdate, Some(ShadowReply::Delta)), "shadow/name/config/update/delta"),
            (shadow(Some("config"), SGet, Some(ShadowReply::Accepted)), "shadow/name/config/get/accepted"),
        ]
    }

    #[test]
    fn every_topic_builds_as_aws_spells_it_and_parses_back() {
        for (topic, rest) in table() {
            let full = format!("$aws/things/pet_feeder-01/{rest}");
            assert_eq!(topic.to_topic("pet_feeder-01"), full);
            assert_eq!(parse(&full), Some(("pet_feeder-01", topic)), "{full}");
            assert_eq!(parse_for("pet_feeder-01", &full), Some(topic), "{full}");
            assert_eq!(parse_for("pet_feeder-02", &full), None, "another thing's: {full}");
            assert_eq!(split_thing(&full), Some(("pet_feeder-01", rest)));
        }
    }

    #[test]
    fn a_request_names_its_answers() {
        let update = jobs(JobsTopic::Update("j1", None));
        assert_eq!(update.with_reply(Reply::Rejected).to_topic("d"), "$aws/things/d/jobs/j1/update/rejected");
        let get = shadow(Some("config"), ShadowOp::Get, None);
        assert_eq!(get.with_reply(Reply::Accepted).to_topic("d"), "$aws/things/d/shadow/name/config/get/accepted");
        assert_eq!(jobs(JobsTopic::NotifyNext).with_reply(Reply::Accepted), jobs(JobsTopic::NotifyNext));
    }

    #[test]
    fn filters_build_with_wildcards_and_are_not_topic_names() {
        let filter = jobs(JobsTopic::Update(WILDCARD, Some(Reply::Accepted))).to_topic("d-1");
        assert_eq!(filter, "$aws/things/d-1/jobs/+/update/accepted");
        assert_eq!(parse(&filter), None, "a filter is not a topic name");
        assert_eq!(parse("$aws/things/+/jobs/notify-next"), None);
        assert_eq!(parse("$aws/things/#"), None);
        assert_eq!(parse("$aws/things/d-1/shadow/name/#"), None);
    }

    #[test]
    fn malformed_and_foreign_topics_do_not_parse() {
        for bad in [
            "$aws/things/d-1",
            "$aws/things/d-1/",
            "$aws/things//jobs/notify",
            "$aws/things/d-1/jobs",
            "$aws/things/d-1/jobs/",
            "$aws/things/d-1/jobs/notify/accepted",
            "$aws/things/d-1/jobs/get/maybe",
            "$aws/things/d-1/jobs/j1",
            "$aws/things/d-1/jobs/j1/delete",
            "$aws/things/d-1/jobs//update",
            "$aws/things/d-1/jobs/j1/update/accepted/more",
            "$aws/things/d-1/shadow",
            "$aws/things/d-1/shadow/patch",
            "$aws/things/d-1/shadow/get/delta",
            "$aws/things/d-1/shadow/name/config",
            "$aws/things/d-1/shadow/name//update",
            "$aws/things/d-1/shadow/update/accepted/x",
            "$aws/things/d-1/tunnels/notify",
            "aws/things/d-1/jobs/notify",
            "$aws/thing/d-1/jobs/notify",
            "dt/ota/d-1/telemetry",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // The structure is checked here; the names are the caller's (JobId::parse etc.).
        assert_eq!(parse("$aws/things/d-1/jobs/bad id/update"), Some(("d-1", jobs(JobsTopic::Update("bad id", None)))));
        assert_eq!(split_thing("$aws/things/d-1/anything/below"), Some(("d-1", "anything/below")));
        assert_eq!(split_thing("$aws/things/+/jobs"), None);
    }

    #[test]
    fn command_topics_follow_the_commands_api() {
        let cases = [
            (CommandTopic::Request, "request/json"),
            (CommandTopic::Response, "response/json"),
            (CommandTopic::ResponseReply(Reply::Accepted), "response/accepted/json"),
            (CommandTopic::ResponseReply(Reply::Rejected), "response/rejected/json"),
        ];
        for (kind, tail) in cases {
            let full = format!("$aws/commands/things/pet_feeder-01/executions/e-1/{tail}");
            assert_eq!(kind.to_topic("pet_feeder-01", "e-1"), full);
            assert_eq!(parse_command(&full), Some(("pet_feeder-01", "e-1", kind)), "{full}");
        }
        for bad in [
            "$aws/commands/things/d-1/executions/e-1/request",
            "$aws/commands/things/d-1/executions/e-1/request/cbor",
            "$aws/commands/things/d-1/executions/e-1/response/json/x",
            "$aws/commands/things/d-1/executions/+/request/json",
            "$aws/commands/things/d-1/execution/e-1/request/json",
            "$aws/commands/things/d-1/executions/e-1/response/accepted",
            "$aws/things/d-1/executions/e-1/request/json",
        ] {
            assert_eq!(parse_command(bad), None, "{bad}");
        }
        assert_eq!(
            CommandTopic::Request.to_topic("d-1", WILDCARD),
            "$aws/commands/things/d-1/executions/+/request/json",
            "the device's subscription"
        );
    }

    #[test]
    fn telemetry_and_config_topics() {
        assert_eq!(telemetry_topic("co2_monitor-01"), "dt/ota/co2_monitor-01/telemetry");
        assert_eq!(parse_telemetry("dt/ota/co2_monitor-01/telemetry"), Some("co2_monitor-01"));
        for bad in
            ["dt/ota/+/telemetry", "dt/ota//telemetry", "dt/ota/a/b/telemetry", "dt/ota/a/telemetry/x", "dt/ota/a"]
        {
            assert_eq!(parse_telemetry(bad), None, "{bad}");
        }
        assert_eq!(telemetry_topic(WILDCARD), "dt/ota/+/telemetry", "the cloud's filter");
        let delta =
            ShadowTopic { reply: Some(ShadowReply::Delta), ..ShadowTopic::named(CONFIG_SHADOW, ShadowOp::Update) };
        assert_eq!(ThingTopic::Shadow(delta).to_topic("d-1"), "$aws/things/d-1/shadow/name/config/update/delta");
    }

    #[test]
    fn every_family_names_its_thing() {
        assert_eq!(thing_of("$aws/things/d-1/jobs/notify-next"), Some("d-1"));
        assert_eq!(thing_of("$aws/things/d-1/shadow/name/config/update"), Some("d-1"));
        assert_eq!(thing_of("$aws/commands/things/d-1/executions/e-1/response/json"), Some("d-1"));
        assert_eq!(thing_of("dt/ota/d-1/telemetry"), Some("d-1"));
        for bad in [
            "$aws/things/d-1/tunnels/notify",
            "$aws/commands/things/d-1/executions/+/request/json",
            "dt/ota/+/telemetry",
            "dt/other/d-1/telemetry",
            "",
        ] {
            assert_eq!(thing_of(bad), None, "{bad}");
        }
    }

    /// Every topic of up to `depth` levels from `words` below `prefix`, in turn.
    fn every_topic(prefix: &str, words: &[&str], depth: usize, mut f: impl FnMut(&str)) {
        let mut levels = vec![0usize; 0];
        loop {
            let rest = levels.iter().map(|&i| words[i]).collect::<Vec<_>>().join("/");
            f(&format!("{prefix}{rest}"));
            // The next sequence, shortest first.
            let mut k = levels.len();
            loop {
                if k == 0 {
                    if levels.len() == depth {
                        return;
                    }
                    levels = vec![0; levels.len() + 1];
                    break;
                }
                k -= 1;
                levels[k] += 1;
                if levels[k] < words.len() {
                    break;
                }
                levels[k] = 0;
            }
        }
    }

    /// Whatever parses is written back exactly (one spelling per topic): every combination
    /// of the grammar's words (and a bad level or two) up to five levels deep.
    #[test]
    fn what_parses_builds_back_to_the_same_topic() {
        let words = [
            "jobs",
            "shadow",
            "name",
            "get",
            "update",
            "delete",
            "notify-next",
            "accepted",
            "rejected",
            "delta",
            NEXT_JOB,
            "config",
            "j1",
            "+",
            "",
        ];
        let mut parsed = std::collections::BTreeSet::new();
        every_topic("$aws/things/d-1/", &words, 5, |t| {
            if let Some((thing, topic)) = parse(t) {
                assert_eq!(topic.to_topic(thing), t);
                parsed.insert(t.trim_start_matches("$aws/things/d-1/").to_string());
            }
        });
        for (_, rest) in table() {
            let rest = rest.replace("job-1", "j1");
            if rest.split('/').all(|l| words.contains(&l)) {
                assert!(parsed.contains(&rest), "{rest} did not parse");
            }
        }
        let words = ["executions", "request", "response", "accepted", "rejected", "json", "e1", "+", ""];
        let mut n = 0;
        every_topic("$aws/commands/things/", &words, 6, |t| {
            if let Some((thing, id, kind)) = parse_command(t) {
                assert_eq!(kind.to_topic(thing, id), t);
                n += 1;
            }
        });
        // Thing and id: any of the 7 words that are levels (not `+` or empty); 4 kinds.
        assert_eq!(n, 7 * 7 * 4);
    }

    proptest::proptest! {
        /// Names from AWS's alphabets survive a build and a parse.
        #[test]
        fn names_round_trip(
            thing in "[a-zA-Z0-9:_-]{1,128}",
            id in "[a-zA-Z0-9_-]{1,64}",
            name in "[a-zA-Z0-9:_-]{1,64}",
        ) {
            for topic in [
                ThingTopic::Jobs(JobsTopic::Update(&id, Some(Reply::Accepted))),
                ThingTopic::Jobs(JobsTopic::Get(&id, None)),
                ThingTopic::Shadow(ShadowTopic { name: Some(&name), op: ShadowOp::Update, reply: Some(ShadowReply::Delta) }),
            ] {
                let built = topic.to_topic(&thing);
                proptest::prop_assert_eq!(parse(&built), Some((thing.as_str(), topic)));
            }
            let built = CommandTopic::Response.to_topic(&thing, &id);
            proptest::prop_assert_eq!(parse_command(&built), Some((thing.as_str(), id.as_str(), CommandTopic::Response)));
        }
    }
}
