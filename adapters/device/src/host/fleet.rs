//! A simulated fleet: many virtual devices, each running the real [`Agent`] over the host
//! implementations (rumqttc, [`HostHttp`], [`SimFlash`], [`MemStorage`]) against one MQTT
//! endpoint, with a simulated bootloader between boots. `ota sim` and `ota demo` run it
//! against the local server; tests run it against mosquitto.
//!
//! What a device does, on its own thread: the bootloader picks a slot
//! ([`SimFlash::power_on`]), the app connects (client id and username = the thing name,
//! password from [`FleetConfig::password_for`]; or, with [`FleetConfig::tls_for`], over mutual
//! TLS with the thing's own certificate and no password, as a real device does), the agent
//! runs until it asks for a restart,
//! the MQTT session is closed, and the bootloader runs again. A second, small thread drives
//! the MQTT connection ([`pump_mqtt`]). Both have small stacks, the agents poll at a modest
//! rate and devices start a few milliseconds apart, so hundreds of devices fit a small
//! machine.
//!
//! Faults are per device and drawn once, reproducibly, by [`demo_fleet`]:
//! - a corrupt download flips one byte of every body the device receives (at
//!   [`CORRUPT_AT`]): every update of that device fails its SHA-256 check and keeps the old
//!   image, the way a device behind a broken proxy would;
//! - a dropped download resets the device's first download at [`DROP_AT`]: the agent
//!   resumes with a Range request and succeeds; later downloads are clean;
//! - a boot failure makes every image an update installs fail its self-test (the image the
//!   device started with passes): the bootloader rolls back and the device reports FAILED
//!   with the version it still runs;
//! - a tampered link is a man in the middle who rewrites the image the device downloads
//!   (the byte at [`CORRUPT_AT`]) and the job document's `firmware.sha256` to match it, so
//!   the hash check passes; only the signature, which the attacker cannot forge, is left as
//!   it was. A device that trusts signing keys ([`FleetConfig::trust`]) ends FAILED
//!   `signature_invalid` and keeps its old image; one that trusts none installs the
//!   attacker's image, which is what signing is for.
//!
//! Each device also answers commands as its type's demo firmware declares them
//! ([`demo_capabilities`]): `reboot` ends the boot (the device reconnects and counts a boot),
//! `identify`, `recalibrate` (the readings go back to their baseline), `update_config`
//! (kept in the device's storage across its reboots). It publishes realistic telemetry for
//! its type ([`SimSensor`]: a seeded random walk per thing) at its `sample_rate_seconds`.
//!
//! Corruption, tampering and boot failure last for the device's life rather than its first
//! update only, so a retried execution fails again, as it would on a device that is really
//! broken (or really attacked).
//!
//! Devices trust the keys of [`FleetConfig::trust`] (a real device has them built into its
//! firmware) and have an anti-rollback floor: the security version of the confirmed image
//! they boot ([`FleetConfig::security_versions`]), at least [`FleetConfig::min_security_floor`],
//! and never lower than before, the way ESP-IDF's eFuse counter only rises.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embedded_svc::mqtt::client::{Connection, ErrorType, Event as _, EventPayload};
use ota_core::demo;
use ota_core::names::{DeviceType, ThingName};
use ota_core::signing::KeyRing;
use ota_core::update::DeviceConfig;
use ota_core::version::FirmwareVersion;

use super::flash::{SimFlash, SimSlotState};
use super::http::{HostHttp, HttpFaults};
use super::mqtt::{ConnectOptions, HostMqttConnection, HostMqttEvent, MqttError, connect_with};
use super::power::Power;
use super::storage::MemStorage;
use super::telemetry::{SharedSensor, SimSensor, demo_capabilities};
use crate::{Agent, AgentConfig, Exit, pump_mqtt};

/// Image offset of the byte a corrupting link flips: inside the first chunk, past the app
/// descriptor, so it hits any image (a 64 KiB benchmark image as well as a 1.6 MB demo one)
/// and only the hash check can catch it.
pub const CORRUPT_AT: u64 = 4_000;
/// Image offset at which a dropping link resets the first download: mid-body for any image
/// over 32 KiB.
pub const DROP_AT: u64 = 32 * 1024;

