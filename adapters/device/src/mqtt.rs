//! MQTT events as the agent consumes them, and the pump that produces them.
//!
//! embedded-svc's `Connection::next` blocks and borrows the connection, and both rumqttc and
//! ESP-IDF need the connection polled continuously (keep-alives, outgoing publishes) even
//! while the agent is busy writing flash. So a pump thread drives the connection and hands
//! the agent owned copies of what matters through a channel.

use std::sync::mpsc::Sender;

use embedded_svc::mqtt::client::{Connection, Details, Event, EventPayload};

/// Longest message the pump reassembles; job documents with a pre-signed URL are ~2 KB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// What the agent needs to know from the MQTT connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttEvent {
    Connected,
    Disconnected,
    Message { topic: String, payload: Vec<u8> },
}

/// Drives `connection` until it ends or the receiver is gone. Messages split into chunks
/// (ESP-IDF delivers anything over its buffer size that way) are reassembled.
pub fn pump_mqtt<C: Connection>(mut connection: C, events: Sender<MqttEvent>) {
    let mut partial: Option<(String, Vec<u8>)> = None;
    while let Ok(event) = connection.next() {
        let out = match event.payload() {
            EventPayload::Connected(_) => Some(MqttEvent::Connected),
            EventPayload::Disconnected => Some(MqttEvent::Disconnected),
            EventPayload::Received { topic, data, details, .. } => match details {
                Details::Complete => topic.map(|t| MqttEvent::Message { topic: t.to_string(), payload: data.to_vec() }),
                Details::InitialChunk(c) => {
                    partial = topic.filter(|_| c.total_data_size <= MAX_MESSAGE_LEN).map(|t| {
                        let mut buf = Vec::with_capacity(c.total_data_size);
                        buf.extend_from_slice(data);
                        (t.to_string(), buf)
                    });
                    None
                }
                Details::SubsequentChunk(c) => {
                    let done = match partial.as_mut() {
                        Some((_, buf)) if buf.len() == c.current_data_offset => {
                            buf.extend_from_slice(data);
                            buf.len() >= c.total_data_size
                        }
                        _ => {
                            partial = None;
                            false
                        }
                    };
                    if done {
                        partial.take().map(|(topic, payload)| MqttEvent::Message { topic, payload })
                    } else {
                        None
                    }
                }
            },
            _ => None,
        };
        if let Some(out) = out
            && events.send(out).is_err()
        {
            return;
        }
    }
}
