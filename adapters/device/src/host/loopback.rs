//! An in-process MQTT stand-in: every publish goes to a handler (the test's cloud), whose
//! replies come back to the agent as messages. No broker, no socket, no background thread,
//! so a measurement sees only the agent.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use embedded_svc::mqtt::client::{Client, ErrorType, MessageId, Publish, QoS};

use super::mqtt::MqttError;
use super::power::Power;
use crate::MqttEvent;

/// The cloud side: gets (topic, payload), returns the messages it sends back.
pub type MqttHandler = Box<dyn FnMut(&str, &[u8]) -> Vec<(String, Vec<u8>)> + Send>;

/// The device's MQTT client in a loopback setup.
pub struct LoopbackMqtt {
    handler: Arc<Mutex<MqttHandler>>,
    events: Sender<MqttEvent>,
    power: Power,
}

impl std::fmt::Debug for LoopbackMqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackMqtt").finish_non_exhaustive()
    }
}

impl LoopbackMqtt {
    /// A client whose publishes go to `handler`, and the receiver the agent reads.
    pub fn new(handler: Arc<Mutex<MqttHandler>>, power: Power) -> (Self, Receiver<MqttEvent>) {
        let (events, rx) = channel();
        (LoopbackMqtt { handler, events, power }, rx)
    }

    /// Delivers `Connected` to the agent, as a broker's CONNACK would.
    pub fn connect(&self) {
        let _ = self.events.send(MqttEvent::Connected);
    }

    /// Delivers a message from the cloud.
    pub fn deliver(&self, topic: &str, payload: &[u8]) {
        let _ = self.events.send(MqttEvent::Message { topic: topic.to_string(), payload: payload.to_vec() });
    }
}

impl ErrorType for LoopbackMqtt {
    type Error = MqttError;
}

impl Client for LoopbackMqtt {
    fn subscribe<'a>(&'a mut self, _: &'a str, _: QoS) -> Result<MessageId, MqttError> {
        Ok(0)
    }

    fn unsubscribe<'a>(&'a mut self, _: &'a str) -> Result<MessageId, MqttError> {
        Ok(0)
    }
}

impl Publish for LoopbackMqtt {
    fn publish<'a>(&'a mut self, topic: &'a str, _: QoS, _: bool, payload: &'a [u8]) -> Result<MessageId, MqttError> {
        if self.power.is_off() {
            return Err(MqttError("power lost".into()));
        }
        let replies = (self.handler.lock().unwrap_or_else(|e| e.into_inner()))(topic, payload);
        for (topic, payload) in replies {
            let _ = self.events.send(MqttEvent::Message { topic, payload });
        }
        Ok(0)
    }
}
