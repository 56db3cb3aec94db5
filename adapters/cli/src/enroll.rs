//! `ota devices enroll` and `ota devices revoke` on the local backend: a device's certificate
//! from the data dir's CA (`ota_local::pki`), its registration, and exactly the files the
//! firmware's provisioning reads (see firmware/README.md, "Provisioning a device"):
//!
//! - `ca.pem`, `cert.pem`, `key.pem` (the key owner-only) for the `certs` partition;
//! - `nvs.csv` for ESP-IDF's `nvs_partition_gen.py`: namespace `ota` with `thing`,
//!   `mqtt_url`, `https_ca=local` and `trusted_keys` (the data dir's trusted signing keys, for
//!   a firmware built without keys of its own); the Wi-Fi lines are the user's to add;
//! - `settings.json`: the same settings and the attributes, for tools and people.
//!
//! Everything is checked before anything is written: a bad name, type, attribute or URL, an
//! existing file in the folder, or a thing registered under another type changes nothing.
//!
//! `ota --backend aws devices enroll` writes the same files ([`enroll_on_aws`]): the thing,
//! its certificate and the device policy are AWS IoT's (`ota_aws::enroll`), `ca.pem` is Amazon
//! Root CA 1, `mqtt_url` the account's ATS endpoint, and there is no `https_ca` (downloads are
//! S3's, trusted by the firmware's certificate bundle). `ota --backend aws devices revoke`
//! sets the thing's certificates INACTIVE and detaches them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ota_core::device::Device;
use ota_core::names::{DeviceType, ThingName};
use ota_core::service::FleetManager;
use ota_core::{Error, Result};
use ota_local::pki::LocalCa;
use serde::Serialize;

/// The files enroll writes into `--out`.
pub const FILES: [&str; 5] = ["ca.pem", "cert.pem", "key.pem", "nvs.csv", "settings.json"];

/// What `ota devices enroll` did.
#[derive(Debug, Serialize)]
pub struct Enrolled {
    pub thing: String,
    pub device_type: String,
    pub serial: String,
    pub mqtt_url: String,
    pub out: PathBuf,
    pub files: Vec<String>,
    /// Whether the registry already knew the thing (a new certificate for it, nothing else).
    pub was_registered: bool,
}

/// The device settings, as `settings.json` holds them.
#[derive(Debug, Serialize)]
struct DeviceSettings<'a> {
    thing: &'a str,
    device_type: &'a str,
    mqtt_url: &'a str,
    /// `local`: downloads trust `ca.pem` (the local server's HTTPS); absent on AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    https_ca: Option<&'a str>,
    trusted_keys: String,
    attributes: &'a BTreeMap<String, String>,
}

/// Parses `key=value` attributes: keys and values as AWS IoT thing attributes allow
/// (`[a-zA-Z0-9_.,@/:#-]`, at most 128 and 800 characters).
pub fn parse_attributes(attrs: &[String]) -> Result<BTreeMap<String, String>> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c);
    let mut out = BTreeMap::new();
    for attr in attrs {
        let Some((key, value)) = attr.split_once('=') else {
            return Err(Error::invalid("--attr", attr.clone(), "expected key=value"));
        };
        if key.is_empty() || key.len() > 128 || !key.chars().all(allowed) {
            return Err(Error::invalid("--attr", attr.clone(), "the key is 1-128 of a-z A-Z 0-9 _ . , @ / : # -"));
        }
        if value.len() > 800 || !value.chars().all(allowed) {
            return Err(Error::invalid(
                "--attr",
                attr.clone(),
                "the value is up to 800 of a-z A-Z 0-9 _ . , @ / : # -",
            ));
        }
        if out.insert(key.to_string(), value.to_string()).is_some() {
            return Err(Error::invalid("--attr", attr.clone(), format!("{key} is given twice")));
        }
    }
    Ok(out)
}

/// Checks an `mqtts://HOST:PORT` URL (the form ESP-IDF's MQTT client takes).
pub fn check_mqtt_url(url: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("--mqtt-url", url.to_string(), why.to_string());
    let rest = url.strip_prefix("mqtts://").ok_or_else(|| bad("must start with mqtts:// (devices use TLS)"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("must name a port: mqtts://HOST:8883"))?;
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(bad("must be mqtts://HOST:PORT with nothing else"));
    }
    port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535"))?;
    Ok(())
}

