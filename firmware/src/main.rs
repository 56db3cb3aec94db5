//! XIAO ESP32S3 application: wiring only. It reads the device's settings from NVS and its
//! certificates from the `certs` partition, brings up Wi-Fi, and hands ESP-IDF's MQTT client,
//! HTTP client, OTA flash and NVS to the ota device agent, which does everything else
//! (`adapters/device`, tested on the host). Not buildable on the project's CI machines; see
//! README.md.

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

fn main() -> Result<()> {
    esp_idf_svc::sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();

    let peripherals = Peripherals::take()?;
    let sysloop = EspSystemEventLoop::take()?;
    let nvs_partition = EspDefaultNvsPartition::take()?;
    let settings = EspNvs::new(nvs_partition.clone(), "ota", false).context("NVS namespace `ota` (see README)")?;
    let read = |key: &str| -> Result<String> {
        let mut buf = [0u8; 256];
        settings
            .get_str(key, &mut buf)?
            .map(str::to_string)
            .ok_or_else(|| anyhow!("NVS key ota/{key} is not set (see README: provisioning)"))
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
    let (ca, cert, key) = (pem("AmazonRootCA1.pem")?, pem("cert.pem")?, pem("key.pem")?);

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

    let http = EspHttpConnection::new(&HttpConfiguration {
        crt_bundle_attach: Some(esp_idf_svc::sys::esp_crt_bundle_attach),
        buffer_size: Some(4096),
        timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    })?;
    let storage = EspNvs::new(nvs_partition, "ota_state", true)?;
    let config = AgentConfig::new(DeviceConfig::new(thing, device_type), UPDATE_SLOT_SIZE);
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

/// Mounts the `certs` SPIFFS partition read-only at [`CERTS`].
fn mount_certs() -> Result<()> {
    let conf = esp_idf_svc::sys::esp_vfs_spiffs_conf_t {
        base_path: c"/certs".as_ptr(),
        partition_label: c"certs".as_ptr(),
        max_files: 4,
        format_if_mount_failed: false,
    };
    // SAFETY: `conf` points at 'static C strings and lives for the duration of the call;
    // ESP-IDF copies what it keeps. This is the only unsafe call in the firmware.
    esp_idf_svc::sys::esp!(unsafe { esp_idf_svc::sys::esp_vfs_spiffs_register(&conf) })
        .context("mounting the certs partition (see README: provisioning)")
}
