//! `ota-device` is the device side of ota: an agent that runs the pure update state machine
//! of `ota-core` (`ota_core::update`) against embedded-svc 0.29's blocking traits — MQTT
//! (`mqtt::client`), HTTP (`http::client`), the two-slot OTA flash (`ota::Ota`) and key-value
//! storage (`storage::RawStorage`). The same code runs on a XIAO ESP32S3 (wired to
//! esp-idf-svc in `firmware/`) and on a host.
//!
//! The agent streams the image through one fixed buffer: its memory does not grow with the
//! image size. With feature `host`, [`host`] provides implementations of those traits for
//! simulation and tests (rumqttc, a std::net HTTP client, a simulated flash with a bootloader
//! that rolls back unconfirmed images, storage on a map or a file) with fault knobs.

mod agent;
mod download;
mod mqtt;

#[cfg(feature = "host")]
pub mod host;

pub use agent::{Agent, AgentConfig, AgentError, Application, CHUNK_SIZE, Exit, NoApplication};
pub use mqtt::{MqttEvent, pump_mqtt};