/// Enrolls `thing` as a `device_type` device: see the module docs.
pub async fn enroll(
    data_dir: &Path,
    svc: &FleetManager,
    thing: &str,
    device_type: &str,
    attrs: &[String],
    out: &Path,
    mqtt_url: Option<String>,
) -> Result<Enrolled> {
    let thing = ThingName::parse(thing)?;
    let device_type = DeviceType::parse(device_type)?;
    let attributes = parse_attributes(attrs)?;
    let mqtt_url = match mqtt_url {
        Some(url) => url,
        None => crate::server::ServerInfo::read(data_dir).and_then(|info| info.mqtts).ok_or_else(|| {
            Error::invalid(
                "--mqtt-url",
                "",
                "no running `ota serve` with a TLS device port to take it from: give the URL devices reach it by, \
                 mqtts://HOST:8883 (HOST must be in the server certificate: --public-url or --tls-name)",
            )
        })?,
    };
    check_mqtt_url(&mqtt_url)?;
    check_out(out)?;
    let existing = svc.backend().registry.get(&thing).await?;
    if let Some(d) = &existing
        && d.device_type != device_type
    {
        return Err(Error::invalid(
            "--type",
            device_type.to_string(),
            format!("{thing} is registered as a {} device", d.device_type),
        ));
    }
    let trusted_keys = trusted_keys(svc);
    let ca = LocalCa::load_or_create(data_dir).map_err(|e| Error::storage(format!("the device CA: {e}")))?;

    std::fs::create_dir_all(out).map_err(|e| Error::storage(format!("cannot create {}: {e}", out.display())))?;
    let bundle =
        ca.issue_device(&thing).map_err(|e| Error::storage(format!("cannot issue {thing}'s certificate: {e}")))?;
    let settings = DeviceSettings {
        thing: thing.as_str(),
        device_type: device_type.as_str(),
        mqtt_url: &mqtt_url,
        https_ca: Some("local"),
        trusted_keys,
        attributes: &attributes,
    };
    write_files(out, &settings, &bundle.ca_pem, &bundle.cert_pem, &bundle.key_pem)?;
    if existing.is_none() {
        let naming = &svc.settings().naming;
        svc.backend()
            .registry
            .upsert(Device {
                firmware_version: None,
                connected: false,
                last_seen: None,
                ..Device::new(thing.clone(), device_type.clone(), naming.thing_group_of(&device_type))
            })
            .await?;
    }
    Ok(Enrolled {
        thing: thing.to_string(),
        device_type: device_type.to_string(),
        serial: bundle.serial,
        mqtt_url,
        out: out.to_path_buf(),
        files: FILES.iter().map(|f| f.to_string()).collect(),
        was_registered: existing.is_some(),
    })
}

/// `ota --backend aws devices enroll`: the thing, its certificate and policy on AWS IoT (see
/// the module docs), then the same files. Bad input and a non-empty folder are refused before
/// anything is created on AWS; `ota_aws::enroll` refuses a thing registered as another type or
/// that still has a certificate.
pub async fn enroll_on_aws(
    svc: &FleetManager,
    thing: &str,
    device_type: &str,
    attrs: &[String],
    out: &Path,
    mqtt_url: Option<String>,
) -> Result<Enrolled> {
    let thing = ThingName::parse(thing)?;
    let device_type = DeviceType::parse(device_type)?;
    let attributes = parse_attributes(attrs)?;
    if let Some(url) = mqtt_url {
        return Err(Error::invalid(
            "--mqtt-url",
            url,
            "on AWS devices connect to the account's IoT endpoint (iot:Data-ATS), which enroll writes itself",
        ));
    }
    check_out(out)?;
    let trusted_keys = trusted_keys(svc);
    std::fs::create_dir_all(out).map_err(|e| Error::storage(format!("cannot create {}: {e}", out.display())))?;
    let existing = svc.backend().registry.get(&thing).await?;
    let bundle = crate::aws::enroll_on_aws(&thing, &device_type, &attributes).await?;
    let settings = DeviceSettings {
        thing: thing.as_str(),
        device_type: device_type.as_str(),
        mqtt_url: &bundle.mqtt_url,
        https_ca: None,
        trusted_keys,
        attributes: &attributes,
    };
    write_files(out, &settings, &bundle.ca_pem, &bundle.cert_pem, &bundle.key_pem)?;
    Ok(Enrolled {
        thing: thing.to_string(),
        device_type: device_type.to_string(),
        serial: bundle.certificate_id.clone(),
        mqtt_url: bundle.mqtt_url.clone(),
        out: out.to_path_buf(),
        files: FILES.iter().map(|f| f.to_string()).collect(),
        was_registered: existing.is_some(),
    })
}

/// `ota --backend aws devices revoke`: every certificate of `thing` on AWS IoT set INACTIVE
/// and detached (IoT then refuses its connections); the registry entry stays.
pub async fn revoke_on_aws(thing: &str) -> Result<Revoked> {
    let thing = ThingName::parse(thing)?;
    let serials = crate::aws::revoke_on_aws(&thing).await?;
    Ok(Revoked { thing: thing.to_string(), serials })
}