/// Errors of the fleet: bad input, or a machine that cannot host it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("the {name} rate {value} is not a fraction between 0 and 1")]
    Rate { name: &'static str, value: f64 },
    #[error("{0:?} is not a device type of the demo world")]
    UnknownType(String),
    #[error("device {0} appears twice in the fleet; one MQTT client id can hold only one session")]
    DuplicateThing(String),
    #[error("cannot resolve the MQTT host {host}:{port}: {detail}")]
    Resolve { host: String, port: u16, detail: String },
    #[error("cannot start a thread for device {thing}: {source}")]
    Spawn { thing: String, source: std::io::Error },
    #[error("device {thing} has no TLS identity: {detail}")]
    Tls { thing: String, detail: String },
}

/// Fractions of the fleet that get each fault, each between 0 and 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Devices whose downloads arrive with a flipped byte.
    pub corrupt: f64,
    /// Devices on which newly installed images fail their self-test.
    pub boot_failure: f64,
    /// Devices whose first download is cut mid-body.
    pub drop: f64,
    /// Devices behind a man in the middle who rewrites images and their job documents' digest.
    pub tamper: f64,
}

impl FaultRates {
    /// Rates checked by [`FaultRates::validate`].
    pub fn new(corrupt: f64, boot_failure: f64, drop: f64) -> Result<Self, FleetError> {
        let rates = FaultRates { corrupt, boot_failure, drop, tamper: 0.0 };
        rates.validate()?;
        Ok(rates)
    }

    /// These rates with `tamper` of the devices behind a man in the middle, checked.
    pub fn with_tamper(self, tamper: f64) -> Result<Self, FleetError> {
        let rates = FaultRates { tamper, ..self };
        rates.validate()?;
        Ok(rates)
    }

    /// Every rate is a number in 0..=1 (NaN is not).
    pub fn validate(&self) -> Result<(), FleetError> {
        let rates = [
            ("corrupt", self.corrupt),
            ("boot failure", self.boot_failure),
            ("drop", self.drop),
            ("tamper", self.tamper),
        ];
        for (name, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(FleetError::Rate { name, value });
            }
        }
        Ok(())
    }
}

/// The faults one device carries (see the module docs for what each does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceFaults {
    pub corrupt_download: bool,
    pub fail_boot: bool,
    pub drop_download: bool,
    pub tamper_download: bool,
}

impl DeviceFaults {
    /// Whether the device has any fault.
    pub fn any(&self) -> bool {
        self.corrupt_download || self.fail_boot || self.drop_download || self.tamper_download
    }
}

/// One device to simulate: who it is, what it runs at power-on, what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDeviceSpec {
    pub thing: ThingName,
    pub device_type: DeviceType,
    /// The version of the valid image in slot `ota_0` at the first boot.
    pub version: FirmwareVersion,
    pub faults: DeviceFaults,
}

