//! The AWS IoT Jobs and classic-shadow topics of one thing, and the translation of incoming
//! MQTT messages into machine events. Both backends (AWS IoT Core and the local device
//! endpoint) serve exactly these topics.

use crate::job::parse_execution;
use crate::names::{JobId, ThingName};
use crate::topics::{JobsTopic, NEXT_JOB, Reply, ShadowOp, ShadowTopic, ThingTopic, WILDCARD, parse_for};

use super::types::Event;

/// Topic names for one thing, spelled by [`crate::topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    thing: String,
    shadow_update: String,
}

impl Topics {
    /// Topics of `thing`.
    pub fn new(thing: &ThingName) -> Self {
        Topics {
            thing: thing.as_str().to_string(),
            shadow_update: ThingTopic::Shadow(ShadowTopic::classic(ShadowOp::Update)).to_topic(thing.as_str()),
        }
    }

    fn jobs(&self, topic: JobsTopic<'_>) -> String {
        ThingTopic::Jobs(topic).to_topic(&self.thing)
    }

    /// Cloud → device: the next pending job changed.
    pub fn notify_next(&self) -> String {
        self.jobs(JobsTopic::NotifyNext)
    }

    /// Device → cloud: ask for the next pending job.
    pub fn next_get(&self) -> String {
        self.jobs(JobsTopic::Get(NEXT_JOB, None))
    }

    /// The reply to [`Topics::next_get`].
    pub fn next_get_accepted(&self) -> String {
        self.jobs(JobsTopic::Get(NEXT_JOB, Some(Reply::Accepted)))
    }

    /// Device → cloud: a job execution's status.
    pub fn update(&self, job_id: &JobId) -> String {
        self.jobs(JobsTopic::Update(job_id.as_str(), None))
    }

    /// Replies to every job's status update (`+` is one job id).
    pub fn update_replies(&self) -> [String; 2] {
        [Reply::Accepted, Reply::Rejected].map(|r| self.jobs(JobsTopic::Update(WILDCARD, Some(r))))
    }

    /// Device → cloud: the shadow's reported state.
    pub fn shadow_update(&self) -> &str {
        &self.shadow_update
    }

    /// Turns an incoming message into an event. `None`: not a topic the machine handles, or
    /// a payload too broken to act on (logged by the caller, never fatal).
    pub fn parse(&self, topic: &str, payload: &[u8]) -> Option<Event<'static>> {
        let ThingTopic::Jobs(jobs) = parse_for(&self.thing, topic)? else { return None };
        match jobs {
            JobsTopic::NotifyNext => parse_execution(payload).ok().map(Event::JobNotified),
            JobsTopic::Get(NEXT_JOB, Some(Reply::Accepted)) => parse_execution(payload).ok().map(Event::NextJob),
            JobsTopic::Update(id, Some(reply)) => {
                let job_id = JobId::parse(id).ok()?;
                let body = serde_json::from_slice::<serde_json::Value>(payload).ok();
                match reply {
                    Reply::Accepted => {
                        let status = body.and_then(|v| {
                            v.pointer("/executionState/status").and_then(|s| s.as_str()).map(str::to_string)
                        });
                        Some(Event::UpdateAccepted { job_id, status })
                    }
                    Reply::Rejected => {
                        let code = body
                            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
                            .unwrap_or_default();
                        Some(Event::UpdateRejected { job_id, code })
                    }
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_aws_jobs_api() {
        let t = Topics::new(&ThingName::parse("pet_feeder-01").unwrap());
        assert_eq!(t.notify_next(), "$aws/things/pet_feeder-01/jobs/notify-next");
        assert_eq!(t.next_get(), "$aws/things/pet_feeder-01/jobs/$next/get");
        assert_eq!(t.update(&JobId::parse("j1").unwrap()), "$aws/things/pet_feeder-01/jobs/j1/update");
        assert_eq!(t.shadow_update(), "$aws/things/pet_feeder-01/shadow/update");
        assert_eq!(t.update_replies()[1], "$aws/things/pet_feeder-01/jobs/+/update/rejected");
    }

    #[test]
    fn messages_become_events() {
        let t = Topics::new(&ThingName::parse("d-1").unwrap());
        assert_eq!(t.parse("$aws/things/d-1/jobs/notify-next", b"{}"), Some(Event::JobNotified(None)));
        assert_eq!(t.parse("$aws/things/d-1/jobs/$next/get/accepted", b"{}"), Some(Event::NextJob(None)));
        assert_eq!(
            t.parse("$aws/things/d-1/jobs/j1/update/rejected", br#"{"code":"InvalidStateTransition"}"#),
            Some(Event::UpdateRejected { job_id: JobId::parse("j1").unwrap(), code: "InvalidStateTransition".into() })
        );
        assert!(matches!(
            t.parse("$aws/things/d-1/jobs/j1/update/accepted", b"{}"),
            Some(Event::UpdateAccepted { .. })
        ));
        // Another thing's topics and garbage are not events.
        assert_eq!(t.parse("$aws/things/d-2/jobs/notify-next", b"{}"), None);
        assert_eq!(t.parse("$aws/things/d-1/jobs/notify-next", b"not json"), None);
        assert_eq!(t.parse("$aws/things/d-1/jobs/bad id/update/accepted", b"{}"), None);
    }
}
