//! The simulated fleet: one tokio task per device, each driving the device's real update state
//! machine (`ota_core::update::UpdateMachine`, the one the firmware runs) over its own MQTT
//! connection and HTTP downloads. Only the hardware is simulated: flash writes are no-ops, a
//! reboot closes the MQTT connection and boots the new "image" into a fresh machine, which
//! reconnects, confirms itself and reports SUCCEEDED, exactly as the agent does on a board.
//!
//! The MQTT client is minimal on purpose (rumqttc's 3.1.1 codec over a tokio `TcpStream`,
//! QoS 1 both ways, one task per device): rumqttc's `AsyncClient` adds an event loop, a
//! request channel and its own buffers per client, which 10,000 devices on two cores do not
//! need. It runs in a child process of the bench so that the devices' 10,000 sockets and the
//! server's 10,000 do not share one open-file limit.
//!
//! With `--tls` each device connects over mutual TLS (tokio-rustls on ring) with its own
//! certificate from the data dir's CA, as a real board does, and sends no password: the
//! endpoint takes its identity from the certificate. Certificates are issued by the bench
//! before the fleet starts ([`write_tls_devices`]) and read here from one file. TLS sessions
//! are not resumed: a device that reboots has lost them, so every connection, the first and
//! the one after the reboot, is a full handshake.
//!
//! With `--commands` (the command fan-out, see `commands`) each device also runs the agent's
//! command machine (`ota_core::command::CommandMachine`, the one the firmware runs) beside its
//! update machine, fed as `ota_device`'s agent feeds it: it subscribes to its command
//! requests and its `config` shadow, reports its (empty) configuration and asks for it at each
//! connect, and answers a `reboot` as the machine decides: `SUCCEEDED` (`REBOOTING`) on the
//! response topic first, then the reboot, after the agent's default grace of one second
//! ([`REBOOT_GRACE`]) in which it still reads (and acknowledges) what arrives, as its MQTT
//! client would; then it closes the connection, boots the same image into fresh machines and
//! reconnects. It has no application: no telemetry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use ota_core::command::{Capabilities, CommandAction, CommandEvent, CommandMachine, CommandResponse, ExecutionStatus};
use ota_core::names::{DeviceType, ThingName};
use ota_core::topics::CommandTopic;
use ota_core::update::{Action, BootInfo, DeviceConfig, Event, PendingJob, RunningImage, SlotState, UpdateMachine};
use ota_core::version::FirmwareVersion;
use ota_local::link::DeviceCredentials;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// Largest MQTT packet a device accepts (a job document is about 1 KB).
const MAX_PACKET: usize = 128 * 1024 + 4096;
/// The keep-alive each device announces; it pings at two thirds of it.
const KEEP_ALIVE_S: u16 = 60;
/// Capacity of the inactive slot: the XIAO ESP32S3's 3.9 MB `ota_1`.
const UPDATE_SLOT_SIZE: u64 = 0x3C_0000;
/// How long each device has been up when the fleet starts, as the machine's clock sees it:
/// longer than the progress policy's 5 s, so no device's first progress report depends on
/// how soon after the fleet came up the rollout started.
const UPTIME_MS: u64 = 60_000;
/// Bytes handed to the machine per `Chunk`, as the agent reads them: one flash sector.
const CHUNK: usize = 4096;
/// How long a device waits between queuing its answer to `reboot` and restarting: the
/// agent's default `reboot_grace`, for the answer to leave.
pub const REBOOT_GRACE: Duration = Duration::from_secs(1);

/// What the fleet did, counted across all devices: the figures the bench compares.
#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    subscribes: AtomicU64,
    publishes_up: AtomicU64,
    bytes_up: AtomicU64,
    publishes_down: AtomicU64,
    bytes_down: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    download_failures: AtomicU64,
    succeeded_reports: AtomicU64,
    failed_reports: AtomicU64,
    ready: AtomicU64,
    /// Devices whose first connection (CONNACK) succeeded, and when the last of them did
    /// (microseconds since the fleet started).
    first_connects: AtomicU64,
    last_first_connect_us: AtomicU64,
    /// `--commands`: requests received, answers sent (and of them `SUCCEEDED`), and devices
    /// idle again after the reboot a command asked for.
    command_requests: AtomicU64,
    command_answers: AtomicU64,
    command_succeeded: AtomicU64,
    back_after_reboot: AtomicU64,
}