/// The demo fleet for `types` (in that order, repeats ignored) with `devices_per_type`
/// devices each, `{type}-01`, `{type}-02`, …: device n runs 1.0.0 when n mod 4 is 1 or 2,
/// 2.0.0 when it is 3, and the type's latest demo version when it is 0, as in the demo world.
///
/// Exactly `round(rate × fleet size)` devices get each fault (20 % of 100 is 20, not "about
/// 20"), picked by a shuffle seeded with `seed`: the same arguments give the same fleet on
/// every run and machine. The faults go to distinct devices while their counts fit in the
/// fleet (corrupt first, then boot failure, then drop, then tamper, along the shuffled order); counts that
/// add up to more than the fleet wrap around and overlap.
pub fn demo_fleet(
    types: &[DeviceType],
    devices_per_type: u32,
    rates: FaultRates,
    seed: u64,
) -> Result<Vec<SimDeviceSpec>, FleetError> {
    rates.validate()?;
    let mut seen = BTreeSet::new();
    let mut fleet = Vec::new();
    for device_type in types {
        if !demo::DEVICE_TYPES.contains(&device_type.as_str()) {
            return Err(FleetError::UnknownType(device_type.to_string()));
        }
        if !seen.insert(device_type.clone()) {
            continue;
        }
        let latest = demo::versions(device_type).pop().unwrap_or_else(|| FirmwareVersion::new(1, 0, 0));
        for n in 1..=devices_per_type {
            let version = match n % 4 {
                1 | 2 => FirmwareVersion::new(1, 0, 0),
                3 => FirmwareVersion::new(2, 0, 0),
                _ => latest.clone(),
            };
            let name = format!("{device_type}-{n:02}");
            let thing = ThingName::parse(&name).map_err(|_| FleetError::UnknownType(name))?;
            fleet.push(SimDeviceSpec {
                thing,
                device_type: device_type.clone(),
                version,
                faults: DeviceFaults::default(),
            });
        }
    }
    let n = fleet.len();
    if n == 0 {
        return Ok(fleet);
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let count = |rate: f64| (rate * n as f64).round() as usize;
    let mut at = 0;
    let mut take = |k: usize| {
        let picked: Vec<usize> = (at..at + k).map(|i| order[i % n]).collect();
        at += k;
        picked
    };
    for i in take(count(rates.corrupt)) {
        fleet[i].faults.corrupt_download = true;
    }
    for i in take(count(rates.boot_failure)) {
        fleet[i].faults.fail_boot = true;
    }
    for i in take(count(rates.drop)) {
        fleet[i].faults.drop_download = true;
    }
    for i in take(count(rates.tamper)) {
        fleet[i].faults.tamper_download = true;
    }
    Ok(fleet)
}

/// splitmix64: a tiny, well-mixed generator whose sequence is fixed by its seed on every
/// platform, so a fault campaign can be replayed from its seed alone.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (multiply-shift; the bias is far below anything a fleet of
    /// devices could show).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }
}

/// Gives the MQTT password of a thing.
pub type PasswordFor = Arc<dyn Fn(&ThingName) -> String + Send + Sync>;

/// What a device connects over mutual TLS with: the CA it trusts the server by, its own
/// certificate and its private key (PEM; the files `ota devices enroll` writes as `ca.pem`,
/// `cert.pem`, `key.pem`).
#[derive(Clone)]
pub struct DeviceTlsIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for DeviceTlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTlsIdentity").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Gives the TLS identity of a thing; `None`: it has none (the fleet refuses to start).
pub type TlsFor = Arc<dyn Fn(&ThingName) -> Option<DeviceTlsIdentity> + Send + Sync>;

/// How the fleet connects and how its agents run. [`FleetConfig::new`] gives values that
/// suit hundreds of devices on a small machine; tests shorten the waits.
#[derive(Clone)]
pub struct FleetConfig {
    /// The MQTT endpoint; a name is resolved once, at start.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Each device logs in with its thing name as username and this password (over plain TCP).
    pub password_for: PasswordFor,
    /// Set: each device connects over mutual TLS with this identity instead, and sends no
    /// password (the endpoint takes its identity from the certificate). `mqtt_host` must then
    /// be a name or an address the server's certificate holds.
    pub tls_for: Option<TlsFor>,
    /// Capacity of each device's update slot.
    pub slot_size: u64,
    /// A new image that has no MQTT session after this long has failed its self-test.
    pub self_test_timeout: Duration,
    /// MQTT keep-alive (at least a second).
    pub keep_alive: Duration,
    /// Pause between MQTT connection attempts of one device.
    pub reconnect_delay: Duration,
    /// How long an agent waits for MQTT before checking its deadlines and the stop flag.
    pub poll_interval: Duration,
    /// Pause before resuming a broken download.
    pub retry_delay: Duration,
    /// Time given to queued publishes before a simulated restart.
    pub reboot_grace: Duration,
    /// An HTTP connection or read that is silent this long has failed.
    pub http_timeout: Duration,
    /// Gap between the start of one device and the next, so the endpoint does not get every
    /// CONNECT at once.
    pub start_interval: Duration,
    /// Stack of each device thread and each MQTT pump thread.
    pub stack_size: usize,
    /// How long [`SimFleet::stop`] waits for the devices' threads.
    pub stop_timeout: Duration,
    /// The signing keys every device trusts (built into a real device's firmware): not
    /// empty, every image must be signed by one of them. Empty: digests only.
    pub trust: KeyRing,
    /// The security version of each image, by type and version: a device's anti-rollback
    /// floor rises to that of the confirmed image it boots.
    pub security_versions: Arc<BTreeMap<(DeviceType, FirmwareVersion), u32>>,
    /// The floor every device has at least.
    pub min_security_floor: u32,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("mqtt_host", &self.mqtt_host)
            .field("mqtt_port", &self.mqtt_port)
            .field("tls", &self.tls_for.is_some())
            .field("slot_size", &self.slot_size)
            .field("self_test_timeout", &self.self_test_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("start_interval", &self.start_interval)
            .field("stack_size", &self.stack_size)
            .finish_non_exhaustive()
    }
}

