//! The AWS IoT Jobs and classic-shadow topics of one thing, and the translation of incoming
//! MQTT messages into machine events. Both backends (AWS IoT Core and the local device
//! endpoint) serve exactly these topics.

use crate::job::parse_execution;
use crate::names::{JobId, ThingName};

use super::types::Event;

/// Topic names for one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    jobs: String,
    shadow_update: String,
}

impl Topics {
    /// Topics of `thing`.
    pub fn new(thing: &ThingName) -> Self {
        Topics {
            jobs: format!("$aws/things/{thing}/jobs"),
            shadow_update: format!("$aws/things/{thing}/shadow/update"),
        }
    }

    /// Cloud → device: the next pending job changed.
    pub fn notify_next(&self) -> String {
        format!("{}/notify-next", self.jobs)
    }

    /// Device → cloud: ask for the next pending job.
    pub fn next_get(&self) -> String {
        format!("{}/$next/get", self.jobs)
    }

    /// The reply to [`Topics::next_get`].
    pub fn next_get_accepted(&self) -> String {
        format!("{}/$next/get/accepted", self.jobs)
    }

    /// Device → cloud: a job execution's status.
    pub fn update(&self, job_id: &JobId) -> String {
        format!("{}/{job_id}/update", self.jobs)
    }

    /// Replies to every job's status update (`+` is one job id).
    pub fn update_replies(&self) -> [String; 2] {
        [format!("{}/+/update/accepted", self.jobs), format!("{}/+/update/rejected", self.jobs)]
    }

    /// Device → cloud: the shadow's reported state.
    pub fn shadow_update(&self) -> &str {
        &self.shadow_update
    }

    /// Turns an incoming message into an event. `None`: not a topic the machine handles, or
    /// a payload too broken to act on (logged by the caller, never fatal).
    pub fn parse(&self, topic: &str, payload: &[u8]) -> Option<Event<'static>> {
        let rest = topic.strip_prefix(self.jobs.as_str())?.strip_prefix('/')?;
        match rest {
            "notify-next" => parse_execution(payload).ok().map(Event::JobNotified),
            "$next/get/accepted" => parse_execution(payload).ok().map(Event::NextJob),
            _ => {
                let (id, reply) = rest.split_once('/')?;
                let job_id = JobId::parse(id).ok()?;
                match reply {
                    "update/accepted" => {
                        let status = serde_json::from_slice::<serde_json::Value>(payload).ok().and_then(|v| {
                            v.pointer("/executionState/status").and_then(|s| s.as_str()).map(str::to_string)
                        });
                        Some(Event::UpdateAccepted { job_id, status })
                    }
                    "update/rejected" => {
                        let code = serde_json::from_slice::<serde_json::Value>(payload)
                            .ok()
                            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
                            .unwrap_or_default();
                        Some(Event::UpdateRejected { job_id, code })
                    }
                    _ => None,
                }
            }
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
