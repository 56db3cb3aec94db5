//! XIAO ESP32S3 application: wiring only. It reads the device's settings from NVS and its
//! certificates from the `certs` partition, brings up Wi-Fi, and hands ESP-IDF's MQTT client,
//! HTTP client, OTA flash and NVS to the ota device agent, which does everything else
//! (`adapters/device`, tested on the host). Not buildable on the project's CI machines; see
//! README.md.
//!
//! Trust: the firmware-signing keys the device accepts are built in (`OTA_TRUSTED_KEYS` at
//! build time, see build.rs), so only a signed update can change them; a build without them
//! reads `ota/trusted_keys` from NVS (provisioned by `ota devices enroll`). Revoked key ids
//! come from `ota/revoked_keys` (adding a revocation can only narrow trust). The
//! anti-rollback floor is ESP-IDF's eFuse secure version. The same build talks to AWS IoT Core
//! or to `ota serve` by its provisioning alone: `ca.pem` in the `certs` partition is Amazon's
//! root or the local CA, and `ota/https_ca = local` makes downloads trust that CA too.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;

use anyhow::{Context, Result, anyhow};
use esp_idf_svc::eventloop::EspSystemEventLoop;
use esp_idf_svc::hal::prelude::Peripherals;
use esp_idf_svc::http::client::{Configuration as HttpConfiguration, EspHttpConnection};
use esp_idf_svc::mqtt::client::{EspMqttClient, MqttClientConfiguration};
use esp_idf_svc::nvs::{EspDefaultNvsPartition, EspNvs};
use esp_idf_svc::ota::EspOta;
use esp_idf_svc::tls::X509;
use esp_idf_svc::wifi::{AuthMethod, BlockingWifi, ClientConfiguration, Configuration, EspWifi};
use ota_core::names::{DeviceType, ThingName};
use ota_core::signing::{KeyId, KeyRing, TrustedKey};
use ota_core::update::DeviceConfig;
use ota_device::{Agent, AgentConfig, Exit, pump_mqtt};

// The app descriptor's version is this crate's version: the agent reads it from the running
// slot and reports it in the shadow as `firmwareVersion`.
esp_idf_svc::sys::esp_app_desc!();

/// The device type this build serves; a job for another type is rejected.
const DEVICE_TYPE: &str = env!("OTA_DEVICE_TYPE");
/// Size of `ota_0` / `ota_1` in partitions.csv.
const UPDATE_SLOT_SIZE: u64 = 0x30_0000;
/// Where the `certs` SPIFFS partition is mounted.
const CERTS: &str = "/certs";
/// The firmware-signing keys compiled into this image (empty when the build named none).
const BUILT_IN_KEYS: &str = include_str!(concat!(env!("OUT_DIR"), "/trusted_keys.pem"));

