//! The embedded endpoint over MQTT with mutual TLS, on real sockets with real certificates
//! from the data dir's CA: rumqttc clients over rustls (ring) as devices. Who a connection
//! is comes from its certificate alone; revocation, plaintext, other CAs and idle sockets
//! are refused as the endpoint's docs say.

mod link_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use link_common::*;
use ota_local::link::{DeviceCredentials, DeviceEvent, DeviceLink, EndpointLimits, EndpointOptions, embedded_endpoint};
use ota_local::pki::{DeviceBundle, LocalCa};
use rumqttc::mqttbytes::v4::{Connect, Packet as RawPacket};
use rumqttc::{ConnectReturnCode, MqttOptions, SubscribeReasonCode, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TlsEndpoint {
    link: DeviceLink,
    tls_port: u16,
    plain_port: u16,
    ca: LocalCa,
    creds: DeviceCredentials,
    dir: tempfile::TempDir,
}

impl TlsEndpoint {
    async fn start() -> Self {
        Self::start_with(EndpointLimits::default()).await
    }

    async fn start_with(limits: EndpointLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let creds = DeviceCredentials::from_secret([9; 32]);
        let mut options = EndpointOptions::tls("127.0.0.1:0".parse().unwrap(), ca.device_tls(&[]).unwrap());
        options.plain = Some(("127.0.0.1:0".parse().unwrap(), Arc::new(creds.clone())));
        options.limits = limits;
        options.revocation_poll = Duration::from_millis(50);
        let (link, addrs) = embedded_endpoint(options).await.unwrap();
        TlsEndpoint {
            link,
            tls_port: addrs.tls.unwrap().port(),
            plain_port: addrs.plain.unwrap().port(),
            ca,
            creds,
            dir,
        }
    }

    fn enroll(&self, name: &str) -> DeviceBundle {
        self.ca.issue_device(&thing(name)).unwrap()
    }

    fn options(&self, client_id: &str, identity: Option<&DeviceBundle>) -> MqttOptions {
        let mut o = options(self.tls_port, client_id, None);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(client_config(
            self.ca.ca_pem(),
            identity,
        ))));
        o
    }

    /// A device that connected with its certificate, and whose Connected event the cloud saw.
    async fn device(&mut self, name: &str, bundle: &DeviceBundle) -> Device {
        let device =
            try_connect(self.options(name, Some(bundle))).await.unwrap_or_else(|e| panic!("{name} connects: {e}"));
        assert_eq!(next_event(&mut self.link.events).await, DeviceEvent::Connected { thing: thing(name) });
        device
    }

    async fn publish(&self, topic: String, payload: &[u8]) {
        self.link.publisher.publish(topic, payload.to_vec()).await.unwrap();
    }

    /// The next event is `thing`'s Connected: nobody refused before it was reported.
    async fn expect_only(&mut self, name: &str, bundle: &DeviceBundle) -> Device {
        self.device(name, bundle).await
    }
}

/// A rustls client configuration on ring trusting `ca_pem`, with the device's certificate.
fn client_config(ca_pem: &str, identity: Option<&DeviceBundle>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        // The device agent's own TLS configuration (what `ota sim --tls` runs).
        Some(bundle) => ota_device::host::client_tls_config(ca_pem, &bundle.cert_pem, &bundle.key_pem).unwrap(),
        None => Arc::new(builder.with_no_client_auth()),
    }
}

/// Connecting fails before any CONNACK: the TLS handshake or the socket failed.
fn not_let_in(result: Result<Device, rumqttc::ConnectionError>) -> String {
    match result {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => panic!("a CONNACK ({code:?}) came back"),
        Err(e) => e.to_string(),
        Ok(d) => panic!("{} was let in", d.name),
    }
}

