//! Control-plane throughput: how many devices per minute ota's local server updates when
//! nothing but the control plane limits it, against AWS IoT Jobs' documented rollout ceiling
//! (`maximumPerMinute` ≤ 1,000 devices per minute) and against a broker-only baseline in the
//! same run.
//!
//! ```text
//! cargo run --release -p ota-benches --bin control_plane -- --devices 10000
//! ```
//!
//! One run does, in order:
//! 1. A temporary data dir with one device type, firmware 1.0.0 and 2.0.0 (a 64 KiB image
//!    each, `--image-kib`), N registered devices on 1.0.0, OTA enabled and a policy with
//!    `max_in_flight` = 1,000 (the policy's maximum: "no concurrency limit" in practice) and
//!    no rate limit. The firmware download server runs on 127.0.0.1 for the whole run.
//! 2. Engine: the embedded MQTT endpoint and the jobs engine, wired as `ota serve` wires
//!    them; N simulated devices (see `fleet`) connect and go idle; the rollout is planned,
//!    then timed from `FleetManager::start` until the engine reports it `completed`.
//! 3. Baseline: a fresh embedded endpoint with the trivial responder of `responder` as the
//!    cloud side (no SQLite, no engine), N fresh devices, the same messages; timed from the
//!    first offer until the last `SUCCEEDED` is answered.
//!
//! The devices run in a child process (this binary with `--fleet`): 10,000 MQTT connections
//! are 20,000 sockets, more than one process may open here (`ulimit -n` 20,000, and no
//! raising it in a container), so the server's ends and the devices' ends live in two
//! processes. Both share the machine's cores, as devices and server would on one host.
//!
//! Over TLS:
//!
//! ```text
//! cargo run --release -p ota-benches --bin control_plane -- --devices 10000 --tls
//! cargo run --release -p ota-benches --bin control_plane -- --devices 10000 --compare-tls --no-baseline
//! ```
//!
//! - `--tls`: the endpoint serves MQTT over mutual TLS only (the TLS listener of
//!   `ota_local::link::embedded_endpoint` with the temporary data dir's [`LocalCa`], as
//!   `ota serve --mqtts-listen` runs it), and every device connects with tokio-rustls (ring)
//!   and its own certificate, sending no password: its identity is its certificate's. The N
//!   certificates are issued before anything is timed (with the CA's key, see [`tls_world`];
//!   the time is printed) and handed to the fleet process in one file. Sessions are not
//!   resumed, so each device does two full handshakes: before the rollout and after its
//!   reboot, within the rollout. Downloads stay plain HTTP, as `ota serve` serves them on
//!   loopback. Works with every mode, `--scaling` included, and applies to both phases.
//! - `--compare-tls`: the engine (and the baseline, unless `--no-baseline`) at one size over
//!   plain MQTT and over TLS in ABBA order (plain, TLS, TLS, plain; each run a fresh data dir
//!   and fleet), then the ratios of the means, TLS / plain: devices per minute during the
//!   rollout, rollout time, the time for all N devices to connect (first CONNACK) and to go
//!   idle before the rollout (not in the rollout's time: where TLS costs most), and the
//!   baseline's time; with the machine's CPU count and load at the start and the end.
//!
//! The command fan-out (issue 16), `reboot` to every device instead of a rollout:
//!
//! ```text
//! cargo run --release -p ota-benches --bin control_plane -- --commands --devices 10000
//! ```
//!
//! - `--commands`: the same world (its firmware also declares `reboot`), and devices that
//!   also run the agent's command machine. Engine: the command is planned and started through
//!   the service (`FleetManager::plan_command`, `start_command`), paced by the policy's
//!   `max_in_flight` and delivered by the jobs engine; timed from `start_command` until
//!   `command_run` reports the run ended, which must be `COMPLETED` with every execution
//!   `SUCCEEDED`. Baseline: a fresh endpoint and a trivial responder sending the same
//!   requests with the same cap, timed from the first request until the last answer. Each
//!   device answers `SUCCEEDED` first, then reboots and reconnects (not in the timed figure;
//!   printed apart). Seconds, commands per minute, the ratio, CPU count and load at the
//!   start and the end, in a table and one JSON line. Works with `--tls` and
//!   `--no-baseline`, not with `--scaling` or `--compare-tls`. See `commands`.

mod commands;
mod fleet;
mod responder;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use ota_core::auth::{Caller, Role};
use ota_core::device::Device;
use ota_core::names::{DeviceType, JobId, NamingConvention};
use ota_core::policy::RolloutPolicy;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};
use ota_local::download::UrlSigner;
use ota_local::jobs::{DeviceInput, DevicePublisher, EngineOptions, JobsEngine};
use ota_local::link::{DeviceCredentials, DeviceEvent, DeviceLink, EndpointOptions, LinkPublisher, embedded_endpoint};
use ota_local::pki::LocalCa;
use ota_local::{EngineContext, SqliteStore};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};

use crate::fleet::{FleetArgs, Snapshot};

