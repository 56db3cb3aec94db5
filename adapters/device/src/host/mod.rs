//! Host implementations of the embedded-svc traits the agent needs, for simulation and tests,
//! with fault knobs: corrupt bytes in transit, a truncated or dropped download at byte N, a
//! new image that fails its self-test, and power loss at a chosen step; and a simulated
//! fleet of such devices ([`SimFleet`]).
//!
//! Nothing here is for a real device; `firmware/` wires the agent to esp-idf-svc instead.

mod flash;
mod fleet;
mod http;
mod image;
mod loopback;
mod mqtt;
mod power;
mod server;
mod storage;
mod telemetry;

pub use flash::{FlashError, SimFlash, SimSlotState, SimUpdate, SimUpdateFinished, SlotSnapshot};
pub use fleet::{
    CORRUPT_AT, DROP_AT, DeviceFaults, DeviceTlsIdentity, FaultRates, FleetConfig, FleetError, PasswordFor,
    SimDeviceSpec, SimDeviceState, SimFleet, TlsFor, demo_fleet,
};
pub use http::{HostHttp, HttpError, HttpFaults, MemoryHttp};
pub use image::{SyntheticImage, header_version};
pub use loopback::{LoopbackMqtt, MqttHandler};
pub use mqtt::{
    ConnectOptions, HostMqttClient, HostMqttConnection, HostMqttEvent, MqttError, client_tls_config, connect,
    connect_with,
};
pub use power::{Power, PowerCut, PowerLost};
pub use server::{ImageServer, ServerFaults};
pub use storage::{FileStorage, MemStorage, StorageError};
pub use telemetry::{SharedSensor, SimSensor, demo_capabilities};
