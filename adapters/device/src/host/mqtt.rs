//! embedded-svc MQTT over rumqttc's blocking client, for hosts: plain TCP to a broker such
//! as mosquitto (the ESP32 uses TLS through ESP-IDF instead).

use std::time::Duration;

use embedded_svc::mqtt::client::{
    Client, Connection, Details, ErrorType, Event, EventPayload, MessageId, Publish, QoS,
};
use rumqttc::{MqttOptions, Packet};

/// Errors of the rumqttc-backed client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt: {0}")]
pub struct MqttError(pub String);

/// Opens a session to `host:port` as `client_id` (the thing name on AWS).
pub fn connect(client_id: &str, host: &str, port: u16) -> (HostMqttClient, HostMqttConnection) {
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, connection) = rumqttc::Client::new(options, 64);
    (HostMqttClient(client), HostMqttConnection { connection, connected: false })
}

fn qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// The publishing half.
#[derive(Clone)]
pub struct HostMqttClient(rumqttc::Client);

impl std::fmt::Debug for HostMqttClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostMqttClient")
    }
}

impl ErrorType for HostMqttClient {
    type Error = MqttError;
}

impl Client for HostMqttClient {
    fn subscribe<'a>(&'a mut self, topic: &'a str, q: QoS) -> Result<MessageId, MqttError> {
        self.0.subscribe(topic, qos(q)).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }

    fn unsubscribe<'a>(&'a mut self, topic: &'a str) -> Result<MessageId, MqttError> {
        self.0.unsubscribe(topic).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }
}

impl Publish for HostMqttClient {
    fn publish<'a>(
        &'a mut self,
        topic: &'a str,
        q: QoS,
        retain: bool,
        payload: &'a [u8],
    ) -> Result<MessageId, MqttError> {
        self.0.publish(topic, qos(q), retain, payload.to_vec()).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }
}

/// The event half; drive it with `ota_device::pump_mqtt` on its own thread.
pub struct HostMqttConnection {
    connection: rumqttc::Connection,
    connected: bool,
}

impl std::fmt::Debug for HostMqttConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMqttConnection").field("connected", &self.connected).finish()
    }
}

/// One event, owning its data.
#[derive(Debug)]
pub enum HostMqttEvent {
    Connected(bool),
    Disconnected,
    Received { topic: String, data: Vec<u8> },
}

impl ErrorType for HostMqttEvent {
    type Error = MqttError;
}

impl Event for HostMqttEvent {
    fn payload(&self) -> EventPayload<'_, MqttError> {
        match self {
            HostMqttEvent::Connected(session) => EventPayload::Connected(*session),
            HostMqttEvent::Disconnected => EventPayload::Disconnected,
            HostMqttEvent::Received { topic, data } => {
                EventPayload::Received { id: 0, topic: Some(topic), data, details: Details::Complete }
            }
        }
    }
}

impl ErrorType for HostMqttConnection {
    type Error = MqttError;
}

impl Connection for HostMqttConnection {
    type Event<'a> = HostMqttEvent;

    fn next(&mut self) -> Result<HostMqttEvent, MqttError> {
        loop {
            match self.connection.recv() {
                Ok(Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack)))) => {
                    self.connected = true;
                    return Ok(HostMqttEvent::Connected(ack.session_present));
                }
                Ok(Ok(rumqttc::Event::Incoming(Packet::Publish(p)))) => {
                    return Ok(HostMqttEvent::Received { topic: p.topic, data: p.payload.to_vec() });
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    // rumqttc reconnects on the next poll; pace it, and say so once per
                    // attempt so the pump notices a receiver that has gone away.
                    self.connected = false;
                    std::thread::sleep(Duration::from_millis(200));
                    return Ok(HostMqttEvent::Disconnected);
                }
                Err(rumqttc::RecvError) => return Err(MqttError("the client is gone".into())),
            }
        }
    }
}
