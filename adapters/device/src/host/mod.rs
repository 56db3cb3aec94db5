//! Host implementations of the embedded-svc traits the agent needs, for simulation and tests,
//! with fault knobs: corrupt bytes in transit, a truncated or dropped download at byte N, a
//! new image that fails its self-test, and power loss at a chosen step.
//!
//! Nothing here is for a real device; `firmware/` wires the agent to esp-idf-svc instead.

mod flash;
mod http;
mod image;
mod loopback;
mod mqtt;
mod power;
mod server;
mod storage;

pub use flash::{FlashError, SimFlash, SimSlotState, SimUpdate, SimUpdateFinished, SlotSnapshot};
pub use http::{HostHttp, HttpError, HttpFaults, MemoryHttp};
pub use image::SyntheticImage;
pub use loopback::{LoopbackMqtt, MqttHandler};
pub use mqtt::{HostMqttClient, HostMqttConnection, HostMqttEvent, MqttError, connect};
pub use power::{Power, PowerCut, PowerLost};
pub use server::{ImageServer, ServerFaults};
pub use storage::{FileStorage, MemStorage, StorageError};