impl FleetConfig {
    /// Defaults: the XIAO ESP32S3's 3 MiB update slot, a 60 s self-test, a 30 s keep-alive,
    /// 1 s between reconnects, agents polling every 250 ms, 1 s before a resume, 500 ms of
    /// grace before a restart, a 30 s HTTP timeout, devices starting 5 ms apart, 256 KiB
    /// stacks and 20 s to stop; no trusted keys and no security floor.
    pub fn new(mqtt_host: &str, mqtt_port: u16, password_for: PasswordFor) -> Self {
        FleetConfig {
            mqtt_host: mqtt_host.to_string(),
            mqtt_port,
            password_for,
            tls_for: None,
            slot_size: 0x30_0000,
            self_test_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            retry_delay: Duration::from_secs(1),
            reboot_grace: Duration::from_millis(500),
            http_timeout: Duration::from_secs(30),
            start_interval: Duration::from_millis(5),
            stack_size: 256 * 1024,
            stop_timeout: Duration::from_secs(20),
            trust: KeyRing::default(),
            security_versions: Arc::default(),
            min_security_floor: 0,
        }
    }
}

/// One device's state as [`SimFleet::snapshot`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDeviceState {
    pub thing: ThingName,
    pub device_type: DeviceType,
    /// The version of the image running now.
    pub firmware_version: String,
    /// The running slot as the bootloader sees it: "valid" (confirmed), "unverified"
    /// (booted, self-test not passed yet) or "invalid" (failed, about to roll back).
    pub slot_state: &'static str,
    /// Times the simulated bootloader has started the device.
    pub boots: u32,
    /// Whether the device has an MQTT session now.
    pub connected: bool,
    /// The last error that stopped the agent, if any (the device then restarts).
    pub last_error: Option<String>,
    /// Why its last connection attempt failed or its session ended (a refused CONNECT, a
    /// rejected TLS handshake, a closed socket); `None` once a session is up again.
    pub connect_error: Option<String>,
}

/// What the snapshot needs of a running device.
#[derive(Debug)]
struct DeviceShared {
    thing: ThingName,
    device_type: DeviceType,
    flash: SimFlash,
    boots: AtomicU32,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    connect_error: Mutex<Option<String>>,
}

