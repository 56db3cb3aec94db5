//! `ota devices enroll` and `ota devices revoke` against a running `ota serve`: the files a
//! real device is provisioned with let ota-device's host MQTT client connect to the TLS
//! device port as that thing, and revoking it from another process closes the connection
//! and keeps it out.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use embedded_svc::mqtt::client::{Connection, Event, EventPayload};
use ota_device::host::{ConnectOptions, connect_with};

const WAIT: Duration = Duration::from_secs(30);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ledger_entries(data: &Path) -> usize {
    let text = std::fs::read_to_string(data.join("device-ca/certificates.json")).unwrap_or_default();
    text.matches("\"serial\"").count()
}

#[test]
fn an_enrolled_device_connects_over_tls_and_a_revoked_one_is_closed_and_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["init"]);
    let (api, mqtt, mqtts) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _server = spawn(
        &data,
        &["serve", "--listen", &api, "--mqtt-listen", &mqtt, "--mqtts-listen", &mqtts],
        &dir.path().join("serve.log"),
    );
    wait_for("the TLS port listens", WAIT, || TcpStream::connect(&mqtts).is_ok() && data.join("server.json").exists());

    // Bad input changes nothing: no certificate issued, no device registered.
    let certs = dir.path().join("certs");
    let bad = ota(&data, &["devices", "enroll", "pet_feeder-05", "--type", "pet_feeder", "--attr", "x", "--out"]);
    assert!(!bad.status.success());
    let bad = ota(
        &data,
        &[
            "devices",
            "enroll",
            "pet_feeder-05",
            "--type",
            "pet_feeder",
            "--attr",
            "bad",
            "--out",
            certs.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("key=value"), "{bad:?}");
    assert!(!certs.exists() && ledger_entries(&data) == 0);
    assert!(!ok(&data, &["devices", "list"]).contains("pet_feeder-05"));

    let out = ok(
        &data,
        &[
            "devices",
            "enroll",
            "pet_feeder-05",
            "--type",
            "pet_feeder",
            "--attr",
            "location=kitchen",
            "--out",
            certs.to_str().unwrap(),
        ],
    );
    assert!(out.contains("enrolled pet_feeder-05"), "{out}");
    assert!(ok(&data, &["devices", "list"]).contains("pet_feeder-05"), "registered");
    let nvs = read(&certs.join("nvs.csv"));
    assert!(nvs.starts_with("key,type,encoding,value\nota,namespace,,\n"), "{nvs}");
    assert!(nvs.contains("thing,data,string,\"pet_feeder-05\""), "{nvs}");
    assert!(nvs.contains(&format!("mqtt_url,data,string,\"mqtts://{mqtts}\"")), "{nvs}");
    assert!(nvs.contains("https_ca,data,string,\"local\""), "{nvs}");
    assert!(nvs.contains("trusted_keys,data,string,\"-----BEGIN PUBLIC KEY-----"), "the data dir's trusted key");
    let settings: serde_json::Value = serde_json::from_str(&read(&certs.join("settings.json"))).unwrap();
    assert_eq!(settings["attributes"]["location"], "kitchen");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the device key is owner-only");
    }
    // A second enrollment into the same folder overwrites nothing.
    let again =
        ota(&data, &["devices", "enroll", "pet_feeder-05", "--type", "pet_feeder", "--out", certs.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");
    assert_eq!(ledger_entries(&data), 1);

    // The device connects with exactly those files.
    let (host, port) = mqtts.rsplit_once(':').unwrap();
    let options = ConnectOptions::new("pet_feeder-05", host, port.parse().unwrap())
        .with_tls(&read(&certs.join("ca.pem")), &read(&certs.join("cert.pem")), &read(&certs.join("key.pem")))
        .unwrap();
    let (_client, mut connection) = connect_with(&options);
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = connection.next() {
            let seen = match event.payload() {
                EventPayload::Connected(_) => "connected",
                EventPayload::Disconnected => "disconnected",
                _ => continue,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    assert_eq!(events.recv_timeout(WAIT).unwrap(), "connected");

    let out = ok(&data, &["devices", "revoke", "pet_feeder-05"]);
    assert!(out.contains("1 certificate(s) revoked"), "{out}");
    assert_eq!(events.recv_timeout(WAIT).unwrap(), "disconnected", "the server closed it");
    // The client keeps trying; none of its next attempts gets in.
    for _ in 0..3 {
        assert_eq!(events.recv_timeout(WAIT).unwrap(), "disconnected");
    }
    let unknown = ota(&data, &["devices", "revoke", "pet_feeder-99"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no certificate"), "{unknown:?}");
}
