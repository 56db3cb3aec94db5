//! The device link: how the cloud side (the jobs engine and the shadow service) talks to
//! devices over MQTT, whichever transport carries it.
//!
//! Two transports give the same two things, so the engine never knows which one runs:
//! one stream of [`DeviceEvent`]s (what devices did) and one cloneable [`LinkPublisher`]
//! (what the cloud says to them).
//!
//! - [`embedded`] (the default): an MQTT 3.1.1 server in this process, built on rumqttc's
//!   protocol codec, that terminates device connections the way AWS IoT Core does. It knows
//!   each connection's thing from its credentials ([`Authenticator`], usually
//!   [`DeviceCredentials`]) and so enforces "a device acts only for itself" at subscribe and
//!   publish. No off-the-shelf embeddable broker carries the `$aws/things/...` topics.
//! - [`external`]: any MQTT broker (mosquitto, EMQX) that people already run; the cloud
//!   connects as one privileged client. There the broker enforces isolation, with the files
//!   [`write_mosquitto_files`] generates.
//!
//! Architecture Invariant: the link knows topics only as far as the thing they belong to
//! (`$aws/things/{thing}/`, `$aws/commands/things/{thing}/`, `dt/ota/{thing}/telemetry`);
//! what the Jobs, shadow and Commands topics below that mean is the engine's business.

mod credentials;
mod embedded;
mod external;
mod framing;
mod mosquitto;
mod router;

use std::fmt;
use std::time::Duration;

use ota_core::names::ThingName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use credentials::{DEVICE_SECRET_FILE, DeviceCredentials};
pub use embedded::{EndpointAddrs, EndpointLimits, EndpointOptions, embedded, embedded_endpoint};
pub use external::{CLOUD_FILTERS, external};
pub use mosquitto::{MosquittoFiles, mosquitto_password_line, write_mosquitto_files};

/// The prefix under which every thing's reserved topics live, as on AWS IoT Core.
pub const THINGS_PREFIX: &str = "$aws/things/";

/// The largest payload either transport carries (a job document, a shadow, a status with
/// details): 128 KiB, as AWS IoT Core's message size limit.
pub const MAX_PAYLOAD: usize = 128 * 1024;

/// The largest MQTT packet accepted or sent: [`MAX_PAYLOAD`] plus room for the topic and headers.
pub(crate) const MAX_PACKET: usize = MAX_PAYLOAD + 4 * 1024;

/// How many events wait for the cloud side before devices are slowed down.
const EVENT_QUEUE: usize = 4096;

/// What devices did, for the cloud side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A session for the thing started (also on a reconnect that took over an old session).
    /// Only the embedded endpoint reports these; an external broker does not tell.
    Connected { thing: ThingName },
    /// The thing has no session left. Only the embedded endpoint reports these.
    Disconnected { thing: ThingName },
    /// A publish on one of the thing's topics (the full topic string): under
    /// `$aws/things/{thing}/`, a command execution's response, or its telemetry. On the
    /// embedded endpoint `thing` is the connection's authenticated identity; through an
    /// external broker, the thing the topic names ([`thing_of_topic`]), which the broker's
    /// ACL confines each device to.
    Message { thing: ThingName, topic: String, payload: Vec<u8> },
}

/// Why the link could not do what the cloud side asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The broker URL is malformed or asks for something the link does not support.
    #[error("invalid broker URL: {0}")]
    InvalidUrl(String),
    /// The broker could not be reached, or the connection failed before it was up.
    #[error("cannot reach the MQTT broker: {0}")]
    Unreachable(String),
    /// The broker refused the cloud's credentials or one of its subscriptions.
    #[error("the MQTT broker refused: {0}")]
    Refused(String),
    /// A topic with wildcards or nothing in it cannot be published to.
    #[error("cannot publish to the topic {0:?}: a topic name has no wildcards and is not empty")]
    InvalidTopic(String),
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {size} bytes is larger than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    /// The link has been shut down.
    #[error("the device link is shut down")]
    Closed,
}

/// Why a device's CONNECT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Missing or wrong username or password (CONNACK "bad user name or password").
    #[error("bad user name or password")]
    BadCredentials,
    /// The credentials may be right but this client may not connect as it asked
    /// (CONNACK "not authorized"), for example a client id that is not a thing name.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
}

/// Decides who a connecting device is. The embedded endpoint asks it once per CONNECT and
/// then trusts the answer for the whole connection: a device can subscribe and publish only
/// under `$aws/things/{the returned thing}/`.
pub trait Authenticator: Send + Sync + 'static {
    /// CONNECT with this client id / username / password: the device's thing name, or a refusal.
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<ThingName, AuthError>;
}

/// Cloneable handle to publish to devices (QoS 1). Works for both transports.
#[derive(Clone)]
pub struct LinkPublisher {
    inner: PublisherInner,
}

#[derive(Clone)]
enum PublisherInner {
    Embedded(router::Publisher),
    External(external::Publisher),
}

impl fmt::Debug for LinkPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.inner {
            PublisherInner::Embedded(_) => "embedded",
            PublisherInner::External(_) => "external",
        };
        f.debug_struct("LinkPublisher").field("transport", &transport).finish()
    }
}

impl LinkPublisher {
    /// Publishes `payload` on `topic` at QoS 1. Returns once the message is queued for every
    /// session subscribed to it (embedded) or for the broker (external); it never waits on a
    /// slow device. Nobody subscribed is not an error, as in MQTT.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        if topic.is_empty() || rumqttc::mqttbytes::has_wildcards(&topic) {
            return Err(LinkError::InvalidTopic(topic));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(LinkError::TooLarge { size: payload.len(), max: MAX_PAYLOAD });
        }
        match &self.inner {
            PublisherInner::Embedded(p) => p.publish(topic, payload),
            PublisherInner::External(p) => p.publish(topic, payload).await,
        }
    }
}

