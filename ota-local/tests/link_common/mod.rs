//! Shared pieces of the device-link tests: devices are plain rumqttc clients on real
//! sockets, and every wait has a generous bound so a broken link fails instead of hanging.

#![allow(dead_code)]

use std::time::Duration;

use ota_core::names::ThingName;
use ota_local::link::DeviceEvent;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

/// How long any single expected thing may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn thing(name: &str) -> ThingName {
    ThingName::parse(name).unwrap()
}

/// What a device saw.
#[derive(Debug)]
pub enum Seen {
    Packet(Packet),
    /// The connection ended (the event loop's error); the device does not reconnect.
    Closed(String),
}

/// A device: a rumqttc client whose event loop runs in its own task.
pub struct Device {
    pub client: AsyncClient,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub name: String,
}

pub fn options(port: u16, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    o
}

/// Connects and waits for the CONNACK: the device, or the refusal.
pub async fn try_connect(options: MqttOptions) -> Result<Device, ConnectionError> {
    let name = options.client_id();
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let connack = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("a CONNACK or an error");
    connack?;
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if tx.send(Seen::Packet(packet)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Seen::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Device { client, seen, name })
}

pub async fn connect(port: u16, thing: &str, password: &str) -> Device {
    try_connect(options(port, thing, Some((thing, password)))).await.unwrap_or_else(|e| panic!("{thing} connects: {e}"))
}

pub fn refusal(result: Result<Device, ConnectionError>) -> ConnectReturnCode {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(e) => panic!("expected a CONNACK refusal, got {e}"),
        Ok(d) => panic!("{} was let in", d.name),
    }
}

impl Device {
    /// The next thing the device saw, other than keep-alive chatter (which alone never
    /// extends the wait).
    pub async fn next(&mut self) -> Seen {
        self.next_before(tokio::time::Instant::now() + WAIT).await
    }

    async fn next_before(&mut self, deadline: tokio::time::Instant) -> Seen {
        loop {
            let seen = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .unwrap_or_else(|_| panic!("{} saw nothing within {WAIT:?}", self.name))
                .unwrap_or_else(|| panic!("{}'s event loop is gone", self.name));
            if !matches!(seen, Seen::Packet(Packet::PingResp)) {
                return seen;
            }
        }
    }

    /// Subscribes to `filters` in one SUBSCRIBE and returns the SUBACK's codes.
    pub async fn subscribe(&mut self, filters: &[String]) -> Vec<SubscribeReasonCode> {
        let filters = filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client.subscribe_many(filters).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next_before(deadline).await {
                Seen::Packet(Packet::SubAck(ack)) => return ack.return_codes,
                Seen::Packet(_) => {}
                Seen::Closed(e) => panic!("{} was closed while subscribing: {e}", self.name),
            }
        }
    }

    pub async fn publish(&self, topic: String, payload: &[u8]) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).await.unwrap();
    }

    /// The next publish the device receives; panics if the connection closes first.
    pub async fn expect_publish(&mut self) -> rumqttc::Publish {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next_before(deadline).await {
                Seen::Packet(Packet::Publish(p)) => return p,
                Seen::Packet(_) => {}
                Seen::Closed(e) => panic!("{} was closed while waiting for a publish: {e}", self.name),
            }
        }
    }

    /// Waits until the connection is closed; panics if a publish arrives first.
    pub async fn expect_closed(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next_before(deadline).await {
                Seen::Closed(e) => return e,
                Seen::Packet(Packet::Publish(p)) => {
                    panic!("{} received {:?} instead of being closed", self.name, p.topic)
                }
                Seen::Packet(_) => {}
            }
        }
    }
}

/// The next event the cloud side receives.
pub async fn next_event(events: &mut mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no device event within {WAIT:?}"))
        .expect("the event stream is open")
}

/// The next message event, skipping connection events.
pub async fn next_message(events: &mut mpsc::Receiver<DeviceEvent>) -> (ThingName, String, Vec<u8>) {
    loop {
        if let DeviceEvent::Message { thing, topic, payload } = next_event(events).await {
            return (thing, topic, payload);
        }
    }
}

pub fn jobs_topic(thing: &str, rest: &str) -> String {
    format!("$aws/things/{thing}/jobs/{rest}")
}
