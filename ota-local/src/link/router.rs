//! The embedded endpoint's registry of live sessions, and the cloud's way into it: which
//! client ids are connected, as which thing, with which subscriptions, and the queue that
//! reaches each one. Publishing only queues (never waits), so a slow device holds up no one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ota_core::names::ThingName;
use ota_core::topics;
use rumqttc::mqttbytes::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LinkError, topic_matches};

/// Messages queued for one device before it counts as too slow and is dropped.
pub(super) const OUTGOING_QUEUE: usize = 1024;

/// The live sessions, shared by the connection tasks and the publisher.
pub(super) struct Router {
    pub(super) sessions: Mutex<Sessions>,
    pub(super) stop: CancellationToken,
}

impl Router {
    pub(super) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding the lock leaves plain maps behind; they stay consistent
        // enough to keep serving the other devices.
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The live sessions, by client id (for takeover) and by thing (for routing).
#[derive(Default)]
pub(super) struct Sessions {
    by_client: HashMap<String, Session>,
    by_thing: HashMap<ThingName, Vec<String>>,
}

/// What the router knows of one connection.
pub(super) struct Session {
    /// Tells this connection from a later one with the same client id.
    pub(super) id: u64,
    pub(super) thing: ThingName,
    /// Granted filters, each with whether it was granted QoS 1.
    pub(super) subscriptions: Vec<(String, bool)>,
    pub(super) outgoing: mpsc::Sender<Outgoing>,
    /// Closes the connection: on takeover, overflow, revocation, or shutdown.
    pub(super) kill: CancellationToken,
    /// The serial of the client certificate it connected with (TLS); `None` for a password.
    pub(super) certificate: Option<Vec<u8>>,
}

impl Sessions {
    /// Registers a new connection; returns the one it takes over (same client id), with
    /// whether that one's thing now has no session left.
    pub(super) fn insert(&mut self, client_id: &str, session: Session) -> Option<(Session, bool)> {
        let old = self.remove(client_id);
        self.by_thing.entry(session.thing.clone()).or_default().push(client_id.to_string());
        self.by_client.insert(client_id.to_string(), session);
        old.map(|(old, _)| {
            let last = !self.by_thing.contains_key(&old.thing);
            (old, last)
        })
    }

    /// The session registered as `client_id` if it is still connection `id` (not taken over).
    pub(super) fn current(&mut self, client_id: &str, id: u64) -> Option<&mut Session> {
        self.by_client.get_mut(client_id).filter(|s| s.id == id)
    }

    /// Every live session, by client id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Session)> {
        self.by_client.iter()
    }

    /// Removes `client_id`'s session; true when its thing has no session left.
    pub(super) fn remove(&mut self, client_id: &str) -> Option<(Session, bool)> {
        let session = self.by_client.remove(client_id)?;
        let mut last = false;
        if let Some(clients) = self.by_thing.get_mut(&session.thing) {
            clients.retain(|c| c != client_id);
            if clients.is_empty() {
                self.by_thing.remove(&session.thing);
                last = true;
            }
        }
        Some((session, last))
    }
}

/// A cloud publish on its way to one device.
pub(super) struct Outgoing {
    pub(super) topic: Arc<str>,
    pub(super) payload: Bytes,
    pub(super) qos: QoS,
}

/// The embedded transport's side of [`LinkPublisher`].
#[derive(Clone)]
pub(super) struct Publisher {
    pub(super) router: Arc<Router>,
}

impl Publisher {
    /// Queues the message for every session of the topic's thing whose subscriptions match.
    /// Only that thing's sessions can match: no device holds a filter outside its own topics.
    pub(super) fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        if self.router.stop.is_cancelled() {
            return Err(LinkError::Closed);
        }
        // Any of a thing's families: Jobs and shadow, Commands, telemetry.
        let thing = topics::split_thing(&topic).map(|(thing, _)| thing).or_else(|| topics::thing_of(&topic));
        let Some(thing) = thing.and_then(|t| ThingName::parse(t).ok()) else {
            return Ok(());
        };
        let topic: Arc<str> = topic.into();
        let payload = Bytes::from(payload);
        let sessions = self.router.sessions();
        for client_id in sessions.by_thing.get(&thing).into_iter().flatten() {
            let Some(session) = sessions.by_client.get(client_id) else { continue };
            // Overlapping subscriptions get one copy, at the highest QoS granted (MQTT 3.3.5).
            let granted = session.subscriptions.iter().filter(|(f, _)| topic_matches(&topic, f)).map(|(_, q1)| *q1);
            let Some(qos1) = granted.reduce(|a, b| a || b) else { continue };
            let qos = if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
            let message = Outgoing { topic: topic.clone(), payload: payload.clone(), qos };
            if let Err(mpsc::error::TrySendError::Full(_)) = session.outgoing.try_send(message) {
                log::warn!(
                    "device {client_id} ({thing}) is not reading: {OUTGOING_QUEUE} messages wait for it; disconnecting it"
                );
                session.kill.cancel();
            }
        }
        Ok(())
    }
}