#[tokio::test]
async fn a_device_with_its_certificate_is_served_as_its_thing() {
    let mut ep = TlsEndpoint::start().await;
    let bundle = ep.enroll("pet_feeder-01");
    let mut d = ep.device("pet_feeder-01", &bundle).await;
    let codes = d
        .subscribe(&[jobs_topic("pet_feeder-01", "notify-next"), jobs_topic("pet_feeder-01", "$next/get/accepted")])
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce); 2]);

    // The jobs flow as a device runs it: notified, it asks for its next job, gets it, reports.
    ep.publish(jobs_topic("pet_feeder-01", "notify-next"), b"{\"execution\":{\"jobId\":\"j1\"}}").await;
    assert_eq!(d.expect_publish().await.topic, jobs_topic("pet_feeder-01", "notify-next"));
    d.publish(jobs_topic("pet_feeder-01", "$next/get"), b"{\"clientToken\":\"t\"}").await;
    let (from, topic, _) = next_message(&mut ep.link.events).await;
    assert_eq!((from, topic), (thing("pet_feeder-01"), jobs_topic("pet_feeder-01", "$next/get")));
    ep.publish(jobs_topic("pet_feeder-01", "$next/get/accepted"), b"{\"execution\":{\"jobId\":\"j1\"}}").await;
    assert_eq!(d.expect_publish().await.topic, jobs_topic("pet_feeder-01", "$next/get/accepted"));
    d.publish(jobs_topic("pet_feeder-01", "j1/update"), b"{\"status\":\"SUCCEEDED\"}").await;
    let (from, topic, payload) = next_message(&mut ep.link.events).await;
    assert_eq!(
        (from, topic, payload),
        (thing("pet_feeder-01"), jobs_topic("pet_feeder-01", "j1/update"), b"{\"status\":\"SUCCEEDED\"}".to_vec())
    );
    d.client.disconnect().await.unwrap();
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("pet_feeder-01") });

    // Username and password mean nothing over TLS: the certificate decides.
    let mut o = ep.options("pet_feeder-01", Some(&bundle));
    o.set_credentials("someone-else", "whatever");
    let _again = try_connect(o).await.unwrap();
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("pet_feeder-01") });
}

#[tokio::test]
async fn no_client_certificate_and_one_from_another_ca_are_refused() {
    let mut ep = TlsEndpoint::start().await;
    let why = not_let_in(try_connect(ep.options("pet_feeder-01", None)).await);
    assert!(!why.is_empty());

    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = LocalCa::load_or_create(elsewhere.path()).unwrap().issue_device(&thing("pet_feeder-01")).unwrap();
    not_let_in(try_connect(ep.options("pet_feeder-01", Some(&stranger))).await);

    // A device password does not open the TLS port either.
    let mut o = ep.options("pet_feeder-01", None);
    let password = ep.creds.password_for(&thing("pet_feeder-01"));
    o.set_credentials("pet_feeder-01", password);
    not_let_in(try_connect(o).await);

    // Nobody refused was reported: the first event is the good device's.
    let bundle = ep.enroll("pet_feeder-01");
    ep.expect_only("pet_feeder-01", &bundle).await;
}

#[tokio::test]
async fn a_certificate_for_one_thing_cannot_act_for_another() {
    let mut ep = TlsEndpoint::start().await;
    let a = ep.enroll("dev-a");
    let b = ep.enroll("dev-b");
    // CONNECT as B with A's certificate: not authorized.
    assert_eq!(refusal(try_connect(ep.options("dev-b", Some(&a))).await), ConnectReturnCode::NotAuthorized);
    let mut devb = ep.device("dev-b", &b).await;
    assert_eq!(devb.subscribe(&[jobs_topic("dev-b", "notify-next")]).await.len(), 1);
    let mut deva = ep.device("dev-a", &a).await;

    use SubscribeReasonCode::{Failure, Success};
    let codes = deva.subscribe(&[jobs_topic("dev-b", "notify-next"), jobs_topic("dev-a", "notify-next")]).await;
    assert_eq!(codes, [Failure, Success(rumqttc::QoS::AtLeastOnce)]);
    ep.publish(jobs_topic("dev-b", "notify-next"), b"for b").await;
    ep.publish(jobs_topic("dev-a", "notify-next"), b"for a").await;
    assert_eq!(&deva.expect_publish().await.payload[..], b"for a");
    assert_eq!(&devb.expect_publish().await.payload[..], b"for b");

    // A publish under B's topics never reaches the cloud and closes A's connection.
    deva.publish(jobs_topic("dev-b", "j1/update"), b"{\"status\":\"SUCCEEDED\"}").await;
    deva.expect_closed().await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
    devb.publish(jobs_topic("dev-b", "j1/update"), b"from b").await;
    let (from, _, payload) = next_message(&mut ep.link.events).await;
    assert_eq!((from, payload), (thing("dev-b"), b"from b".to_vec()));
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_refused() {
    let mut ep = TlsEndpoint::start().await;
    // An MQTT CONNECT in clear, with a good password: no CONNACK, the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ep.tls_port))).await.unwrap();
    let mut connect = Connect::new("pet_feeder-01");
    connect.set_login("pet_feeder-01", ep.creds.password_for(&thing("pet_feeder-01")));
    let mut out = BytesMut::new();
    RawPacket::Connect(connect).write(&mut out, 1 << 16).unwrap();
    raw.write_all(&out).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, raw.read_to_end(&mut answer)).await.expect("the server closes");
    assert!(read.is_ok() || answer.is_empty(), "{read:?}");
    assert!(answer.first() != Some(&0x20), "no CONNACK: {answer:?}");
    assert!(answer.is_empty() || answer[0] == 0x15, "nothing but a TLS alert: {answer:?}");

    // rumqttc in clear against the TLS port fails the same way.
    let password = ep.creds.password_for(&thing("pet_feeder-01"));
    not_let_in(try_connect(options(ep.tls_port, "pet_feeder-01", Some(("pet_feeder-01", &password)))).await);

    // The plain port still takes the password (loopback).
    let _d = connect_plain(&ep, "pet_feeder-01").await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("pet_feeder-01") });
}