/// AWS IoT Jobs' documented ceiling on a rollout's rate: `maximumPerMinute` is 1 to 1,000.
const AWS_MAX_PER_MINUTE: f64 = 1000.0;
const DEVICE_TYPE: &str = "bench_sensor";
const USAGE: &str = "usage: control_plane [--devices N] [--image-kib K] [--max-in-flight M] \
                     [--connect-concurrency C] [--timeout-s S] [--no-baseline] [--tls] \
                     [--scaling N,N,... | --compare-tls | --commands]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("control_plane: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.first().is_some_and(|a| a == "--fleet") {
        parse_fleet_args(&args[1..]).and_then(|a| runtime.block_on(fleet::run_child(a)))
    } else {
        parse_options(&args).and_then(|o| runtime.block_on(run(o)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control_plane: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

/// What the bench is asked to do.
#[derive(Debug, Clone)]
struct Options {
    /// `--scaling`: fleet sizes to run the engine at, one after another, for the cost per device.
    scaling: Vec<u32>,
    devices: u32,
    image_bytes: usize,
    max_in_flight: u32,
    connect_concurrency: usize,
    timeout: Duration,
    baseline: bool,
    /// `--tls`: devices connect over MQTT with mutual TLS, each with its own certificate.
    tls: bool,
    /// `--compare-tls`: plain, TLS, TLS, plain at the same size, for the TLS / plain ratio.
    compare_tls: bool,
    /// `--commands`: the command fan-out (`reboot` to every device) instead of a rollout.
    commands: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        scaling: Vec::new(),
        devices: 10_000,
        image_bytes: 64 * 1024,
        max_in_flight: 1000,
        connect_concurrency: 256,
        timeout: Duration::from_secs(1800),
        baseline: true,
        tls: false,
        compare_tls: false,
        commands: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse::<u64>().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match flag.as_str() {
            "--devices" => o.devices = u32::try_from(value("--devices")?).map_err(|e| e.to_string())?,
            "--image-kib" => o.image_bytes = usize::try_from(value("--image-kib")?).map_err(|e| e.to_string())? * 1024,
            "--max-in-flight" => {
                o.max_in_flight = u32::try_from(value("--max-in-flight")?).map_err(|e| e.to_string())?;
            }
            "--connect-concurrency" => {
                o.connect_concurrency = usize::try_from(value("--connect-concurrency")?).map_err(|e| e.to_string())?;
            }
            "--timeout-s" => o.timeout = Duration::from_secs(value("--timeout-s")?),
            "--no-baseline" => o.baseline = false,
            "--tls" => o.tls = true,
            "--compare-tls" => o.compare_tls = true,
            "--commands" => o.commands = true,
            "--scaling" => {
                let list = it.next().ok_or("--scaling needs a list, e.g. 1000,10000")?;
                o.scaling = list
                    .split(',')
                    .map(|n| n.trim().parse::<u32>().map_err(|e| format!("--scaling {n:?}: {e}")))
                    .collect::<Result<_, _>>()?;
                if o.scaling.is_empty() || o.scaling.contains(&0) {
                    return Err("--scaling needs fleet sizes of at least 1".into());
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.commands && (o.compare_tls || !o.scaling.is_empty()) {
        return Err("--commands runs one fan-out at one size: leave out --scaling and --compare-tls".into());
    }
    if o.compare_tls && (o.tls || !o.scaling.is_empty()) {
        return Err("--compare-tls runs both transports at one size: leave out --tls and --scaling".into());
    }
    if o.devices == 0 || o.image_bytes == 0 {
        return Err("--devices and --image-kib must be at least 1".into());
    }
    Ok(o)
}

fn parse_fleet_args(args: &[String]) -> Result<FleetArgs, String> {
    let [mqtt, data_dir, devices, device_type, version, concurrency, tls_devices, commands] = args else {
        return Err(format!("--fleet takes 8 arguments, got {}", args.len()));
    };
    Ok(FleetArgs {
        mqtt: mqtt.parse().map_err(|e| format!("mqtt address {mqtt:?}: {e}"))?,
        data_dir: PathBuf::from(data_dir),
        devices: devices.parse().map_err(|e| format!("devices {devices:?}: {e}"))?,
        device_type: DeviceType::parse(device_type).map_err(|e| e.to_string())?,
        version: FirmwareVersion::parse(version).map_err(|e| e.to_string())?,
        connect_concurrency: concurrency.parse().map_err(|e| format!("concurrency {concurrency:?}: {e}"))?,
        tls_devices: (tls_devices != "-").then(|| PathBuf::from(tls_devices)),
        commands: match commands.as_str() {
            "commands" => true,
            "-" => false,
            other => return Err(format!("the fleet's last argument is `commands` or `-`, not {other:?}")),
        },
    })
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Peak resident memory of this process (VmHWM), KiB; 0 where `/proc` is missing.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Everything both phases share: the data dir, the service, the download server.
struct World {
    dir: tempfile::TempDir,
    svc: FleetManager,
    store: Arc<SqliteStore>,
    me: Caller,
    device_type: DeviceType,
    v1: FirmwareVersion,
    v2: FirmwareVersion,
    signer: UrlSigner,
    credentials: DeviceCredentials,
    http_stop: watch::Sender<bool>,
    /// `--tls`: the data dir's device CA and the devices' certificates.
    tls: Option<TlsWorld>,
}

/// The TLS side of a world: the CA the endpoint trusts devices by, and the file of device
/// certificates the fleet process reads.
struct TlsWorld {
    ca: LocalCa,
    devices_file: PathBuf,
    /// How long issuing the N device certificates took (before any phase, not timed in one).
    issue_s: f64,
}

/// A deterministic image of `len` bytes that starts like an ESP32 app image.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut img: Vec<u8> = (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(len)
        .collect();
    img[0] = 0xE9;
    img
}

async fn world(o: &Options) -> Result<World, String> {
    fn e(what: &'static str) -> impl Fn(ota_core::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    let dir = tempfile::tempdir().map_err(|err| format!("temp dir: {err}"))?;
    let (backend, store) = ota_local::open_local(dir.path()).map_err(e("data dir"))?;
    let svc = FleetManager::new(backend, Settings::default()).expect("valid settings");
    let me = Caller::new("bench", [Role::Admin]);
    let device_type = DeviceType::parse(DEVICE_TYPE).map_err(e("device type"))?;
    let (v1, v2) = (FirmwareVersion::new(1, 0, 0), FirmwareVersion::new(2, 0, 0));
    for (v, seed) in [(&v1, 1), (&v2, 2)] {
        let request = PublishRequest {
            device_type: device_type.clone(),
            version: v.clone(),
            image: image(o.image_bytes, seed),
            release_notes: format!("bench image {v}"),
            built_at: None,
            // `--commands`: the firmware declares `reboot` (`metadata.json`'s `commands`), as
            // the service requires before it sends one.
            extra: if o.commands { [("commands".to_string(), json!(["reboot"]))].into() } else { Default::default() },
        };
        svc.publish_firmware(&me, request).await.map_err(e("publish"))?;
    }
    let group = NamingConvention::default().thing_group_of(&device_type);
    let devices = (1..=o.devices)
        .map(|i| Device {
            firmware_version: Some(v1.clone()),
            connected: false,
            last_seen: None,
            ..Device::new(fleet::thing_name(&device_type, i), device_type.clone(), group.clone())
        })
        .collect();
    svc.backend().registry.upsert_many(devices).await.map_err(e("register devices"))?;
    svc.set_ota_enabled(&me, &device_type, true).await.map_err(e("enable OTA"))?;
    let policy = RolloutPolicy { max_in_flight: o.max_in_flight, max_per_minute: None, ..Default::default() };
    svc.set_policy(&me, &device_type, Some(policy)).await.map_err(e("policy"))?;
    let credentials = DeviceCredentials::load_or_create(dir.path()).map_err(|err| format!("device secret: {err}"))?;

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|err| format!("HTTP listener: {err}"))?;
    let base_url = format!("http://{}", http.local_addr().map_err(|err| err.to_string())?);
    let signer = UrlSigner::load_or_create(dir.path(), base_url).map_err(|err| format!("download key: {err}"))?;
    // Served as `ota serve` serves downloads (sendfile on Linux).
    let downloads = ota_local::download::Downloads::new(dir.path().to_path_buf(), signer.clone());
    let (http_stop, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(err) = downloads.serve(http, downloads.router(), stop).await {
            eprintln!("control_plane: the HTTP server stopped: {err}");
        }
    });
    let tls = if o.tls { Some(tls_world(dir.path(), &device_type, o.devices)?) } else { None };
    Ok(World { dir, svc, store, me, device_type, v1, v2, signer, credentials, http_stop, tls })
}

/// The data dir's device CA ([`LocalCa`], as `ota serve` makes it) and one certificate per
/// device, written for the fleet process.
///
/// The certificates are made here with the CA's key, as [`LocalCa::issue_device`] makes them
/// (the thing name as the subject's common name, `clientAuth`, a fresh P-256 key each), but
/// not recorded in the CA's ledger: `issue_device` rewrites and syncs the whole ledger for
/// each certificate, which for 10,000 devices is quadratic and would take longer than the
/// bench. The endpoint checks revocation by serial, so certificates the ledger does not list
/// connect the same way; the ledger's stat at each CONNECT is paid all the same.
fn tls_world(data_dir: &std::path::Path, device_type: &DeviceType, devices: u32) -> Result<TlsWorld, String> {
    let t0 = Instant::now();
    let ca = LocalCa::load_or_create(data_dir).map_err(|e| format!("device CA: {e}"))?;
    let issuer = ca_issuer(&ca)?;
    // Unique within this CA: the run's start and the device's number.
    let run = u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    )
    .unwrap_or(0);
    let mut issued = Vec::with_capacity(devices as usize);
    for i in 1..=devices {
        let thing = fleet::thing_name(device_type, i);
        let key = rcgen::KeyPair::generate().map_err(|e| format!("device key: {e}"))?;
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::OrganizationName, "ota device");
        name.push(rcgen::DnType::CommonName, thing.as_str());
        params.distinguished_name = name;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 12];
        serial[..8].copy_from_slice(&run.to_be_bytes());
        serial[8..].copy_from_slice(&i.to_be_bytes());
        serial[0] = (serial[0] & 0x7f) | 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &issuer).map_err(|e| format!("{thing}'s certificate: {e}"))?;
        if i == 1 {
            // The copied issuer name must be the CA's, byte for byte, or no device connects.
            let ca_der = ca.ca_der();
            let ca_cert = webpki::EndEntityCert::try_from(&ca_der).map_err(|e| format!("the CA certificate: {e}"))?;
            let device =
                webpki::EndEntityCert::try_from(cert.der()).map_err(|e| format!("{thing}'s certificate: {e}"))?;
            if device.issuer() != ca_cert.subject() {
                return Err("the device certificates' issuer name is not the CA's".into());
            }
        }
        issued.push(fleet::TlsDevice { thing: thing.to_string(), cert_pem: cert.pem(), key_pem: key.serialize_pem() });
    }
    let devices_file = data_dir.join("bench-device-certificates.json");
    fleet::write_tls_devices(&devices_file, &fleet::TlsDevices { ca_pem: ca.ca_pem().to_string(), devices: issued })?;
    let issue_s = t0.elapsed().as_secs_f64();
    eprintln!("tls: {devices} device certificates issued and written in {issue_s:.2} s");
    Ok(TlsWorld { ca, devices_file, issue_s })
}

/// An rcgen issuer for the data dir's CA: its key, and its name copied from `ca.pem`.
fn ca_issuer(ca: &LocalCa) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, String> {
    let key_path = ca.dir().join(ota_local::pki::CA_KEY_FILE);
    let key_pem = std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let ca_der = ca.ca_der();
    let cert = webpki::EndEntityCert::try_from(&ca_der).map_err(|e| format!("the CA certificate: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = distinguished_name(cert.subject())?;
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    Ok(rcgen::Issuer::new(params, key))
}

/// An rcgen name from the DER contents of an X.509 `Name` (a sequence of RDN sets, one
/// attribute each, as rcgen writes them), keeping each value's string type.
fn distinguished_name(mut der: &[u8]) -> Result<rcgen::DistinguishedName, String> {
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    fn oid(bytes: &[u8]) -> Option<Vec<u64>> {
        let (&first, rest) = bytes.split_first()?;
        let mut arcs = vec![u64::from(first / 40), u64::from(first % 40)];
        let mut arc = 0u64;
        for &b in rest {
            arc = (arc << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                arcs.push(arc);
                arc = 0;
            }
        }
        Some(arcs)
    }
    let bad = || "the CA certificate's subject is not a name the bench can copy".to_string();
    let mut dn = rcgen::DistinguishedName::new();
    while !der.is_empty() {
        let (tag, set, rest) = tlv(der).ok_or_else(bad)?;
        der = rest;
        let (seq_tag, attr, others) = tlv(set).ok_or_else(bad)?;
        if tag != 0x31 || seq_tag != 0x30 || !others.is_empty() {
            return Err(bad());
        }
        let (oid_tag, oid_bytes, value) = tlv(attr).ok_or_else(bad)?;
        let (value_tag, value, _) = tlv(value).ok_or_else(bad)?;
        let text = String::from_utf8(value.to_vec()).map_err(|_| bad())?;
        let value = match value_tag {
            0x0c => rcgen::DnValue::Utf8String(text),
            0x13 => rcgen::DnValue::PrintableString(text.try_into().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        if oid_tag != 0x06 {
            return Err(bad());
        }
        dn.push(rcgen::DnType::from_oid(&oid(oid_bytes).ok_or_else(bad)?), value);
    }
    Ok(dn)
}

/// The simulated fleet's child process and its line protocol.
struct Fleet {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Fleet {
    /// Starts `devices` devices against `mqtt` and waits until all are connected and idle.
    async fn start(world: &World, o: &Options, mqtt: SocketAddr) -> Result<(Fleet, Ready), String> {
        let tls_devices = world.tls.as_ref().map_or_else(|| "-".into(), |t| t.devices_file.display().to_string());
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("--fleet")
            .arg(mqtt.to_string())
            .arg(world.dir.path())
            .arg(o.devices.to_string())
            .arg(world.device_type.as_str())
            .arg(world.v1.to_string())
            .arg(o.connect_concurrency.to_string())
            .arg(tls_devices)
            .arg(if o.commands { "commands" } else { "-" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the fleet process: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let mut fleet = Fleet { child, stdin, stdout };
        let line = fleet.line().await?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("fleet said {line:?}: {e}"))?;
        let seconds = ready["seconds"].as_f64().ok_or_else(|| format!("fleet said {line:?}"))?;
        let connected_s = ready["connected_seconds"].as_f64().ok_or_else(|| format!("fleet said {line:?}"))?;
        Ok((fleet, Ready { seconds, connected_s }))
    }

    async fn line(&mut self) -> Result<String, String> {
        match self.stdout.next_line().await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err("the fleet process ended early (see its error above)".into()),
            Err(e) => Err(format!("reading the fleet process: {e}")),
        }
    }

    async fn snapshot(&mut self, command: &str) -> Result<Snapshot, String> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.map_err(|e| format!("fleet stdin: {e}"))?;
        self.stdin.flush().await.map_err(|e| format!("fleet stdin: {e}"))?;
        fleet::parse_snapshot(&self.line().await?)
    }

    /// The last counters; the process ends.
    async fn quit(mut self) -> Result<Snapshot, String> {
        let last = self.snapshot("quit").await?;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        Ok(last)
    }
}

/// How long the fleet took to come up, from the child's first device task.
#[derive(Debug, Clone, Copy)]
struct Ready {
    /// Until every device was connected, subscribed and told it has no job yet.
    seconds: f64,
    /// Until the last device's first CONNACK (TLS handshake included over `--tls`).
    connected_s: f64,
}

/// What one phase measured.
#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    /// From the start of the rollout until it was reported complete.
    seconds: f64,
    succeeded: u64,
    /// Counters of the timed window only.
    window: Snapshot,
    /// Counters of the whole phase (fleet start to end).
    total: Snapshot,
    fleet_ready_s: f64,
    /// Until the last device's first CONNACK, within `fleet_ready_s`.
    connected_s: f64,
    /// How long `FleetManager::start` itself took (engine phase only).
    start_call_s: Option<f64>,
    outcome: String,
}

impl Phase {
    fn per_minute(&self) -> f64 {
        self.succeeded as f64 * 60.0 / self.seconds
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "seconds": round(self.seconds, 3),
            "devices_updated": self.succeeded,
            "devices_per_minute": round(self.per_minute(), 1),
            "vs_aws_1000_per_minute": round(self.per_minute() / AWS_MAX_PER_MINUTE, 2),
            "outcome": self.outcome,
            "fleet_ready_s": round(self.fleet_ready_s, 2),
            "connected_s": round(self.connected_s, 2),
            "start_call_s": self.start_call_s.map(|s| round(s, 3)),
            "window": self.window,
            "total": self.total,
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

struct Publisher(LinkPublisher);

#[async_trait]
impl DevicePublisher for Publisher {
    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.0.publish(topic, payload).await.map_err(|e| e.to_string())
    }
}

/// A fresh embedded endpoint: plain MQTT with passwords, or over `--tls` the TLS listener
/// alone with the data dir's CA (client certificates required), as `ota serve --mqtts-listen`
/// runs it. Returns the address the devices connect to.
async fn endpoint(world: &World) -> Result<(DeviceLink, SocketAddr), String> {
    let listen: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let options = match &world.tls {
        Some(tls) => EndpointOptions::tls(listen, tls.ca.device_tls(&[]).map_err(|e| format!("endpoint TLS: {e}"))?),
        None => EndpointOptions::plain(listen, Arc::new(world.credentials.clone())),
    };
    let (link, addrs) = embedded_endpoint(options).await.map_err(|e| format!("MQTT endpoint: {e}"))?;
    let addr = if world.tls.is_some() { addrs.tls } else { addrs.plain };
    Ok((link, addr.ok_or("the endpoint has no listener")?))
}

/// A fresh embedded endpoint with the jobs engine behind it, wired as `ota serve` wires them.
struct Served {
    engine: Arc<JobsEngine>,
    /// Where the devices connect.
    addr: SocketAddr,
    handle: ota_local::link::LinkHandle,
    shutdown: watch::Sender<bool>,
    running: tokio::task::JoinHandle<()>,
    forward: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(world: &World) -> Result<Served, String> {
        let (link, addr) = endpoint(world).await?;
        let DeviceLink { mut events, publisher, handle } = link;
        let sign = world.signer.clone();
        let ctx = EngineContext { firmware_url: Arc::new(move |v, t, now| sign.firmware_url(v, t, now)) };
        let engine = JobsEngine::new(world.store.clone(), ctx, EngineOptions::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (input_tx, input_rx) = mpsc::channel(4096);
        let forward = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let input = match event {
                    DeviceEvent::Connected { thing } => DeviceInput::Connected(thing),
                    DeviceEvent::Disconnected { thing } => DeviceInput::Disconnected(thing),
                    DeviceEvent::Message { thing, topic, payload } => DeviceInput::Message { thing, topic, payload },
                };
                if input_tx.send(input).await.is_err() {
                    break;
                }
            }
        });
        let running = tokio::spawn(engine.clone().run(input_rx, Arc::new(Publisher(publisher)), shutdown_rx));
        Ok(Served { engine, addr, handle, shutdown, running, forward })
    }

    /// Stops the engine first (it may still be answering the devices' last requests), so
    /// that nothing is published into a closed link, then the endpoint.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.running).await;
        self.handle.shutdown().await;
        self.forward.abort();
    }
}

/// The engine phase: endpoint + engine as `ota serve` runs them, the rollout started
/// through the service, timed until the engine reports it complete.
async fn engine_phase(world: &World, o: &Options) -> Result<(Phase, JobId), String> {
    let served = Served::start(world).await?;
    let mut rollout_events = served.engine.subscribe();

    let (mut fleet, ready) = Fleet::start(world, o, served.addr).await?;
    eprintln!(
        "engine: {} devices connected after {:.2} s, idle after {:.2} s",
        o.devices, ready.connected_s, ready.seconds
    );
    let before = fleet.snapshot("snap").await?;
    let request = UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Exact(world.v2.clone()),
        target: Target { device_types: [world.device_type.clone()].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    };
    let plan = world.svc.plan_update(&world.me, &request).await.map_err(|e| format!("plan: {e}"))?;
    if plan.deployments.first().is_none_or(|d| d.things.len() != o.devices as usize) {
        return Err(format!("the plan does not cover the {} devices: {}", o.devices, plan.message));
    }

    let t0 = Instant::now();
    let started =
        world.svc.start(&world.me, &request, plan.plan_id.as_deref()).await.map_err(|e| format!("start: {e}"))?;
    let start_call_s = t0.elapsed().as_secs_f64();
    let id = started.rollouts.first().ok_or("start made no rollout")?.id.clone();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now();
    let outcome = loop {
        tokio::select! {
            event = rollout_events.recv() => match event {
                Ok(e) if e.rollout_id == id && matches!(e.kind.as_str(), "completed" | "aborted" | "canceled") => {
                    break e.kind;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err("the engine stopped".into()),
            },
            _ = poll.tick() => {
                let p = world.store.rollout_progress(&id).await.map_err(|e| format!("progress: {e}"))?;
                if !p.rollout.status.is_active() {
                    break p.rollout.status.as_str().to_lowercase();
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    last_report = Instant::now();
                    eprintln!(
                        "engine: {:.0} s: {} succeeded, {} in progress, {} offered, {} waiting",
                        t0.elapsed().as_secs_f64(), p.counts.succeeded, p.counts.in_progress, p.counts.queued,
                        p.counts.waiting
                    );
                }
                if t0.elapsed() > o.timeout {
                    return Err(format!("the rollout did not finish within {:?}: {:?}", o.timeout, p.counts));
                }
            }
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let after = fleet.snapshot("snap").await?;
    let progress = world.store.rollout_progress(&id).await.map_err(|e| format!("progress: {e}"))?;
    let total = fleet.quit().await?;
    served.stop().await;
    let phase = Phase {
        name: "engine",
        seconds,
        succeeded: u64::from(progress.counts.succeeded),
        window: after.since(&before),
        total,
        fleet_ready_s: ready.seconds,
        connected_s: ready.connected_s,
        start_call_s: Some(start_call_s),
        outcome: format!("{outcome}: {}", progress.rollout.status_reason.unwrap_or_default()),
    };
    Ok((phase, id))
}

/// The baseline phase: the same devices and messages through a fresh embedded endpoint, with
/// the trivial responder as the cloud side.
async fn baseline_phase(world: &World, o: &Options, job_id: &JobId) -> Result<Phase, String> {
    let (link, addr) = endpoint(world).await?;
    let DeviceLink { events, publisher, handle } = link;
    let artifact = world
        .svc
        .verify_firmware(&world.me, &ota_core::catalog::ArtifactRef::new(world.device_type.clone(), world.v2.clone()))
        .await
        .map_err(|e| format!("verify: {e}"))?;
    let job = responder::Job {
        id: job_id.as_str().to_string(),
        document: json!({
            "operation": ota_core::job::OPERATION,
            "deviceType": world.device_type.as_str(),
            "version": world.v2.to_string(),
            "rollback": false,
            "firmware": {
                "url": world.signer.firmware_url(&world.v2, &world.device_type, Utc::now()),
                "size": artifact.size,
                "sha256": artifact.sha256.to_hex(),
            },
        }),
    };
    let things = (1..=o.devices).map(|i| fleet::thing_name(&world.device_type, i)).collect();
    let (start_tx, start_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let responding =
        tokio::spawn(responder::run(events, publisher, job, things, o.max_in_flight as usize, start_rx, done_tx));

    let (mut fleet, ready) = Fleet::start(world, o, addr).await?;
    eprintln!(
        "baseline: {} devices connected after {:.2} s, idle after {:.2} s",
        o.devices, ready.connected_s, ready.seconds
    );
    let before = fleet.snapshot("snap").await?;
    let t0 = Instant::now();
    let _ = start_tx.send(());
    let finished = tokio::time::timeout(o.timeout, done_rx).await;
    let seconds = match finished {
        Ok(Ok(at)) => at.duration_since(t0).as_secs_f64(),
        Ok(Err(_)) => return Err("the responder stopped".into()),
        Err(_) => return Err(format!("the baseline did not finish within {:?}", o.timeout)),
    };
    let after = fleet.snapshot("snap").await?;
    let total = fleet.quit().await?;
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), responding).await;
    Ok(Phase {
        name: "baseline",
        seconds,
        succeeded: u64::from(o.devices),
        window: after.since(&before),
        total,
        fleet_ready_s: ready.seconds,
        connected_s: ready.connected_s,
        start_call_s: None,
        outcome: "completed".into(),
    })
}

/// Each process holds one end of every MQTT connection plus the downloads in flight.
fn check_file_limit(o: &Options) -> Result<(), String> {
    let needed = u64::from(o.devices) + 2 * u64::from(o.max_in_flight) + 512;
    if let Some(limit) = open_file_limit()
        && limit < needed
    {
        return Err(format!(
            "{} devices need about {needed} open files per process; the limit is {limit}. \
             Raise it (`ulimit -n 65536`) or run fewer devices (--devices {})",
            o.devices,
            limit.saturating_sub(2 * u64::from(o.max_in_flight) + 512)
        ));
    }
    Ok(())
}

fn transport(tls: bool) -> &'static str {
    if tls { "MQTT over mutual TLS" } else { "plain MQTT, passwords" }
}

async fn run(o: Options) -> Result<(), String> {
    if o.commands {
        return commands::run(o).await;
    }
    if !o.scaling.is_empty() {
        return scaling(o).await;
    }
    if o.compare_tls {
        return compare_tls(o).await;
    }
    check_file_limit(&o)?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    eprintln!(
        "control_plane: {} devices, {} KiB image, {}, {profile} build; {}",
        o.devices,
        o.image_bytes / 1024,
        transport(o.tls),
        ota_benches::machine()
    );
    let world = world(&o).await?;
    let (engine, job_id) = engine_phase(&world, &o).await?;
    eprintln!("engine: {} devices updated in {:.2} s", engine.succeeded, engine.seconds);
    let baseline = if o.baseline {
        let b = baseline_phase(&world, &o, &job_id).await?;
        eprintln!("baseline: {} devices updated in {:.2} s", b.succeeded, b.seconds);
        Some(b)
    } else {
        None
    };
    let _ = world.http_stop.send(true);
    report(&o, &engine, baseline.as_ref(), cpus, profile, world.tls.as_ref().map(|t| t.issue_s));
    if engine.succeeded != u64::from(o.devices) {
        return Err(format!("only {} of {} devices succeeded: {}", engine.succeeded, o.devices, engine.outcome));
    }
    Ok(())
}

/// `--scaling`: the engine at each fleet size, each in a fresh data dir, with the broker-only
/// baseline at the same size (unless `--no-baseline`): the engine's cost per device against
/// that at the first size, and against the baseline's, whose own cost per device shows what
/// the harness (sockets, the simulated fleet, the broker) adds as the fleet grows.
async fn scaling(o: Options) -> Result<(), String> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let machine_before = ota_benches::machine();
    let mut rows = Vec::new();
    for &devices in &o.scaling {
        let one = Options { devices, scaling: Vec::new(), ..o.clone() };
        let needed = u64::from(devices) + 2 * u64::from(one.max_in_flight) + 512;
        if let Some(limit) = open_file_limit()
            && limit < needed
        {
            return Err(format!("{devices} devices need about {needed} open files per process; the limit is {limit}"));
        }
        let world = world(&one).await?;
        let (engine, job_id) = engine_phase(&world, &one).await?;
        if engine.succeeded != u64::from(devices) {
            return Err(format!("only {} of {devices} devices succeeded: {}", engine.succeeded, engine.outcome));
        }
        let baseline = if one.baseline { Some(baseline_phase(&world, &one, &job_id).await?.seconds) } else { None };
        let _ = world.http_stop.send(true);
        eprintln!("scaling: {devices} devices in {:.2} s (baseline {baseline:?})", engine.seconds);
        rows.push((devices, engine.seconds, baseline));
    }
    println!(
        "control-plane scaling: engine time per device by fleet size, {} KiB image, max_in_flight {} ({profile})",
        o.image_bytes / 1024,
        o.max_in_flight
    );
    println!("  machine: {machine_before} at the start, {} at the end", ota_benches::machine());
    println!(
        "  {:>8} {:>9} {:>14} {:>12} {:>10} {:>14} {:>16}",
        "devices", "engine s", "ms per device", "vs smallest", "baseline s", "ms per device", "engine/baseline"
    );
    let first = rows[0].1 / f64::from(rows[0].0);
    let mut json_rows = Vec::new();
    for (devices, seconds, baseline) in &rows {
        let per = seconds / f64::from(*devices);
        let (b, bper, ratio) = match baseline {
            Some(b) => {
                (format!("{b:.2}"), format!("{:.3}", b / f64::from(*devices) * 1000.0), format!("{:.2}", seconds / b))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "  {devices:>8} {seconds:>9.2} {:>14.3} {:>12.2} {b:>10} {bper:>14} {ratio:>16}",
            per * 1000.0,
            per / first
        );
        json_rows.push(
            json!({"devices": devices, "seconds": round(*seconds, 3), "per_device_ms": round(per * 1000.0, 4),
                              "per_device_vs_smallest": round(per / first, 2),
                              "baseline_seconds": baseline.map(|b| round(b, 3)),
                              "engine_over_baseline_time": baseline.map(|b| round(seconds / b, 2))}),
        );
    }
    println!(
        "{}",
        json!({"bench": "control_plane_scaling", "rows": json_rows, "profile": profile,
                         "load_average": ota_benches::load_average()})
    );
    Ok(())
}

fn report(o: &Options, engine: &Phase, baseline: Option<&Phase>, cpus: usize, profile: &str, issue_s: Option<f64>) {
    let ratio = baseline.map(|b| engine.seconds / b.seconds);
    println!(
        "control-plane throughput: {} devices, {} KiB image, max_in_flight {}, no rate limit, {} ({cpus} CPUs, {profile})",
        o.devices,
        o.image_bytes / 1024,
        o.max_in_flight,
        transport(o.tls)
    );
    if let Some(s) = issue_s {
        println!("  {} device certificates issued before the run in {s:.2} s", o.devices);
    }
    let cols: Vec<&Phase> = std::iter::once(engine).chain(baseline).collect();
    let row = |label: &str, f: &dyn Fn(&Phase) -> String| {
        let cells: String = cols.iter().map(|p| format!("{:>12}", f(p))).collect();
        println!("  {label:<44}{cells}");
    };
    row("", &|p| p.name.to_string());
    row("all devices connected (s, not timed)", &|p| format!("{:.2}", p.connected_s));
    row("all devices idle (s, not timed)", &|p| format!("{:.2}", p.fleet_ready_s));
    row("start -> completed (s)", &|p| format!("{:.2}", p.seconds));
    row("devices updated", &|p| p.succeeded.to_string());
    row("devices updated per minute", &|p| format!("{:.0}", p.per_minute()));
    row("x AWS IoT Jobs ceiling (1,000/min)", &|p| format!("{:.1}", p.per_minute() / AWS_MAX_PER_MINUTE));
    row("MQTT publishes device->cloud", &|p| p.window.publishes_up.to_string());
    row("  payload bytes", &|p| p.window.bytes_up.to_string());
    row("MQTT publishes cloud->device", &|p| p.window.publishes_down.to_string());
    row("  payload bytes", &|p| p.window.bytes_down.to_string());
    let kinds: std::collections::BTreeSet<&String> = cols.iter().flat_map(|p| p.window.by_kind.keys()).collect();
    for kind in kinds {
        row(&format!("  {kind}"), &|p| p.window.by_kind.get(kind).copied().unwrap_or(0).to_string());
    }
    row("MQTT connects (reboots)", &|p| p.window.connects.to_string());
    row("HTTP downloads", &|p| p.window.downloads.to_string());
    row("fleet peak RSS (MiB)", &|p| format!("{:.0}", p.total.peak_rss_kib as f64 / 1024.0));
    if let Some(r) = ratio {
        println!("  engine time / baseline time: {r:.2}");
    }
    println!("  server process peak RSS: {:.0} MiB", peak_rss_kib() as f64 / 1024.0);
    println!("  machine at the end: {}", ota_benches::machine());
    let line = json!({
        "bench": "control_plane",
        "devices": o.devices,
        "image_bytes": o.image_bytes,
        "max_in_flight": o.max_in_flight,
        "max_per_minute": null,
        "tls": o.tls,
        "certificates_issue_s": issue_s.map(|s| round(s, 2)),
        "aws_max_per_minute": AWS_MAX_PER_MINUTE,
        "engine": engine.json(),
        "baseline": baseline.map(Phase::json),
        "engine_over_baseline_time": ratio.map(|r| round(r, 2)),
        "cpus": cpus,
        "load_average": ota_benches::load_average(),
        "profile": profile,
        "server_peak_rss_kib": peak_rss_kib(),
    });
    println!("{line}");
}

/// One of `--compare-tls`'s four runs.
struct TransportRun {
    tls: bool,
    issue_s: Option<f64>,
    engine: Phase,
    baseline: Option<Phase>,
}

/// `--compare-tls`: the same bench at the same size over plain MQTT and over mutual TLS, in
/// ABBA order (plain, TLS, TLS, plain), each run in a fresh data dir with a fresh fleet, and
/// the ratio of the means, TLS / plain: devices per minute during the rollout (which includes
/// each device's reconnection, a second full handshake, after its reboot), and the time for
/// all N devices to connect before the rollout starts (where TLS costs most).
async fn compare_tls(o: Options) -> Result<(), String> {
    check_file_limit(&o)?;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let machine_before = ota_benches::machine();
    eprintln!(
        "control_plane --compare-tls: {} devices, {} KiB image, {profile} build; {machine_before}",
        o.devices,
        o.image_bytes / 1024
    );
    let mut runs = Vec::new();
    for (n, tls) in [false, true, true, false].into_iter().enumerate() {
        let one = Options { tls, compare_tls: false, ..o.clone() };
        eprintln!("compare-tls: run {} of 4, {}", n + 1, transport(tls));
        let world = world(&one).await?;
        let (engine, job_id) = engine_phase(&world, &one).await?;
        if engine.succeeded != u64::from(one.devices) {
            return Err(format!("only {} of {} devices succeeded: {}", engine.succeeded, one.devices, engine.outcome));
        }
        let baseline = if one.baseline { Some(baseline_phase(&world, &one, &job_id).await?) } else { None };
        let _ = world.http_stop.send(true);
        eprintln!(
            "compare-tls: {}: connected in {:.2} s, {} devices updated in {:.2} s",
            transport(tls),
            engine.connected_s,
            engine.succeeded,
            engine.seconds
        );
        runs.push(TransportRun { tls, issue_s: world.tls.as_ref().map(|t| t.issue_s), engine, baseline });
    }
    let machine_after = ota_benches::machine();

    println!(
        "control-plane over TLS against plain MQTT: {} devices, {} KiB image, max_in_flight {}, ABBA ({cpus} CPUs, {profile})",
        o.devices,
        o.image_bytes / 1024,
        o.max_in_flight
    );
    println!("  machine: {machine_before} at the start, {machine_after} at the end");
    println!(
        "  {:>3} {:<22} {:>9} {:>11} {:>8} {:>10} {:>11} {:>10} {:>12}",
        "run",
        "transport",
        "certs s",
        "connected s",
        "idle s",
        "rollout s",
        "devices/min",
        "baseline s",
        "b. connect s"
    );
    for (i, r) in runs.iter().enumerate() {
        let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        println!(
            "  {:>3} {:<22} {:>9} {:>11.2} {:>8.2} {:>10.2} {:>11.0} {:>10} {:>12}",
            i + 1,
            transport(r.tls),
            opt(r.issue_s),
            r.engine.connected_s,
            r.engine.fleet_ready_s,
            r.engine.seconds,
            r.engine.per_minute(),
            opt(r.baseline.as_ref().map(|b| b.seconds)),
            opt(r.baseline.as_ref().map(|b| b.connected_s)),
        );
    }
    let mean = |tls: bool, f: &dyn Fn(&TransportRun) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = runs.iter().filter(|r| r.tls == tls).map(f).collect::<Option<_>>()?;
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    let ratio = |f: &dyn Fn(&TransportRun) -> Option<f64>| -> Option<f64> { Some(mean(true, f)? / mean(false, f)?) };
    let per_minute = |r: &TransportRun| Some(r.engine.per_minute());
    let rollout = |r: &TransportRun| Some(r.engine.seconds);
    let connected = |r: &TransportRun| Some(r.engine.connected_s);
    let idle = |r: &TransportRun| Some(r.engine.fleet_ready_s);
    let baseline = |r: &TransportRun| r.baseline.as_ref().map(|b| b.seconds);
    let shown = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    println!(
        "  means: plain {:.0} devices/min, TLS {:.0} devices/min",
        mean(false, &per_minute).unwrap_or(0.0),
        mean(true, &per_minute).unwrap_or(0.0)
    );
    println!("  TLS / plain, devices per minute (rollout): {}", shown(ratio(&per_minute)));
    println!("  TLS / plain, rollout time:                 {}", shown(ratio(&rollout)));
    println!("  TLS / plain, time to connect all devices:  {}", shown(ratio(&connected)));
    println!("  TLS / plain, time until all devices idle:  {}", shown(ratio(&idle)));
    println!("  TLS / plain, broker-only baseline time:    {}", shown(ratio(&baseline)));
    println!("  server process peak RSS: {:.0} MiB", peak_rss_kib() as f64 / 1024.0);
    let json_runs: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            json!({"tls": r.tls, "certificates_issue_s": r.issue_s.map(|s| round(s, 2)),
                   "engine": r.engine.json(), "baseline": r.baseline.as_ref().map(Phase::json)})
        })
        .collect();
    let r2 = |x: Option<f64>| x.map(|v| round(v, 3));
    println!(
        "{}",
        json!({
            "bench": "control_plane_compare_tls",
            "devices": o.devices,
            "image_bytes": o.image_bytes,
            "max_in_flight": o.max_in_flight,
            "order": ["plain", "tls", "tls", "plain"],
            "runs": json_runs,
            "tls_over_plain": {
                "devices_per_minute": r2(ratio(&per_minute)),
                "rollout_seconds": r2(ratio(&rollout)),
                "connect_seconds": r2(ratio(&connected)),
                "idle_seconds": r2(ratio(&idle)),
                "baseline_seconds": r2(ratio(&baseline)),
            },
            "cpus": cpus,
            "profile": profile,
            "machine_start": machine_before,
            "machine_end": machine_after,
            "load_average": ota_benches::load_average(),
            "server_peak_rss_kib": peak_rss_kib(),
        })
    );
    Ok(())
}