impl DeviceShared {
    fn state(&self) -> SimDeviceState {
        let (index, state) = self.flash.running_slot();
        let slot_state = match state {
            SimSlotState::Valid => "valid",
            SimSlotState::Invalid => "invalid",
            SimSlotState::Empty | SimSlotState::Written | SimSlotState::New | SimSlotState::PendingVerify => {
                "unverified"
            }
        };
        SimDeviceState {
            thing: self.thing.clone(),
            device_type: self.device_type.clone(),
            firmware_version: self.flash.slot(index).version.unwrap_or_default(),
            slot_state,
            boots: self.boots.load(Ordering::SeqCst),
            connected: self.connected.load(Ordering::SeqCst),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            connect_error: self.connect_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    fn fail(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// A running simulated fleet. Dropping it without [`SimFleet::stop`] raises the stop flag
/// and leaves the threads to end on their own.
#[derive(Debug)]
pub struct SimFleet {
    devices: Vec<Arc<DeviceShared>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stop_timeout: Duration,
}

impl SimFleet {
    /// Starts every device on its own thread: boot, connect, run the agent, and on a
    /// requested restart boot again through the simulated bootloader, until [`SimFleet::stop`].
    /// Devices start `config.start_interval` apart; a device whose endpoint is not up yet
    /// keeps retrying. Fails, with nothing left running, on a duplicate thing, an MQTT host
    /// that does not resolve, a device without a usable TLS identity (with
    /// [`FleetConfig::tls_for`]), or a thread the machine cannot start.
    pub fn start(specs: Vec<SimDeviceSpec>, config: FleetConfig) -> Result<SimFleet, FleetError> {
        let mut things = BTreeSet::new();
        if let Some(dup) = specs.iter().find(|s| !things.insert(&s.thing)) {
            return Err(FleetError::DuplicateThing(dup.thing.to_string()));
        }
        // Resolved once: rumqttc would otherwise resolve a name on every connection attempt,
        // on a blocking thread per device.
        let resolve =
            |detail: String| FleetError::Resolve { host: config.mqtt_host.clone(), port: config.mqtt_port, detail };
        let addr = (config.mqtt_host.as_str(), config.mqtt_port)
            .to_socket_addrs()
            .map_err(|e| resolve(e.to_string()))?
            .next()
            .ok_or_else(|| resolve("no address".into()))?;
        // Over TLS the host is the name the server's certificate is checked against: kept as
        // given (an address resolves to itself; a name is resolved per connection attempt).
        let host = match config.tls_for {
            Some(_) => config.mqtt_host.clone(),
            None => addr.ip().to_string(),
        };
        // Every device's connection options before any device starts: a missing or bad TLS
        // identity fails the start with nothing running.
        let mut options = Vec::with_capacity(specs.len());
        for spec in &specs {
            options.push(connect_options(spec, &host, &config)?);
        }
        let run = Arc::new(Run { config });
        let mut fleet = SimFleet {
            devices: Vec::with_capacity(specs.len()),
            threads: Vec::with_capacity(specs.len()),
            stop: Arc::new(AtomicBool::new(false)),
            stop_timeout: run.config.stop_timeout,
        };
        for (i, (spec, options)) in specs.into_iter().zip(options).enumerate() {
            let power = Power::new();
            let flash = SimFlash::new(&spec.version.to_string(), run.config.slot_size, power.clone());
            if spec.faults.fail_boot {
                flash.fail_self_test_of_updates();
            }
            let shared = Arc::new(DeviceShared {
                thing: spec.thing.clone(),
                device_type: spec.device_type.clone(),
                flash,
                boots: AtomicU32::new(0),
                connected: AtomicBool::new(false),
                last_error: Mutex::new(None),
                connect_error: Mutex::new(None),
            });
            let delay = run.config.start_interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            let (dev, r, stop) = (shared.clone(), run.clone(), fleet.stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("sim-{}", spec.thing))
                .stack_size(run.config.stack_size)
                .spawn(move || run_device(&dev, &spec, &options, power, &r, &stop, delay));
            match thread {
                Ok(t) => {
                    fleet.devices.push(shared);
                    fleet.threads.push(t);
                }
                Err(source) => {
                    let thing = shared.thing.to_string();
                    fleet.stop();
                    return Err(FleetError::Spawn { thing, source });
                }
            }
        }
        Ok(fleet)
    }

    /// Every device's state now, in the order the fleet was given.
    pub fn snapshot(&self) -> Vec<SimDeviceState> {
        self.devices.iter().map(|d| d.state()).collect()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Stops every device (a download in progress is abandoned, as at a power cut) and waits
    /// up to `stop_timeout` for their threads; a thread still blocked after that (an HTTP
    /// read, say) is left to end on its own. Returns how many threads were left so.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.stop_timeout;
        let threads = std::mem::take(&mut self.threads);
        join_until(threads, deadline)
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Joins the threads that finish before `deadline`; returns how many did not.
fn join_until(threads: Vec<JoinHandle<()>>, deadline: Instant) -> usize {
    let mut left = threads;
    loop {
        let (done, running): (Vec<_>, Vec<_>) = left.into_iter().partition(JoinHandle::is_finished);
        for t in done {
            let _ = t.join();
        }
        if running.is_empty() || Instant::now() >= deadline {
            return running.len();
        }
        left = running;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fleet-wide settings a device thread reads.
struct Run {
    config: FleetConfig,
}

/// How `spec`'s device connects to `host`: with its password over plain TCP, or with its
/// certificate over mutual TLS (no password) when the fleet has [`FleetConfig::tls_for`].
fn connect_options(spec: &SimDeviceSpec, host: &str, config: &FleetConfig) -> Result<ConnectOptions, FleetError> {
    let thing = spec.thing.as_str();
    let options = ConnectOptions::new(thing, host, config.mqtt_port);
    let mut options = match &config.tls_for {
        None => options.with_credentials(thing, &(config.password_for)(&spec.thing)),
        Some(tls_for) => {
            let tls_error = |detail: String| FleetError::Tls { thing: thing.to_string(), detail };
            let id = tls_for(&spec.thing).ok_or_else(|| tls_error("no certificate was given for it".into()))?;
            options.with_tls(&id.ca_pem, &id.cert_pem, &id.key_pem).map_err(|e| tls_error(e.0))?
        }
    };
    options.keep_alive = config.keep_alive;
    options.reconnect_delay = config.reconnect_delay;
    Ok(options)
}

/// A device's life: boots until the fleet stops.
fn run_device(
    dev: &Arc<DeviceShared>,
    spec: &SimDeviceSpec,
    options: &ConnectOptions,
    power: Power,
    run: &Run,
    stop: &AtomicBool,
    delay: Duration,
) {
    if !sleep_unless_stopped(stop, delay) {
        return;
    }
    let config = &run.config;
    let storage = MemStorage::new(power);
    let faults = HttpFaults {
        // The tampering man in the middle rewrites the same byte a corrupting link flips.
        corrupt_at: (spec.faults.corrupt_download || spec.faults.tamper_download).then_some(CORRUPT_AT),
        truncate_at: None,
        drop_at: spec.faults.drop_download.then_some(DROP_AT),
    };
    let faults = Arc::new(Mutex::new(faults));
    let thing = spec.thing.as_str();
    let mut device = DeviceConfig::new(spec.thing.clone(), spec.device_type.clone());
    device.trust = config.trust.clone();
    device.security_floor = config.min_security_floor;
    let mut agent_config = AgentConfig::new(device, config.slot_size);
    agent_config.self_test_timeout = config.self_test_timeout;
    agent_config.poll_interval = config.poll_interval;
    agent_config.retry_delay = config.retry_delay;
    agent_config.reboot_grace = config.reboot_grace;
    agent_config.capabilities = demo_capabilities(&spec.device_type);
    // The sensors outlive the firmware's reboots.
    let sensor = SharedSensor(Arc::new(Mutex::new(SimSensor::new(&spec.thing, &spec.device_type))));
    // Enough for a pump to see its DISCONNECT go out, or one connection attempt fail.
    let pump_wait = config.reconnect_delay + Duration::from_secs(10);

    while !stop.load(Ordering::SeqCst) {
        dev.flash.power_on();
        dev.boots.fetch_add(1, Ordering::SeqCst);
        raise_floor(&mut agent_config.device, dev, spec, config);
        let (client, connection) = connect_with(options);
        let (tx, rx) = channel();
        let tamper = spec.faults.tamper_download.then(|| Tamper::new(config.http_timeout));
        let observed = Observed { inner: connection, device: dev.clone(), tamper };
        let pump = std::thread::Builder::new()
            .name(format!("mqtt-{thing}"))
            .stack_size(config.stack_size)
            .spawn(move || pump_mqtt(observed, tx));
        let pump = match pump {
            Ok(pump) => pump,
            Err(e) => {
                // Like a device that cannot bring its network up: try again after a pause.
                dev.fail(format!("cannot start the MQTT thread: {e}"));
                sleep_unless_stopped(stop, config.reconnect_delay);
                continue;
            }
        };
        let http = HostHttp::new(config.http_timeout, faults.clone());
        let flash = dev.flash.clone();
        let mut agent = Agent::new(agent_config.clone(), client.clone(), rx, http, dev.flash.clone(), storage.clone())
            .with_self_test(move || !flash.running_image_fails_self_test())
            .with_application(sensor.clone());
        let result = agent.run(stop);
        // The restart: the agent (and the receiving end of the pump) is gone; the session
        // ends after what the agent queued, and the pump with it.
        drop(agent);
        let _ = client.disconnect();
        drop(client);
        join_until(vec![pump], Instant::now() + pump_wait);
        dev.connected.store(false, Ordering::SeqCst);
        match result {
            Ok(Exit::Reboot) => {}
            Ok(Exit::Stopped) => return,
            Err(e) => {
                // A device's watchdog would restart it; pause so a persistent fault does not
                // spin.
                dev.fail(e.to_string());
                sleep_unless_stopped(stop, config.reconnect_delay);
            }
        }
    }
}

/// Sleeps `total` in short steps; false when the fleet stopped meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// Raises the device's anti-rollback floor to the security version of the confirmed image it
/// booted (never lowers it): ESP-IDF raises its eFuse counter once an image is confirmed.
fn raise_floor(device: &mut DeviceConfig, dev: &DeviceShared, spec: &SimDeviceSpec, config: &FleetConfig) {
    let (index, state) = dev.flash.running_slot();
    if state != SimSlotState::Valid {
        return;
    }
    let running = dev.flash.slot(index).version.and_then(|v| FirmwareVersion::parse(&v).ok());
    if let Some(sv) = running.and_then(|v| config.security_versions.get(&(spec.device_type.clone(), v)).copied()) {
        device.security_floor = device.security_floor.max(sv);
    }
}

/// The man in the middle of the tamper fault: on a job document, it fetches the image from
/// the document's URL as the device will get it (the byte at [`CORRUPT_AT`] rewritten, by the
/// same link fault the device's downloads carry), hashes it, and puts that digest in place of
/// the document's `firmware.sha256`. Everything else, the signature included, passes as it
/// was: a forged signature is what the attacker cannot make.
struct Tamper {
    http_timeout: Duration,
    /// Original digest (hex) → the tampered image's digest (hex).
    rewritten: BTreeMap<String, String>,
}

impl Tamper {
    fn new(http_timeout: Duration) -> Self {
        Tamper { http_timeout, rewritten: BTreeMap::new() }
    }

    /// `data` of a message on `topic`, rewritten when it delivers a job document.
    fn rewrite(&mut self, topic: &str, data: Vec<u8>) -> Vec<u8> {
        if !(topic.ends_with("/jobs/notify-next") || topic.ends_with("/jobs/$next/get/accepted")) {
            return data;
        }
        let Ok(Some(execution)) = ota_core::job::parse_execution(&data) else {
            return data;
        };
        let doc = &execution.document;
        let (Some(url), Some(sha)) = (
            doc.pointer("/firmware/url").and_then(|v| v.as_str()),
            doc.pointer("/firmware/sha256").and_then(|v| v.as_str()),
        ) else {
            return data;
        };
        let new = match self.rewritten.get(sha) {
            Some(new) => new.clone(),
            None => match tampered_digest(url, self.http_timeout) {
                Some(new) => {
                    self.rewritten.insert(sha.to_string(), new.clone());
                    new
                }
                // The image cannot be fetched: the attacker lets this delivery through.
                None => return data,
            },
        };
        replace_all(&data, sha.as_bytes(), new.as_bytes())
    }
}

/// The SHA-256 (hex) of the image at `url` with the byte at [`CORRUPT_AT`] rewritten.
fn tampered_digest(url: &str, timeout: Duration) -> Option<String> {
    use embedded_svc::http::Status as _;
    use embedded_svc::http::client::Connection as _;
    use embedded_svc::io::Read as _;
    let faults = HttpFaults { corrupt_at: Some(CORRUPT_AT), ..Default::default() };
    let mut http = HostHttp::new(timeout, Arc::new(Mutex::new(faults)));
    http.initiate_request(embedded_svc::http::Method::Get, url, &[]).ok()?;
    http.initiate_response().ok()?;
    if http.status() != 200 {
        return None;
    }
    let mut verifier = ota_core::integrity::Sha256Verifier::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = http.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
    }
    Some(verifier.finish().0.to_hex())
}

/// `data` with every `from` replaced by `to`.
fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if !from.is_empty() && data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// The device's MQTT connection, noting in the device's state whether it has a session, and,
/// for a tampered device, passing through the man in the middle.
struct Observed {
    inner: HostMqttConnection,
    device: Arc<DeviceShared>,
    tamper: Option<Tamper>,
}

impl ErrorType for Observed {
    type Error = MqttError;
}

impl Connection for Observed {
    type Event<'a> = HostMqttEvent;

    fn next(&mut self) -> Result<HostMqttEvent, MqttError> {
        let mut event = self.inner.next()?;
        if let (Some(tamper), HostMqttEvent::Received { topic, data }) = (self.tamper.as_mut(), &mut event) {
            *data = tamper.rewrite(topic, std::mem::take(data));
        }
        match event.payload() {
            EventPayload::Connected(_) => {
                self.device.connected.store(true, Ordering::SeqCst);
                *self.device.connect_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            EventPayload::Disconnected => {
                self.device.connected.store(false, Ordering::SeqCst);
                // A refused CONNECT (a revoked certificate, a wrong password), a rejected TLS
                // handshake or a closed socket: what the snapshot shows as the connect error.
                let error = self.inner.last_error().map(|e| format!("cannot connect to the MQTT endpoint: {e}"));
                *self.device.connect_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
            }
            _ => {}
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{ImageServer, SyntheticImage};

    fn document(url: &str, sha: &str) -> Vec<u8> {
        format!(
            r#"{{"execution":{{"jobId":"update-pet_feeder-2_0_0-1","status":"QUEUED","jobDocument":{{"operation":"ota_update","deviceType":"pet_feeder","version":"2.0.0","firmware":{{"url":"{url}","size":65536,"sha256":"{sha}","signature":{{"alg":"ecdsa-p256-sha256","keyId":"00112233445566778899aabbccddeeff","value":"MEUCIQ=="}}}}}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn the_man_in_the_middle_rewrites_the_digest_to_the_tampered_image_and_leaves_the_signature() {
        let server = ImageServer::start().unwrap();
        let image = SyntheticImage::new("2.0.0", 65_536);
        let url = server.put("/fw.bin", image.clone());
        let sha = image.sha256().to_hex();
        let mut tampered = vec![0u8; 65_536];
        image.fill(0, &mut tampered);
        tampered[CORRUPT_AT as usize] ^= 0xff;
        let mut v = ota_core::integrity::Sha256Verifier::new();
        v.update(&tampered);
        let expected = v.finish().0.to_hex();

        let mut mitm = Tamper::new(Duration::from_secs(5));
        let doc = document(&url, &sha);
        let out = mitm.rewrite("$aws/things/pet_feeder-01/jobs/notify-next", doc.clone());
        assert_eq!(out, document(&url, &expected), "only the digest changes");
        // Delivered again: rewritten the same way, without fetching the image again.
        let again = mitm.rewrite("$aws/things/pet_feeder-01/jobs/$next/get/accepted", doc.clone());
        assert_eq!(again, out);
        assert_eq!(server.requests().len(), 1);
        // Other messages pass untouched.
        let shadow = mitm.rewrite("$aws/things/pet_feeder-01/shadow/update/accepted", doc.clone());
        assert_eq!(shadow, doc);
    }

    #[test]
    fn a_tls_fleet_with_a_device_without_a_usable_identity_does_not_start() {
        let specs = demo_fleet(&[DeviceType::parse("pet_feeder").unwrap()], 2, FaultRates::default(), 1).unwrap();
        let mut config = FleetConfig::new("127.0.0.1", 8883, Arc::new(|_: &ThingName| String::new()));
        config.tls_for = Some(Arc::new(|_: &ThingName| None));
        let err = SimFleet::start(specs.clone(), config.clone()).unwrap_err();
        assert!(matches!(&err, FleetError::Tls { thing, .. } if thing == "pet_feeder-01"), "{err}");
        let bad = DeviceTlsIdentity { ca_pem: "not pem".into(), cert_pem: String::new(), key_pem: String::new() };
        config.tls_for = Some(Arc::new(move |_: &ThingName| Some(bad.clone())));
        let err = SimFleet::start(specs, config).unwrap_err().to_string();
        assert!(err.contains("pet_feeder-01") && err.contains("CA"), "{err}");
    }

    #[test]
    fn an_image_it_cannot_fetch_is_let_through_as_it_was() {
        let mut mitm = Tamper::new(Duration::from_secs(2));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let doc = document(&format!("http://127.0.0.1:{port}/gone.bin"), &"ab".repeat(32));
        assert_eq!(mitm.rewrite("$aws/things/d/jobs/notify-next", doc.clone()), doc);
    }
}