async fn connect_plain(ep: &TlsEndpoint, name: &str) -> Device {
    connect(ep.plain_port, name, &ep.creds.password_for(&thing(name))).await
}

#[tokio::test]
async fn a_revoked_device_is_dropped_and_cannot_connect_until_enrolled_again() {
    let mut ep = TlsEndpoint::start().await;
    let a = ep.enroll("dev-a");
    let b = ep.enroll("dev-b");
    let mut deva = ep.device("dev-a", &a).await;
    let mut devb = ep.device("dev-b", &b).await;
    assert_eq!(devb.subscribe(&[jobs_topic("dev-b", "notify-next")]).await.len(), 1);

    assert_eq!(ep.ca.revoke(&thing("dev-a")).unwrap(), vec![a.serial.clone()]);
    deva.expect_closed().await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
    assert_eq!(refusal(try_connect(ep.options("dev-a", Some(&a))).await), ConnectReturnCode::NotAuthorized);
    ep.publish(jobs_topic("dev-b", "notify-next"), b"still served").await;
    assert_eq!(&devb.expect_publish().await.payload[..], b"still served");

    // Enrolled again, with a new certificate, it is back; the old certificate stays revoked.
    let again = ep.enroll("dev-a");
    let _deva = ep.device("dev-a", &again).await;
    assert_eq!(refusal(try_connect(ep.options("dev-a", Some(&a))).await), ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn a_revocation_made_by_another_process_drops_the_device() {
    let mut ep = TlsEndpoint::start().await;
    let a = ep.enroll("dev-a");
    let mut deva = ep.device("dev-a", &a).await;
    // Another LocalCa on the same data dir (what `ota devices revoke` is): the endpoint
    // learns of it from the file.
    let other = LocalCa::load_or_create(ep.dir.path()).unwrap();
    other.revoke(&thing("dev-a")).unwrap();
    deva.expect_closed().await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_keep_a_device_out_and_are_closed_after_the_deadline() {
    const CAP: usize = 50;
    const IDLE: usize = 300;
    let limits = EndpointLimits {
        max_unauthenticated: CAP,
        connect_timeout: Duration::from_secs(5),
        ..EndpointLimits::default()
    };
    let mut ep = TlsEndpoint::start_with(limits).await;
    let bundle = ep.enroll("pet_feeder-01");
    // Sockets that connect and say nothing: to the TLS port, and to the plain one.
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let port = if i % 2 == 0 { ep.tls_port } else { ep.plain_port };
        idle.push(tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap());
    }
    // Accepted in order, the oldest closed to make room: all but the last CAP go at once.
    for socket in idle.iter_mut().take(IDLE - CAP) {
        closed(socket).await;
    }

    // A real device still connects, over TLS and in clear, and is served.
    let mut d = ep.device("pet_feeder-01", &bundle).await;
    assert_eq!(d.subscribe(&[jobs_topic("pet_feeder-01", "notify-next")]).await.len(), 1);
    let mut p = connect_plain(&ep, "pet_feeder-02").await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("pet_feeder-02") });
    assert_eq!(p.subscribe(&[jobs_topic("pet_feeder-02", "notify-next")]).await.len(), 1);

    // The idle sockets left are closed once the CONNECT deadline passes; the devices stay.
    for socket in idle.iter_mut().skip(IDLE - CAP) {
        closed(socket).await;
    }
    ep.publish(jobs_topic("pet_feeder-01", "notify-next"), b"after the idle ones").await;
    assert_eq!(&d.expect_publish().await.payload[..], b"after the idle ones");
    ep.publish(jobs_topic("pet_feeder-02", "notify-next"), b"plain too").await;
    assert_eq!(&p.expect_publish().await.payload[..], b"plain too");
}