static COUNTERS: Counters = Counters {
    connects: AtomicU64::new(0),
    connect_failures: AtomicU64::new(0),
    subscribes: AtomicU64::new(0),
    publishes_up: AtomicU64::new(0),
    bytes_up: AtomicU64::new(0),
    publishes_down: AtomicU64::new(0),
    bytes_down: AtomicU64::new(0),
    downloads: AtomicU64::new(0),
    download_bytes: AtomicU64::new(0),
    download_failures: AtomicU64::new(0),
    succeeded_reports: AtomicU64::new(0),
    failed_reports: AtomicU64::new(0),
    ready: AtomicU64::new(0),
    first_connects: AtomicU64::new(0),
    last_first_connect_us: AtomicU64::new(0),
    command_requests: AtomicU64::new(0),
    command_answers: AtomicU64::new(0),
    command_succeeded: AtomicU64::new(0),
    back_after_reboot: AtomicU64::new(0),
};

/// A copy of the counters, as the child prints it for the bench (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// MQTT CONNECTs accepted (first connections and reconnections after the reboot).
    pub connects: u64,
    pub connect_failures: u64,
    pub subscribes: u64,
    /// PUBLISH packets from devices to the cloud, and their payload bytes.
    pub publishes_up: u64,
    pub bytes_up: u64,
    /// PUBLISH packets from the cloud delivered to devices, and their payload bytes.
    pub publishes_down: u64,
    pub bytes_down: u64,
    pub downloads: u64,
    pub download_bytes: u64,
    pub download_failures: u64,
    /// Job status updates with `SUCCEEDED` / `FAILED` the devices sent.
    pub succeeded_reports: u64,
    pub failed_reports: u64,
    /// Devices that are connected and were told their next job (none) at least once.
    pub ready: u64,
    /// Peak resident memory of the fleet process (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// PUBLISH packets by kind (`up ` / `down ` and the topic below the thing, job ids as
    /// `{id}`, notify-next split by whether it carries a job).
    #[serde(default)]
    pub by_kind: BTreeMap<String, u64>,
    /// `--commands`: command requests the devices received, answers they sent (and of them
    /// `SUCCEEDED`). The agent does not subscribe to `response/accepted/json`, so the
    /// cloud's acknowledgements never reach it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub command_requests: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub command_answers: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub command_succeeded: u64,
    /// `--commands`: devices connected and idle again (told their next job) after the reboot
    /// a command asked for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub back_after_reboot: u64,
}

impl Snapshot {
    fn now() -> Self {
        let c = &COUNTERS;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connects: l(&c.connects),
            connect_failures: l(&c.connect_failures),
            subscribes: l(&c.subscribes),
            publishes_up: l(&c.publishes_up),
            bytes_up: l(&c.bytes_up),
            publishes_down: l(&c.publishes_down),
            bytes_down: l(&c.bytes_down),
            downloads: l(&c.downloads),
            download_bytes: l(&c.download_bytes),
            download_failures: l(&c.download_failures),
            succeeded_reports: l(&c.succeeded_reports),
            failed_reports: l(&c.failed_reports),
            ready: l(&c.ready),
            peak_rss_kib: crate::peak_rss_kib(),
            by_kind: KINDS.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            command_requests: l(&c.command_requests),
            command_answers: l(&c.command_answers),
            command_succeeded: l(&c.command_succeeded),
            back_after_reboot: l(&c.back_after_reboot),
        }
    }

    /// What happened between `earlier` and `self` (the peak memory is `self`'s).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            connects: self.connects - earlier.connects,
            connect_failures: self.connect_failures - earlier.connect_failures,
            subscribes: self.subscribes - earlier.subscribes,
            publishes_up: self.publishes_up - earlier.publishes_up,
            bytes_up: self.bytes_up - earlier.bytes_up,
            publishes_down: self.publishes_down - earlier.publishes_down,
            bytes_down: self.bytes_down - earlier.bytes_down,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
            download_failures: self.download_failures - earlier.download_failures,
            succeeded_reports: self.succeeded_reports - earlier.succeeded_reports,
            failed_reports: self.failed_reports - earlier.failed_reports,
            ready: self.ready,
            peak_rss_kib: self.peak_rss_kib,
            by_kind: self
                .by_kind
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.by_kind.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            command_requests: self.command_requests - earlier.command_requests,
            command_answers: self.command_answers - earlier.command_answers,
            command_succeeded: self.command_succeeded - earlier.command_succeeded,
            back_after_reboot: self.back_after_reboot - earlier.back_after_reboot,
        }
    }
}