/// A running link: its events, its publisher, and the handle that keeps it running.
#[derive(Debug)]
pub struct DeviceLink {
    /// What devices did, in the order each device did it.
    pub events: mpsc::Receiver<DeviceEvent>,
    /// Publishes to devices; clone it freely.
    pub publisher: LinkPublisher,
    /// Stops the link when dropped or on [`LinkHandle::shutdown`]. Kept as its own field so a
    /// caller can take `events` and `publisher` apart and still keep the link alive.
    pub handle: LinkHandle,
}

impl DeviceLink {
    /// Stops the link and waits until every connection and task has ended.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// Owns the link's tasks: dropping it stops them (without waiting), [`LinkHandle::shutdown`]
/// stops them and waits.
#[derive(Debug)]
pub struct LinkHandle {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl LinkHandle {
    fn new(stop: CancellationToken, tasks: TaskTracker) -> Self {
        LinkHandle { stop, tasks }
    }

    /// Stops the link: the listener closes, every device connection is closed, publishers
    /// answer [`LinkError::Closed`]. Returns once every task has ended (at most a few
    /// seconds: an external broker gets a moment for a clean DISCONNECT).
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await.is_err() {
            log::warn!("device link: some tasks did not end within 10 s of shutdown");
        }
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The thing a device topic belongs to: `$aws/things/{thing}/{something}`, one of its command
/// executions (`$aws/commands/things/{thing}/executions/{id}/...`) or its telemetry
/// (`dt/ota/{thing}/telemetry`). `None` for any other topic, or one whose thing level is not
/// a valid thing name (which also rules out the `+` and `#` wildcards there). An external
/// broker's messages reach the engine as this thing's.
pub fn thing_of_topic(topic: &str) -> Option<ThingName> {
    let thing = match ota_core::topics::split_thing(topic) {
        Some((thing, _below)) => thing,
        None => ota_core::topics::thing_of(topic)?,
    };
    ThingName::parse(thing).ok()
}

/// Whether `topic` matches the subscription `filter`. rumqttc's matcher refuses every topic
/// that starts with `$` (so that `#` does not match `$SYS/...`); MQTT's rule is narrower:
/// wildcards in the FIRST level do not match a `$` level, but a literal `$aws` does. So a
/// `$` first level must match literally and the rest is rumqttc's.
pub(crate) fn topic_matches(topic: &str, filter: &str) -> bool {
    match (topic.strip_prefix('$'), filter.strip_prefix('$')) {
        (Some(topic), Some(filter)) => rumqttc::mqttbytes::matches(topic, filter),
        (None, None) => rumqttc::mqttbytes::matches(topic, filter),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thing_comes_from_the_thing_level_only() {
        let t = |s: &str| thing_of_topic(s).map(|t| t.to_string());
        assert_eq!(t("$aws/things/pet_feeder-01/jobs/$next/get").as_deref(), Some("pet_feeder-01"));
        assert_eq!(t("$aws/things/pet_feeder-01/shadow/update").as_deref(), Some("pet_feeder-01"));
        assert_eq!(t("$aws/things/pet_feeder-01/"), None, "nothing below the thing");
        assert_eq!(t("$aws/things/pet_feeder-01"), None);
        assert_eq!(t("$aws/things/+/jobs/$next/get"), None, "a wildcard is no thing");
        assert_eq!(t("$aws/things/#"), None);
        assert_eq!(t("aws/things/pet_feeder-01/jobs"), None);
        assert_eq!(t("$aws/thing/pet_feeder-01/jobs"), None);
        // The other families a device publishes in.
        let response = "$aws/commands/things/pet_feeder-01/executions/cmd-1-0/response/json";
        assert_eq!(t(response).as_deref(), Some("pet_feeder-01"));
        assert_eq!(t("dt/ota/pet_feeder-01/telemetry").as_deref(), Some("pet_feeder-01"));
        assert_eq!(t("$aws/commands/things/+/executions/cmd-1-0/response/json"), None);
        assert_eq!(t("dt/ota/+/telemetry"), None);
        assert_eq!(t("$aws/commands/things/pet_feeder-01/executions"), None);
    }

    #[test]
    fn dollar_topics_match_literal_dollar_filters_but_not_first_level_wildcards() {
        assert!(topic_matches("$aws/things/a/jobs/notify-next", "$aws/things/a/jobs/notify-next"));
        assert!(topic_matches("$aws/things/a/jobs/notify-next", "$aws/things/a/#"));
        assert!(topic_matches("$aws/things/a/jobs/x/update/accepted", "$aws/things/a/jobs/+/update/accepted"));
        assert!(topic_matches("$aws/things/a/jobs/$next/get/accepted", "$aws/things/+/jobs/$next/get/accepted"));
        assert!(!topic_matches("$aws/things/a/jobs/notify-next", "#"));
        assert!(!topic_matches("$aws/things/a/jobs/notify-next", "+/things/a/jobs/notify-next"));
        assert!(!topic_matches("$aws/things/b/jobs/notify-next", "$aws/things/a/#"));
        assert!(!topic_matches("aws/things/a/jobs", "$aws/things/a/jobs"));
        assert!(topic_matches("plain/topic", "plain/#"));
    }
}