/// Waits (within [`WAIT`]) until the server has closed `socket`.
async fn closed(socket: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(WAIT, socket.read(&mut buf)).await.expect("the server closes the socket") {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn authenticated_devices_are_never_dropped_for_new_sockets() {
    let limits = EndpointLimits { max_connections: 3, ..EndpointLimits::default() };
    let mut ep = TlsEndpoint::start_with(limits).await;
    let mut devices = Vec::new();
    for name in ["dev-1", "dev-2", "dev-3"] {
        let bundle = ep.enroll(name);
        let mut d = ep.device(name, &bundle).await;
        assert_eq!(d.subscribe(&[jobs_topic(name, "notify-next")]).await.len(), 1);
        devices.push(d);
    }
    // Full of authenticated devices: a fourth is closed at once, over TLS or in clear.
    let fourth = ep.enroll("dev-4");
    not_let_in(try_connect(ep.options("dev-4", Some(&fourth))).await);
    let password = ep.creds.password_for(&thing("dev-4"));
    not_let_in(try_connect(options(ep.plain_port, "dev-4", Some(("dev-4", &password)))).await);
    for d in &mut devices {
        ep.publish(jobs_topic(&d.name, "notify-next"), b"still here").await;
        assert_eq!(&d.expect_publish().await.payload[..], b"still here");
    }
    // One leaves: there is room again.
    let first = devices.remove(0);
    first.client.disconnect().await.unwrap();
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-1") });
    ep.device("dev-4", &fourth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_agents_host_client_connects_with_its_certificate() {
    use embedded_svc::mqtt::client::{Client, Connection, Event, EventPayload, Publish, QoS};
    use ota_device::host::{ConnectOptions, connect_with};

    let mut ep = TlsEndpoint::start().await;
    let bundle = ep.enroll("pet_feeder-07");
    let bad = ConnectOptions::new("pet_feeder-07", "127.0.0.1", ep.tls_port).with_tls("not pem", "", "");
    assert!(bad.unwrap_err().to_string().contains("CA file"));
    let wrong_key = ep.enroll("pet_feeder-08").key_pem;
    let bad = ConnectOptions::new("pet_feeder-07", "127.0.0.1", ep.tls_port).with_tls(
        &bundle.ca_pem,
        &bundle.cert_pem,
        &wrong_key,
    );
    assert!(bad.unwrap_err().to_string().contains("do not go together"));

    let options = ConnectOptions::new("pet_feeder-07", "127.0.0.1", ep.tls_port)
        .with_tls(&bundle.ca_pem, &bundle.cert_pem, &bundle.key_pem)
        .unwrap();
    assert!(format!("{options:?}").contains("tls: true"));
    let (mut client, mut connection) = connect_with(&options);
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = connection.next() {
            let seen = match event.payload() {
                EventPayload::Connected(_) => "connected".to_string(),
                EventPayload::Received { topic, data, .. } => {
                    format!("{} {}", topic.unwrap_or_default(), String::from_utf8_lossy(data))
                }
                _ => continue,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    assert_eq!(seen_next(&mut seen).await, "connected");
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("pet_feeder-07") });
    let notify = jobs_topic("pet_feeder-07", "notify-next");
    client.subscribe(&notify, QoS::AtLeastOnce).unwrap();
    // Packets are handled in order: once the cloud has this, the subscription is in place.
    client.publish(&jobs_topic("pet_feeder-07", "$next/get"), QoS::AtLeastOnce, false, b"{}").unwrap();
    let (from, _, _) = next_message(&mut ep.link.events).await;
    assert_eq!(from, thing("pet_feeder-07"));
    ep.publish(notify.clone(), b"job").await;
    assert_eq!(seen_next(&mut seen).await, format!("{notify} job"));
}

async fn seen_next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, seen.recv()).await.expect("the device sees it").expect("the pump runs")
}