/// Counters only `--commands` moves are left out of the other modes' JSON.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// With `OTA_BENCH_TRACE=<thing name>`, that device's messages go to stderr: to see why a
/// device sent what it sent.
fn trace(thing: &ThingName, clock: Instant, direction: &str, topic: &str, payload: &[u8]) {
    static TRACED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if TRACED.get_or_init(|| std::env::var("OTA_BENCH_TRACE").ok()).as_deref() == Some(thing.as_str()) {
        let ms = clock.elapsed().as_millis();
        eprintln!("trace {ms:>7} ms {direction:<4} {topic} {}", String::from_utf8_lossy(payload));
    }
}

static KINDS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts one PUBLISH under its kind: the topic below `$aws/things/{thing}/`, with the job id
/// replaced and a notify-next told apart by whether it offers a job; a Commands API topic as
/// `commands/{id}/...` below the execution, a device's answer with its status.
fn count_kind(direction: &str, topic: &str, payload: &[u8]) {
    if let Some((_, _, which)) = ota_core::topics::parse_command(topic) {
        // `.../executions/{id}/request/json` → `request/json`.
        let below = topic.rsplit_once("/executions/").map_or(topic, |(_, r)| r);
        let tail = below.split_once('/').map_or(below, |(_, t)| t);
        let mut kind = format!("{direction} commands/{{id}}/{tail}");
        if which == CommandTopic::Response {
            let status = CommandResponse::parse(payload).map(|r| r.status.as_str()).unwrap_or("?");
            kind.push_str(&format!(" {status}"));
        }
        *KINDS.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
        return;
    }
    let below = topic.splitn(4, '/').nth(3).unwrap_or(topic);
    let mut kind = match below.split('/').collect::<Vec<_>>().as_slice() {
        ["jobs", id, rest @ ..] if !id.starts_with('$') && *id != "notify-next" => {
            format!("{direction} jobs/{{id}}/{}", rest.join("/"))
        }
        _ => format!("{direction} {below}"),
    };
    if below == "jobs/notify-next" {
        kind.push_str(if payload.windows(11).any(|w| w == b"\"execution\"") { " (job)" } else { " (none)" });
    }
    if direction == "up" && kind.ends_with("/update") {
        let text = String::from_utf8_lossy(payload);
        let status = ["IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"].into_iter().find(|s| text.contains(s));
        kind.push_str(&format!(" {}", status.unwrap_or("?")));
    }
    *KINDS.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
}

/// What the child process is told on its command line.
#[derive(Debug, Clone)]
pub struct FleetArgs {
    pub mqtt: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub devices: u32,
    pub device_type: DeviceType,
    pub version: FirmwareVersion,
    /// Connections being opened at once while the fleet comes up (the listener's backlog is
    /// 1,024; more at once only makes the kernel drop SYNs and clients wait a second).
    pub connect_concurrency: usize,
    /// `--tls`: the file of device certificates written by [`write_tls_devices`]; the fleet
    /// then connects over mutual TLS and the address is the TLS listener's.
    pub tls_devices: Option<std::path::PathBuf>,
    /// `--commands`: each device also runs the agent's command machine.
    pub commands: bool,
}