/// The data dir's (or `OTA_SETTINGS`') trusted signing keys, PEM after PEM, for a firmware
/// built without keys of its own.
fn trusted_keys(svc: &FleetManager) -> String {
    svc.settings().signing.trusted_keys.iter().map(|k| k.public_key.clone()).collect()
}

/// Refuses a `--out` folder that already holds one of [`FILES`]: enroll overwrites nothing.
fn check_out(out: &Path) -> Result<()> {
    for file in FILES {
        let path = out.join(file);
        if path.exists() {
            return Err(Error::invalid(
                "--out",
                out.display().to_string(),
                format!("{} already exists; enroll into an empty folder", path.display()),
            ));
        }
    }
    Ok(())
}

/// Writes [`FILES`] into `out`: the key and the NVS settings owner-only.
fn write_files(out: &Path, settings: &DeviceSettings<'_>, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(settings).map_err(|e| Error::storage(e.to_string()))?;
    let files: [(&str, String, bool); 5] = [
        ("ca.pem", ca_pem.to_string(), false),
        ("cert.pem", cert_pem.to_string(), false),
        ("key.pem", key_pem.to_string(), true),
        ("nvs.csv", nvs_csv(settings), true),
        ("settings.json", json + "\n", false),
    ];
    for (name, contents, private) in &files {
        write_new(&out.join(name), contents.as_bytes(), *private)?;
    }
    Ok(())
}

/// What `ota devices revoke` did.
#[derive(Debug, Serialize)]
pub struct Revoked {
    pub thing: String,
    /// The certificates revoked now (empty: all already were).
    pub serials: Vec<String>,
}

/// Revokes every certificate of `thing`: a running `ota serve` closes its connection within
/// a second and refuses it from then on. The registry entry stays (its history is kept);
/// `ota devices enroll` issues a new certificate.
pub fn revoke(data_dir: &Path, thing: &str) -> Result<Revoked> {
    let thing = ThingName::parse(thing)?;
    let ca = LocalCa::load_or_create(data_dir).map_err(|e| Error::storage(format!("the device CA: {e}")))?;
    let serials = ca.revoke(&thing).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found_hint("certificate", thing.to_string(), e.to_string()),
        _ => Error::storage(format!("cannot revoke {thing}: {e}")),
    })?;
    Ok(Revoked { thing: thing.to_string(), serials })
}

/// ESP-IDF's NVS partition CSV: namespace `ota`, one string per setting (values quoted, so
/// PEM keys keep their line breaks).
fn nvs_csv(s: &DeviceSettings<'_>) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut csv = String::from("key,type,encoding,value\nota,namespace,,\n");
    csv += &format!("thing,data,string,{}\n", quote(s.thing));
    csv += &format!("mqtt_url,data,string,{}\n", quote(s.mqtt_url));
    if let Some(https_ca) = s.https_ca {
        csv += &format!("https_ca,data,string,{}\n", quote(https_ca));
    }
    if !s.trusted_keys.is_empty() {
        csv += &format!("trusted_keys,data,string,{}\n", quote(s.trusted_keys.trim_end()));
    }
    csv
}

fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let written = options.open(path).and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()));
    written.map_err(|e| Error::storage(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_urls_are_checked() {
        let attrs = parse_attributes(&["location=kitchen".into(), "floor=2".into()]).unwrap();
        assert_eq!(attrs.get("location").map(String::as_str), Some("kitchen"));
        assert!(parse_attributes(&["nokey".into()]).is_err());
        assert!(parse_attributes(&["=v".into()]).is_err());
        assert!(parse_attributes(&["a=b c".into()]).is_err());
        assert!(parse_attributes(&["a=1".into(), "a=2".into()]).is_err());
        check_mqtt_url("mqtts://192.168.1.10:8883").unwrap();
        check_mqtt_url("mqtts://ota.lan:8883").unwrap();
        assert!(check_mqtt_url("mqtt://ota.lan:1883").is_err());
        assert!(check_mqtt_url("mqtts://ota.lan").is_err());
        assert!(check_mqtt_url("mqtts://ota.lan:0").is_err());
        assert!(check_mqtt_url("mqtts://:8883").is_err());
    }

    #[test]
    fn the_nvs_csv_quotes_multi_line_keys() {
        let attrs = BTreeMap::new();
        let s = DeviceSettings {
            thing: "pet_feeder-05",
            device_type: "pet_feeder",
            mqtt_url: "mqtts://ota.lan:8883",
            https_ca: Some("local"),
            trusted_keys: "-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n".into(),
            attributes: &attrs,
        };
        let csv = nvs_csv(&s);
        assert!(csv.starts_with("key,type,encoding,value\nota,namespace,,\nthing,data,string,\"pet_feeder-05\"\n"));
        assert!(
            csv.contains("trusted_keys,data,string,\"-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\"\n")
        );
    }
}