fn main() -> Result<()> {
    esp_idf_svc::sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();

    let peripherals = Peripherals::take()?;
    let sysloop = EspSystemEventLoop::take()?;
    let nvs_partition = EspDefaultNvsPartition::take()?;
    let settings = EspNvs::new(nvs_partition.clone(), "ota", false).context("NVS namespace `ota` (see README)")?;
    let optional = |key: &str| -> Result<Option<String>> {
        // Big enough for a few PEM public keys (about 180 bytes each).
        let mut buf = [0u8; 2048];
        Ok(settings.get_str(key, &mut buf)?.map(str::to_string))
    };
    let read = |key: &str| -> Result<String> {
        optional(key)?.ok_or_else(|| anyhow!("NVS key ota/{key} is not set (see README: provisioning)"))
    };
    let thing = ThingName::parse(&read("thing")?)?;
    let device_type = DeviceType::parse(DEVICE_TYPE)?;

    let mut wifi = BlockingWifi::wrap(EspWifi::new(peripherals.modem, sysloop.clone(), Some(nvs_partition.clone()))?, sysloop)?;
    wifi.set_configuration(&Configuration::Client(ClientConfiguration {
        ssid: read("wifi_ssid")?.as_str().try_into().map_err(|_| anyhow!("Wi-Fi SSID too long"))?,
        password: read("wifi_pass")?.as_str().try_into().map_err(|_| anyhow!("Wi-Fi password too long"))?,
        auth_method: AuthMethod::WPA2Personal,
        ..Default::default()
    }))?;
    wifi.start()?;
    wifi.connect()?;
    wifi.wait_netif_up()?;

    mount_certs()?;
    // X509::pem_until_nul needs NUL-terminated PEM with 'static lifetime; the device keeps
    // them for its whole life, so leaking them once at boot is the intended use.
    let pem = |name: &str| -> Result<&'static [u8]> {
        let mut bytes = std::fs::read(format!("{CERTS}/{name}")).with_context(|| format!("{CERTS}/{name}"))?;
        bytes.push(0);
        Ok(Box::leak(bytes.into_boxed_slice()))
    };
    // `ca.pem`: whatever signs the MQTT server's certificate (Amazon's root for AWS IoT Core,
    // the local CA of `ota serve`). Devices provisioned before it was called so keep working.
    let ca = pem("ca.pem").or_else(|_| pem("AmazonRootCA1.pem"))?;
    let (cert, key) = (pem("cert.pem")?, pem("key.pem")?);

    let mqtt_config = MqttClientConfiguration {
        client_id: Some(thing.as_str()),
        server_certificate: Some(X509::pem_until_nul(ca)),
        client_certificate: Some(X509::pem_until_nul(cert)),
        private_key: Some(X509::pem_until_nul(key)),
        keep_alive_interval: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    let (client, connection) = EspMqttClient::new(&read("mqtt_url")?, &mqtt_config)?;
    let (events_tx, events_rx) = channel();
    std::thread::Builder::new().stack_size(8 * 1024).spawn(move || pump_mqtt(connection, events_tx))?;

    // Downloads: S3 presigned URLs verify against the certificate bundle; `ota serve` over
    // HTTPS presents a certificate from its local CA, which only `ca.pem` knows.
    let local_https = optional("https_ca")?.as_deref() == Some("local");
    if local_https {
        // SAFETY: `ca` is 'static, NUL-terminated PEM; esp-tls parses and copies it.
        esp_idf_svc::sys::esp!(unsafe { esp_idf_svc::sys::esp_tls_set_global_ca_store(ca.as_ptr(), ca.len() as u32) })
            .context("loading ca.pem as the HTTPS trust store")?;
    }
    let http = EspHttpConnection::new(&HttpConfiguration {
        use_global_ca_store: local_https,
        crt_bundle_attach: (!local_https).then_some(esp_idf_svc::sys::esp_crt_bundle_attach),
        buffer_size: Some(4096),
        timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    })?;
    let storage = EspNvs::new(nvs_partition, "ota_state", true)?;

    let mut device = DeviceConfig::new(thing, device_type);
    device.trust = trusted_keys(optional("trusted_keys")?, optional("revoked_keys")?)?;
    // SAFETY: a read of the eFuse block, no arguments. 0 when anti-rollback never burnt one.
    device.security_floor = unsafe { esp_idf_svc::sys::esp_efuse_read_secure_version() };
    log::info!(
        "trusting {} signing key(s), security floor {}",
        device.trust.trusted().len(),
        device.security_floor
    );
    let config = AgentConfig::new(device, UPDATE_SLOT_SIZE);
    let mut agent = Agent::new(config, client, events_rx, http, EspOta::new()?, storage);

    let never = AtomicBool::new(false);
    match agent.run(&never) {
        Ok(Exit::Reboot) | Ok(Exit::Stopped) => esp_idf_svc::hal::reset::restart(),
        // The agent stops only on errors it cannot report over MQTT; restarting gives the
        // bootloader the chance to roll back an image that was never confirmed.
        Err(e) => {
            log::error!("ota agent stopped: {e}");
            esp_idf_svc::hal::reset::restart()
        }
    }
}

/// The keys this device accepts firmware from: the built-in ones when the build has any (a
/// provisioned list cannot widen them), else the provisioned list. Revocations always apply.
/// No keys at all is allowed only for development builds: the agent then checks digests only
/// and the log says so on every boot.
fn trusted_keys(provisioned: Option<String>, revoked: Option<String>) -> Result<KeyRing> {
    let built_in = TrustedKey::all_from_pem(BUILT_IN_KEYS).context("the built-in OTA_TRUSTED_KEYS")?;
    let trusted = if built_in.is_empty() {
        TrustedKey::all_from_pem(provisioned.as_deref().unwrap_or("")).context("NVS ota/trusted_keys")?
    } else {
        built_in
    };
    if trusted.is_empty() {
        log::warn!("no firmware-signing keys: updates are checked by SHA-256 only (see README: signing)");
    }
    let revoked = revoked
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(KeyId::parse_hex)
        .collect::<Result<Vec<_>, _>>()
        .context("NVS ota/revoked_keys")?;
    Ok(KeyRing::new(trusted, revoked))
}

/// Mounts the `certs` SPIFFS partition read-only at [`CERTS`].
fn mount_certs() -> Result<()> {
    let conf = esp_idf_svc::sys::esp_vfs_spiffs_conf_t {
        base_path: c"/certs".as_ptr(),
        partition_label: c"certs".as_ptr(),
        max_files: 4,
        format_if_mount_failed: false,
    };
    // SAFETY: `conf` points at 'static C strings and lives for the duration of the call;
    // ESP-IDF copies what it keeps. One of three unsafe calls in the firmware (with the
    // global CA store and the eFuse read), all plain C calls with no Rust-side invariants.
    esp_idf_svc::sys::esp!(unsafe { esp_idf_svc::sys::esp_vfs_spiffs_register(&conf) })
        .context("mounting the certs partition (see README: provisioning)")
}