/// What the bench hands the fleet for `--tls`: the CA to trust the server by, and each
/// device's certificate and key (PEM), device `i` at index `i - 1`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TlsDevices {
    pub ca_pem: String,
    pub devices: Vec<TlsDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TlsDevice {
    pub thing: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Writes `devices` where the fleet process reads it (owner-only: it holds private keys).
pub fn write_tls_devices(path: &std::path::Path, devices: &TlsDevices) -> Result<(), String> {
    let json = serde_json::to_vec(devices).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, &json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One rustls client configuration per device (ring, the CA as the only root, the device's
/// certificate), with resumption off: a rebooted device has no session to resume.
fn tls_configs(path: &std::path::Path, devices: u32) -> Result<Vec<Arc<rustls::ClientConfig>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TlsDevices = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.devices.len() < devices as usize {
        return Err(format!("{} holds {} certificates for {devices} devices", path.display(), file.devices.len()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(file.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the CA certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA certificate: {e}"))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    file.devices
        .iter()
        .take(devices as usize)
        .map(|d| {
            let chain = CertificateDer::pem_slice_iter(d.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}'s certificate: {e}", d.thing))?;
            let key =
                PrivateKeyDer::from_pem_slice(d.key_pem.as_bytes()).map_err(|e| format!("{}'s key: {e}", d.thing))?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}'s certificate: {e}", d.thing))?;
            config.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(config))
        })
        .collect()
}

/// The thing name of device `i` (1-based) of type `device_type`; all names have the same length.
pub fn thing_name(device_type: &DeviceType, i: u32) -> ThingName {
    ThingName::parse(&format!("{device_type}-{i:05}")).expect("a valid thing name")
}

/// The child process: starts every device, prints `{"ready": ...}` once all are connected
/// and idle, then answers each line on stdin with a [`Snapshot`] line; `quit` or the end of
/// stdin prints a last snapshot and ends the process.
pub async fn run_child(args: FleetArgs) -> Result<(), String> {
    // Read before the clock starts: what a board has in flash before it boots.
    enum Identities {
        Certificates(std::vec::IntoIter<Arc<rustls::ClientConfig>>),
        Passwords(DeviceCredentials),
    }
    let mut identities = match &args.tls_devices {
        Some(path) => Identities::Certificates(tls_configs(path, args.devices)?.into_iter()),
        None => Identities::Passwords(
            DeviceCredentials::load_or_create(&args.data_dir).map_err(|e| format!("device secret: {e}"))?,
        ),
    };
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = Instant::now();
    for i in 1..=args.devices {
        let thing = thing_name(&args.device_type, i);
        let auth = match &mut identities {
            Identities::Certificates(configs) => Auth::Tls(configs.next().ok_or("fewer certificates than devices")?),
            Identities::Passwords(creds) => Auth::Password(creds.password_for(&thing)),
        };
        let device = Device {
            thing,
            auth,
            device_type: args.device_type.clone(),
            mqtt: args.mqtt,
            gate: gate.clone(),
            clock: started,
            commands: args.commands,
        };
        tokio::spawn(device.run(args.version.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while COUNTERS.ready.load(Ordering::Relaxed) < u64::from(args.devices) {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} devices came up within 10 minutes ({} connect failures)",
                COUNTERS.ready.load(Ordering::Relaxed),
                args.devices,
                COUNTERS.connect_failures.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_s = COUNTERS.last_first_connect_us.load(Ordering::Relaxed) as f64 / 1e6;
    let ready = serde_json::json!({
        "ready": args.devices,
        "seconds": started.elapsed().as_secs_f64(),
        "connected_seconds": connected_s,
    });
    println!("{ready}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = lines.next_line().await.map_err(|e| format!("stdin: {e}"))?;
        println!("{}", serde_json::to_string(&Snapshot::now()).map_err(|e| e.to_string())?);
        if line.is_none_or(|l| l.trim() == "quit") {
            return Ok(());
        }
    }
}

/// How a device proves who it is.
enum Auth {
    /// Username and password in CONNECT, over plain TCP.
    Password(String),
    /// Its certificate, over mutual TLS; CONNECT carries only the client id.
    Tls(Arc<rustls::ClientConfig>),
}

/// One simulated device and what it needs to reach the cloud.
struct Device {
    thing: ThingName,
    auth: Auth,
    device_type: DeviceType,
    mqtt: SocketAddr,
    gate: Arc<Semaphore>,
    clock: Instant,
    /// `--commands`: the agent's command machine runs beside the update machine.
    commands: bool,
}

/// What the firmware of a `--commands` device declares: `reboot`, and no settings.
fn bench_capabilities() -> Capabilities {
    Capabilities { commands: vec!["reboot".to_string()], settings: Default::default() }
}

/// A device's command side for one boot (`--commands`): the machine, and when the reboot it
/// asked for is due.
struct Commands {
    machine: CommandMachine,
    reboot_at: Option<tokio::time::Instant>,
}

/// The device's flash and NVS, which survive reboots.
#[derive(Debug)]
struct Flash {
    boot: BootInfo,
    pending: Option<PendingJob>,
    /// The version the boot slot was switched to, if it was.
    next: Option<FirmwareVersion>,
}

/// Which answer to `$next/get` the device is waiting for, to count it.
#[derive(Debug)]
struct Readiness {
    /// The first after the fleet started: the device is up.
    first_boot: bool,
    /// The first after a reboot a command asked for: the device is back.
    back_after_command: bool,
}

/// Why a connection's loop ended.
enum Ended {
    Reboot,
    ConnectionLost,
}

impl Device {
    async fn run(self, version: FirmwareVersion) {
        let mut flash = Flash {
            boot: BootInfo {
                running: RunningImage { version, slot: "ota_0".into(), state: SlotState::Valid },
                update_slot_state: SlotState::Empty,
                update_slot_size: UPDATE_SLOT_SIZE,
                pending: None,
            },
            pending: None,
            next: None,
        };
        let mut ready = Readiness { first_boot: true, back_after_command: false };
        let mut first_connect = true;
        loop {
            let mut machine = UpdateMachine::new(DeviceConfig::new(self.thing.clone(), self.device_type.clone()));
            machine.handle(Event::Booted(flash.boot.clone()));
            let mut commands = self.commands.then(|| Commands {
                machine: CommandMachine::new(&self.thing, bench_capabilities(), None),
                reboot_at: None,
            });
            let ended = loop {
                let Some(mut conn) = self.connect().await else { return };
                if first_connect {
                    first_connect = false;
                    add(&COUNTERS.first_connects, 1);
                    let us = u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                    COUNTERS.last_first_connect_us.fetch_max(us, Ordering::Relaxed);
                }
                machine.handle(Event::Connected);
                if let Some(c) = commands.as_mut() {
                    c.machine.handle(CommandEvent::Connected { now_ms: self.uptime_ms() });
                }
                match self.session(&mut conn, &mut machine, commands.as_mut(), &mut flash, &mut ready).await {
                    Ended::Reboot => break Ended::Reboot,
                    Ended::ConnectionLost => {
                        machine.handle(Event::Disconnected);
                        if let Some(c) = commands.as_mut() {
                            c.machine.handle(CommandEvent::Disconnected);
                        }
                    }
                }
            };
            if matches!(ended, Ended::Reboot) {
                flash.reboot();
            }
        }
    }

    /// Connects and authenticates, retrying for a while; `None` if the endpoint stays away.
    async fn connect(&self) -> Option<Conn> {
        for attempt in 0..50 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let permit = self.gate.acquire().await.ok()?;
            let result = Conn::open(self.mqtt, &self.thing, &self.auth).await;
            drop(permit);
            match result {
                Ok(conn) => {
                    add(&COUNTERS.connects, 1);
                    return Some(conn);
                }
                Err(_) => add(&COUNTERS.connect_failures, 1),
            }
        }
        None
    }

    /// Runs one MQTT session until the device reboots or the connection drops.
    async fn session(
        &self,
        conn: &mut Conn,
        machine: &mut UpdateMachine,
        mut commands: Option<&mut Commands>,
        flash: &mut Flash,
        ready: &mut Readiness,
    ) -> Ended {
        let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE_S) * 2 / 3);
        let mut next_ping = tokio::time::Instant::now() + ping_every;
        loop {
            match self.execute(conn, machine, flash).await {
                Ok(true) => return Ended::Reboot,
                Ok(false) => {}
                Err(_) => return Ended::ConnectionLost,
            }
            if let Some(c) = commands.as_deref_mut()
                && c.reboot_at.is_none()
            {
                match self.execute_commands(conn, &mut c.machine).await {
                    Ok(true) => c.reboot_at = Some(tokio::time::Instant::now() + REBOOT_GRACE),
                    Ok(false) => {}
                    Err(_) => return Ended::ConnectionLost,
                }
            }
            let reboot_at = commands.as_deref().and_then(|c| c.reboot_at);
            let packet = tokio::select! {
                p = conn.read() => p,
                _ = tokio::time::sleep_until(next_ping) => {
                    next_ping += ping_every;
                    if conn.send(Packet::PingReq).await.is_err() {
                        return Ended::ConnectionLost;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(reboot_at.unwrap_or(next_ping)), if reboot_at.is_some() => {
                    ready.back_after_command = true;
                    return Ended::Reboot;
                }
            };
            let Ok(Some(packet)) = packet else { return Ended::ConnectionLost };
            if let Packet::Publish(p) = packet {
                add(&COUNTERS.publishes_down, 1);
                add(&COUNTERS.bytes_down, p.payload.len() as u64);
                count_kind("down", &p.topic, &p.payload);
                trace(&self.thing, self.clock, "down", &p.topic, &p.payload);
                if p.qos == QoS::AtLeastOnce && conn.queue(Packet::PubAck(PubAck::new(p.pkid))).is_err() {
                    return Ended::ConnectionLost;
                }
                if let Some((_, _, CommandTopic::Request)) = ota_core::topics::parse_command(&p.topic) {
                    add(&COUNTERS.command_requests, 1);
                }
                if reboot_at.is_some() {
                    // Restarting: what arrives now is acknowledged by the MQTT client and
                    // lost with the reboot, as on a board.
                    continue;
                }
                if p.topic.ends_with("/jobs/$next/get/accepted") {
                    if ready.first_boot {
                        ready.first_boot = false;
                        add(&COUNTERS.ready, 1);
                    } else if ready.back_after_command {
                        ready.back_after_command = false;
                        add(&COUNTERS.back_after_reboot, 1);
                    }
                }
                // A command sees the update machine's phase as it is now (as the agent feeds
                // them); what is not the command machine's goes to the update machine.
                let taken = commands.as_deref_mut().is_some_and(|c| {
                    let phase = machine.phase();
                    c.machine.handle_message(&p.topic, &p.payload, phase)
                });
                if !taken {
                    machine.handle_message(&p.topic, &p.payload);
                }
            }
        }
    }

    /// Executes the machine's actions in order; `Ok(true)` when the last one was a reboot.
    async fn execute(&self, conn: &mut Conn, machine: &mut UpdateMachine, flash: &mut Flash) -> std::io::Result<bool> {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Subscribe { topic } => {
                    add(&COUNTERS.subscribes, 1);
                    let mut s = Subscribe::new(topic, QoS::AtLeastOnce);
                    s.pkid = conn.next_pkid();
                    conn.queue(Packet::Subscribe(s)).map_err(std::io::Error::other)?;
                }
                Action::Publish { topic, payload } => {
                    add(&COUNTERS.publishes_up, 1);
                    add(&COUNTERS.bytes_up, payload.len() as u64);
                    count_kind("up", &topic, payload.as_bytes());
                    trace(&self.thing, self.clock, "up", &topic, payload.as_bytes());
                    if topic.ends_with("/update") && topic.contains("/jobs/") {
                        if payload.contains(r#""status":"SUCCEEDED""#) {
                            add(&COUNTERS.succeeded_reports, 1);
                        } else if payload.contains(r#""status":"FAILED""#) {
                            add(&COUNTERS.failed_reports, 1);
                        }
                    }
                    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
                    p.pkid = conn.next_pkid();
                    conn.queue(Packet::Publish(p)).map_err(std::io::Error::other)?;
                }
                Action::Download { url, offset } => {
                    // What was asked so far goes out first, as the agent's MQTT client would
                    // send it while the download runs.
                    conn.flush().await?;
                    self.download(machine, &url, offset).await;
                }
                Action::PersistPending(p) => flash.pending = Some(p),
                Action::ClearPending => flash.pending = None,
                Action::SetBootSlot => flash.next = flash.pending.as_ref().map(|p| p.target.clone()),
                Action::MarkSlotValid => flash.boot.running.state = SlotState::Valid,
                Action::Reboot | Action::MarkSlotInvalidAndReboot => {
                    conn.flush().await?;
                    return Ok(true);
                }
                Action::BeginUpdate | Action::WriteChunk { .. } | Action::FinishUpdate | Action::AbortUpdate => {}
            }
        }
        conn.flush().await?;
        Ok(false)
    }

    /// Executes the command machine's actions in order, as the agent's `run_commands` does
    /// with no application (a command it runs succeeds doing nothing, no telemetry) and a
    /// simulated flash; `Ok(true)` when one was a reboot (the answer is flushed first).
    async fn execute_commands(&self, conn: &mut Conn, machine: &mut CommandMachine) -> std::io::Result<bool> {
        while let Some(action) = machine.poll_action() {
            match action {
                CommandAction::Subscribe { topic } => {
                    add(&COUNTERS.subscribes, 1);
                    let mut s = Subscribe::new(topic, QoS::AtLeastOnce);
                    s.pkid = conn.next_pkid();
                    conn.queue(Packet::Subscribe(s)).map_err(std::io::Error::other)?;
                }
                CommandAction::Publish { topic, payload } => {
                    add(&COUNTERS.publishes_up, 1);
                    add(&COUNTERS.bytes_up, payload.len() as u64);
                    count_kind("up", &topic, payload.as_bytes());
                    trace(&self.thing, self.clock, "up", &topic, payload.as_bytes());
                    if let Some((_, _, CommandTopic::Response)) = ota_core::topics::parse_command(&topic) {
                        add(&COUNTERS.command_answers, 1);
                        if CommandResponse::parse(payload.as_bytes())
                            .is_ok_and(|r| r.status == ExecutionStatus::Succeeded)
                        {
                            add(&COUNTERS.command_succeeded, 1);
                        }
                    }
                    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
                    p.pkid = conn.next_pkid();
                    conn.queue(Packet::Publish(p)).map_err(std::io::Error::other)?;
                }
                CommandAction::PersistConfig { task, .. } | CommandAction::Run { task, .. } => {
                    machine.handle(CommandEvent::Done { task, error: None });
                }
                CommandAction::Sample => {}
                CommandAction::Reboot => {
                    conn.flush().await?;
                    return Ok(true);
                }
            }
        }
        conn.flush().await?;
        Ok(false)
    }

    /// Milliseconds the device has been up, as its clock says (see [`UPTIME_MS`]).
    fn uptime_ms(&self) -> u64 {
        UPTIME_MS + u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(0)
    }

    /// One HTTP GET of the image, fed to the machine in flash-sector chunks (it hashes them).
    async fn download(&self, machine: &mut UpdateMachine, url: &str, offset: u64) {
        add(&COUNTERS.downloads, 1);
        // Devices have been up for a while (UPTIME_MS) when a rollout reaches them, so each
        // reports its download progress once, as the agent does, in both phases alike.
        let now_ms = || UPTIME_MS + u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(0);
        match http_get(url, offset).await {
            Ok((200 | 206, body)) => {
                add(&COUNTERS.download_bytes, body.len() as u64);
                for chunk in body.chunks(CHUNK) {
                    machine.handle(Event::Chunk { bytes: chunk, now_ms: now_ms() });
                }
                machine.handle(Event::DownloadEnded { now_ms: now_ms() });
            }
            Ok((status, _)) if (400..500).contains(&status) => {
                add(&COUNTERS.download_failures, 1);
                machine.handle(Event::DownloadRefused { status });
            }
            Ok(_) | Err(_) => {
                add(&COUNTERS.download_failures, 1);
                machine.handle(Event::DownloadBroke { now_ms: now_ms() });
            }
        }
    }
}

impl Flash {
    /// What the bootloader does on a restart: boot the switched-to slot unverified, or the
    /// same image again.
    fn reboot(&mut self) {
        if let Some(version) = self.next.take() {
            let slot = if self.boot.running.slot == "ota_0" { "ota_1" } else { "ota_0" };
            self.boot.running = RunningImage { version, slot: slot.into(), state: SlotState::Unverified };
            self.boot.update_slot_state = SlotState::Valid;
        }
        self.boot.pending = self.pending.clone();
    }
}

/// A device's socket: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An MQTT 3.1.1 client connection: rumqttc's codec over a socket, writes batched.
struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pkid: u16,
}

impl Conn {
    /// Connects (with the TLS handshake over `--tls`) and sends CONNECT; `Ok` on a
    /// successful CONNACK.
    async fn open(addr: SocketAddr, thing: &ThingName, auth: &Auth) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match auth {
            Auth::Password(_) => Stream::Plain(tcp),
            Auth::Tls(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = tokio::time::timeout(
                    Duration::from_secs(30),
                    TlsConnector::from(config.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| std::io::Error::other("no TLS handshake within 30 s"))??;
                Stream::Tls(Box::new(tls))
            }
        };
        let mut conn = Conn { stream, rbuf: BytesMut::with_capacity(2048), wbuf: BytesMut::new(), pkid: 0 };
        let mut connect = Connect::new(thing.as_str());
        connect.keep_alive = KEEP_ALIVE_S;
        if let Auth::Password(password) = auth {
            connect.set_login(thing.as_str(), password);
        }
        conn.send(Packet::Connect(connect)).await?;
        match tokio::time::timeout(Duration::from_secs(30), conn.read()).await {
            Ok(Ok(Some(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => Ok(conn),
            Ok(Ok(other)) => Err(std::io::Error::other(format!("CONNECT refused: {other:?}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("no CONNACK within 30 s")),
        }
    }

    fn next_pkid(&mut self) -> u16 {
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        self.pkid
    }

    fn queue(&mut self, packet: Packet) -> Result<(), rumqttc::mqttbytes::Error> {
        packet.write(&mut self.wbuf, MAX_PACKET).map(drop)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            // TLS may hold records back until flushed; a no-op on plain TCP.
            self.stream.flush().await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    async fn send(&mut self, packet: Packet) -> std::io::Result<()> {
        self.queue(packet).map_err(std::io::Error::other)?;
        self.flush().await
    }

    /// The next packet; `None` at the end of the stream. Cancel-safe.
    async fn read(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.rbuf, MAX_PACKET) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(more)) => self.rbuf.reserve(more),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// A minimal HTTP/1.1 GET (`Connection: close`): the status and the whole body.
async fn http_get(url: &str, offset: u64) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::other(format!("{what}: {url}"));
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut stream = TcpStream::connect(authority).await?;
    let range = if offset > 0 { format!("Range: bytes={offset}-\r\n") } else { String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{range}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(70 * 1024);
    stream.read_to_end(&mut response).await?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| bad("no status"))?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
    });
    let body = response.split_off(end + 4);
    if length.is_some_and(|n| n != body.len()) {
        return Err(bad("body cut short"));
    }
    Ok((status, body))
}

/// Reads the fleet's counters from a line the child printed.
pub fn parse_snapshot(line: &str) -> Result<Snapshot, String> {
    serde_json::from_str(line).map_err(|e| format!("the fleet printed {line:?}: {e}"))
}
