//! The embedded device endpoint on real sockets, with rumqttc clients as devices: who may
//! connect, what reaches whom, and what a device may not do to another.

mod link_common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use link_common::*;
use ota_local::link::{DeviceCredentials, DeviceEvent, DeviceLink, LinkError, MAX_PAYLOAD, embedded};
use rumqttc::mqttbytes::v4::{Connect, Packet as RawPacket};
use rumqttc::{ConnectReturnCode, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Endpoint {
    link: DeviceLink,
    port: u16,
    creds: DeviceCredentials,
}

impl Endpoint {
    async fn start() -> Self {
        let creds = DeviceCredentials::from_secret([42; 32]);
        let (link, addr) = embedded("127.0.0.1:0".parse().unwrap(), Arc::new(creds.clone())).await.unwrap();
        Endpoint { link, port: addr.port(), creds }
    }

    fn password(&self, name: &str) -> String {
        self.creds.password_for(&thing(name))
    }

    /// A device that connected, and whose Connected event the cloud has seen.
    async fn device(&mut self, name: &str) -> Device {
        let device = connect(self.port, name, &self.password(name)).await;
        assert_eq!(next_event(&mut self.link.events).await, DeviceEvent::Connected { thing: thing(name) });
        device
    }

    async fn publish(&self, topic: String, payload: &[u8]) {
        self.link.publisher.publish(topic, payload.to_vec()).await.unwrap();
    }
}

#[tokio::test]
async fn only_right_credentials_are_let_in() {
    let mut ep = Endpoint::start().await;
    let other = ep.password("dev-b");
    let wrong = refusal(try_connect(options(ep.port, "dev-a", Some(("dev-a", &other)))).await);
    assert_eq!(wrong, ConnectReturnCode::BadUserNamePassword);
    let none = refusal(try_connect(options(ep.port, "dev-a", None)).await);
    assert_eq!(none, ConnectReturnCode::BadUserNamePassword);
    let own = ep.password("dev-a");
    let impostor = refusal(try_connect(options(ep.port, "dev-b", Some(("dev-a", &own)))).await);
    assert_eq!(impostor, ConnectReturnCode::NotAuthorized, "a's password does not make it b");
    let not_a_thing = refusal(try_connect(options(ep.port, "no/thing", Some(("no/thing", &own)))).await);
    assert_eq!(not_a_thing, ConnectReturnCode::NotAuthorized);

    // Nobody refused was reported as connected: the first event is the good device's.
    let _a = connect(ep.port, "dev-a", &own).await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("dev-a") });
}

#[tokio::test]
async fn a_device_receives_what_the_cloud_publishes_on_its_subscriptions() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    let codes = a.subscribe(&[jobs_topic("dev-a", "notify-next"), jobs_topic("dev-a", "+/update/accepted")]).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce); 2]);

    ep.publish(jobs_topic("dev-a", "notify-next"), b"{\"execution\":1}").await;
    let p = a.expect_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        (jobs_topic("dev-a", "notify-next").as_str(), &b"{\"execution\":1}"[..])
    );
    assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);

    // Not subscribed: not sent. Wildcard subscription: sent. The largest payload passes.
    ep.publish(jobs_topic("dev-a", "$next/get/accepted"), b"not subscribed").await;
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    ep.publish(jobs_topic("dev-a", "job-7/update/accepted"), &big).await;
    let p = a.expect_publish().await;
    assert_eq!(p.topic, jobs_topic("dev-a", "job-7/update/accepted"));
    assert_eq!(&p.payload[..], &big[..]);

    let too_big = vec![0; MAX_PAYLOAD + 1];
    let err = ep.link.publisher.publish(jobs_topic("dev-a", "notify-next"), too_big).await.unwrap_err();
    assert!(matches!(err, LinkError::TooLarge { .. }), "{err}");
    let err = ep.link.publisher.publish("$aws/things/+/jobs/notify-next".into(), vec![]).await.unwrap_err();
    assert!(matches!(err, LinkError::InvalidTopic(_)), "{err}");

    // After UNSUBSCRIBE nothing more arrives; a later subscription shows the order held.
    a.client.unsubscribe(jobs_topic("dev-a", "notify-next")).await.unwrap();
    loop {
        if let Seen::Packet(rumqttc::Packet::UnsubAck(_)) = a.next().await {
            break;
        }
    }
    ep.publish(jobs_topic("dev-a", "notify-next"), b"after unsubscribe").await;
    ep.publish(jobs_topic("dev-a", "job-8/update/accepted"), b"still subscribed").await;
    assert_eq!(&a.expect_publish().await.payload[..], b"still subscribed");
}

#[tokio::test]
async fn a_device_publish_reaches_the_cloud_as_a_message_from_its_thing() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    a.publish(jobs_topic("dev-a", "$next/get"), b"{\"clientToken\":\"t\"}").await;
    let (from, topic, payload) = next_message(&mut ep.link.events).await;
    assert_eq!(
        (from, topic, payload),
        (thing("dev-a"), jobs_topic("dev-a", "$next/get"), b"{\"clientToken\":\"t\"}".to_vec())
    );
    loop {
        match a.next().await {
            Seen::Packet(rumqttc::Packet::PubAck(_)) => break,
            Seen::Packet(_) => {}
            Seen::Closed(e) => panic!("closed: {e}"),
        }
    }
    let big = vec![7u8; MAX_PAYLOAD];
    a.publish("$aws/things/dev-a/shadow/update".into(), &big).await;
    let (_, topic, payload) = next_message(&mut ep.link.events).await;
    assert_eq!((topic.as_str(), payload.len()), ("$aws/things/dev-a/shadow/update", MAX_PAYLOAD));
}

#[tokio::test]
async fn a_device_cannot_subscribe_to_another_things_topics_nor_receive_them() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    let mut b = ep.device("dev-b").await;
    let codes = a
        .subscribe(&[
            jobs_topic("dev-b", "notify-next"),
            "$aws/things/+/jobs/notify-next".into(),
            "$aws/things/#".into(),
            "#".into(),
            jobs_topic("dev-a", "notify-next"),
        ])
        .await;
    use SubscribeReasonCode::{Failure, Success};
    assert_eq!(codes, [Failure, Failure, Failure, Failure, Success(rumqttc::QoS::AtLeastOnce)]);
    assert_eq!(b.subscribe(&[jobs_topic("dev-b", "notify-next")]).await, [Success(rumqttc::QoS::AtLeastOnce)]);

    // B's job goes to B only; A's next publish is its own, so nothing of B's came before it.
    ep.publish(jobs_topic("dev-b", "notify-next"), b"for b").await;
    ep.publish(jobs_topic("dev-a", "notify-next"), b"for a").await;
    assert_eq!(&a.expect_publish().await.payload[..], b"for a");
    assert_eq!(&b.expect_publish().await.payload[..], b"for b");
}

#[tokio::test]
async fn a_publish_to_another_things_topic_never_reaches_the_cloud_and_disconnects_the_device() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    let mut b = ep.device("dev-b").await;
    assert_eq!(b.subscribe(&[jobs_topic("dev-b", "job-1/update")]).await.len(), 1);
    a.publish(jobs_topic("dev-b", "job-1/update"), b"{\"status\":\"SUCCEEDED\"}").await;
    a.expect_closed().await;
    // The cloud hears that A left and nothing from A before it.
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
    // Devices never receive each other's publishes, and B is still served.
    b.publish(jobs_topic("dev-b", "job-1/update"), b"from b").await;
    let (from, topic, payload) = next_message(&mut ep.link.events).await;
    assert_eq!((from, topic, payload), (thing("dev-b"), jobs_topic("dev-b", "job-1/update"), b"from b".to_vec()));
    ep.publish(jobs_topic("dev-b", "job-1/update"), b"cloud").await;
    assert_eq!(&b.expect_publish().await.payload[..], b"cloud");
}

fn command(thing: &str, id: &str, tail: &str) -> String {
    format!("$aws/commands/things/{thing}/executions/{id}/{tail}")
}

fn telemetry(thing: &str) -> String {
    format!("dt/ota/{thing}/telemetry")
}

#[tokio::test]
async fn a_device_has_its_own_commands_and_telemetry_and_no_one_elses() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    let mut b = ep.device("dev-b").await;
    use SubscribeReasonCode::{Failure, Success};
    let ok = Success(rumqttc::QoS::AtLeastOnce);
    let codes = a
        .subscribe(&[
            command("dev-a", "+", "request/json"),
            command("dev-a", "+", "response/+/json"),
            telemetry("dev-a"),
            command("dev-b", "+", "request/json"),
            "$aws/commands/things/+/executions/+/request/json".into(),
            "$aws/commands/things/dev-a".into(),
            "$aws/commands/#".into(),
            telemetry("dev-b"),
            "dt/ota/+/telemetry".into(),
        ])
        .await;
    assert_eq!(codes, [ok, ok, ok, Failure, Failure, Failure, Failure, Failure, Failure]);
    assert_eq!(b.subscribe(&[command("dev-b", "+", "request/json")]).await, [ok]);

    // The cloud's command request reaches its device only.
    ep.publish(command("dev-b", "e-1", "request/json"), br#"{"command":"reboot"}"#).await;
    ep.publish(command("dev-a", "e-2", "request/json"), br#"{"command":"identify"}"#).await;
    let p = a.expect_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        (command("dev-a", "e-2", "request/json").as_str(), &br#"{"command":"identify"}"#[..])
    );
    assert_eq!(b.expect_publish().await.topic, command("dev-b", "e-1", "request/json"));

    // A's response and telemetry reach the cloud as A's.
    a.publish(command("dev-a", "e-2", "response/json"), br#"{"status":"SUCCEEDED"}"#).await;
    a.publish(telemetry("dev-a"), br#"{"co2_ppm":612}"#).await;
    assert_eq!(
        next_message(&mut ep.link.events).await,
        (thing("dev-a"), command("dev-a", "e-2", "response/json"), br#"{"status":"SUCCEEDED"}"#.to_vec())
    );
    assert_eq!(
        next_message(&mut ep.link.events).await,
        (thing("dev-a"), telemetry("dev-a"), br#"{"co2_ppm":612}"#.to_vec())
    );
}

/// Each way a device could speak for another (or for the cloud) on the command and
/// telemetry topics closes its connection, and nothing of it reaches the cloud.
#[tokio::test]
async fn a_publish_on_another_devices_command_or_telemetry_topic_disconnects_the_device() {
    for topic in [
        command("dev-b", "e-1", "response/json"),
        telemetry("dev-b"),
        command("dev-a", "e-1", "request/json"),
        command("dev-a", "e-1", "response/accepted/json"),
        "$aws/commands/things/dev-a/executions/e-1/elsewhere".into(),
        "dt/ota/dev-a/other".into(),
    ] {
        let mut ep = Endpoint::start().await;
        let mut a = ep.device("dev-a").await;
        let b = ep.device("dev-b").await;
        a.publish(topic.clone(), br#"{"status":"SUCCEEDED"}"#).await;
        a.expect_closed().await;
        assert_eq!(
            next_event(&mut ep.link.events).await,
            DeviceEvent::Disconnected { thing: thing("dev-a") },
            "{topic}"
        );
        // B is still served, and the cloud's next message is B's own.
        b.publish(telemetry("dev-b"), b"{}").await;
        assert_eq!(
            next_message(&mut ep.link.events).await,
            (thing("dev-b"), telemetry("dev-b"), b"{}".to_vec()),
            "{topic}"
        );
    }
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let mut ep = Endpoint::start().await;
    let mut first = ep.device("dev-a").await;
    assert_eq!(first.subscribe(&[jobs_topic("dev-a", "notify-next")]).await.len(), 1);
    let mut second = ep.device("dev-a").await;
    first.expect_closed().await;
    assert_eq!(second.subscribe(&[jobs_topic("dev-a", "notify-next")]).await.len(), 1);
    ep.publish(jobs_topic("dev-a", "notify-next"), b"to the new one").await;
    assert_eq!(&second.expect_publish().await.payload[..], b"to the new one");

    // The old connection's end was no disconnection of the thing: the only Disconnected
    // comes when the new one leaves.
    second.client.disconnect().await.unwrap();
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_are_served_at_once() {
    const N: usize = 200;
    let mut ep = Endpoint::start().await;
    let names: Vec<String> = (0..N).map(|i| format!("pet_feeder-{i:03}")).collect();
    let mut joins = Vec::new();
    for name in &names {
        let (port, password, name) = (ep.port, ep.password(name), name.clone());
        joins.push(tokio::spawn(async move {
            let mut d = connect(port, &name, &password).await;
            assert_eq!(d.subscribe(&[jobs_topic(&name, "notify-next")]).await.len(), 1);
            d.publish(format!("$aws/things/{name}/shadow/update"), name.as_bytes()).await;
            d
        }));
    }
    let mut devices = Vec::new();
    for j in joins {
        devices.push(j.await.unwrap());
    }
    let (mut connected, mut reports) = (0, std::collections::BTreeSet::new());
    while reports.len() < N || connected < N {
        match next_event(&mut ep.link.events).await {
            DeviceEvent::Connected { .. } => connected += 1,
            DeviceEvent::Message { thing, topic, payload } => {
                assert_eq!(topic, format!("$aws/things/{thing}/shadow/update"));
                assert_eq!(payload, thing.as_str().as_bytes(), "the message names its own thing");
                assert!(reports.insert(thing.to_string()), "one report per device");
            }
            DeviceEvent::Disconnected { thing } => panic!("{thing} disconnected"),
        }
    }
    for name in &names {
        ep.publish(jobs_topic(name, "notify-next"), name.as_bytes()).await;
    }
    for d in &mut devices {
        let p = d.expect_publish().await;
        assert_eq!((p.topic, &p.payload[..]), (jobs_topic(&d.name, "notify-next"), d.name.as_bytes()));
    }
}

/// A hand-driven connection for what rumqttc will not do: stay silent, or never read.
struct RawDevice {
    stream: tokio::net::TcpStream,
    buf: BytesMut,
}

impl RawDevice {
    async fn connect(ep: &Endpoint, name: &str, keep_alive: u16) -> Self {
        let stream = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ep.port))).await.unwrap();
        let mut d = RawDevice { stream, buf: BytesMut::new() };
        let mut connect = Connect::new(name);
        connect.keep_alive = keep_alive;
        connect.set_login(name, ep.password(name));
        d.send(RawPacket::Connect(connect)).await;
        match d.read().await {
            Some(RawPacket::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        d
    }

    async fn send(&mut self, packet: RawPacket) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` once the server has closed the connection.
    async fn read(&mut self) -> Option<RawPacket> {
        loop {
            match RawPacket::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the server: {e}"),
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("the server answers");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn a_silent_device_is_dropped_after_its_keep_alive_and_pings_are_answered() {
    let mut ep = Endpoint::start().await;
    let mut d = RawDevice::connect(&ep, "dev-a", 1).await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("dev-a") });
    d.send(RawPacket::PingReq).await;
    assert_eq!(d.read().await, Some(RawPacket::PingResp));
    // Then silence: the server closes the connection on its own (1.5 × 1 s).
    assert_eq!(d.read().await, None);
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_dropped_without_holding_up_the_others() {
    let mut ep = Endpoint::start().await;
    let mut stuck = RawDevice::connect(&ep, "dev-stuck", 0).await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Connected { thing: thing("dev-stuck") });
    let mut subscribe =
        rumqttc::mqttbytes::v4::Subscribe::new(jobs_topic("dev-stuck", "notify-next"), rumqttc::QoS::AtLeastOnce);
    subscribe.pkid = 1;
    stuck.send(RawPacket::Subscribe(subscribe)).await;
    assert!(matches!(stuck.read().await, Some(RawPacket::SubAck(_))));
    let mut ok = ep.device("dev-ok").await;
    assert_eq!(ok.subscribe(&[jobs_topic("dev-ok", "notify-next")]).await.len(), 1);

    // The stuck device never reads again. Publishing to it never blocks the cloud; once its
    // socket and its queue are full it is dropped.
    let payload = vec![0u8; 16 * 1024];
    let mut sent = 0;
    loop {
        ep.publish(jobs_topic("dev-stuck", "notify-next"), &payload).await;
        sent += 1;
        assert!(sent < 100_000, "the stuck device was never dropped");
        if let Ok(event) = ep.link.events.try_recv() {
            assert_eq!(event, DeviceEvent::Disconnected { thing: thing("dev-stuck") });
            break;
        }
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    ep.publish(jobs_topic("dev-ok", "notify-next"), b"still served").await;
    assert_eq!(&ok.expect_publish().await.payload[..], b"still served");
    drop(stuck);
}

#[tokio::test]
async fn shutdown_closes_devices_the_listener_and_the_event_stream() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    let publisher = ep.link.publisher.clone();
    let DeviceLink { mut events, handle, .. } = ep.link;
    handle.shutdown().await;
    a.expect_closed().await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", ep.port)).await.is_err(), "the listener is closed");
    let err = publisher.publish(jobs_topic("dev-a", "notify-next"), vec![]).await.unwrap_err();
    assert!(matches!(err, LinkError::Closed), "{err}");
    assert_eq!(tokio::time::timeout(WAIT, events.recv()).await.unwrap(), None, "the event stream ends");
}

#[tokio::test]
async fn qos_2_and_packets_before_connect_close_the_connection() {
    let mut ep = Endpoint::start().await;
    let mut a = ep.device("dev-a").await;
    a.client.publish(jobs_topic("dev-a", "$next/get"), rumqttc::QoS::ExactlyOnce, false, vec![]).await.unwrap();
    a.expect_closed().await;
    assert_eq!(next_event(&mut ep.link.events).await, DeviceEvent::Disconnected { thing: thing("dev-a") });

    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", ep.port)).await.unwrap();
    let mut out = BytesMut::new();
    RawPacket::PingReq.write(&mut out, 16).unwrap();
    raw.write_all(&out).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "no answer but a closed connection");
}

/// The real device agent (ota-device, blocking, on its own thread) over the endpoint, the
/// test as the cloud: its subscriptions and publishes on the command, config-shadow and
/// telemetry topics pass the endpoint's confinement, and it answers update_config
/// (accepted, then out of bounds), an unknown command and reboot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_agent_answers_commands_over_the_endpoint() {
    use ota_core::command::{Capabilities, Health};
    use ota_core::names::DeviceType;
    use ota_core::update::DeviceConfig;
    use ota_device::host::{ConnectOptions, HostHttp, MemStorage, Power, SimFlash, connect_with};
    use ota_device::{Agent, AgentConfig, Application, Exit, pump_mqtt};
    use serde_json::{Map, Value, json};

    struct Co2;
    impl Application for Co2 {
        fn telemetry(&mut self) -> Option<(Map<String, Value>, Health)> {
            let Value::Object(m) = json!({"co2_ppm": 640}) else { unreachable!() };
            Some((m, Health::ok()))
        }
    }

    let mut ep = Endpoint::start().await;
    let name = "co2_monitor-07";
    let mut options = ConnectOptions::new(name, "127.0.0.1", ep.port);
    options.credentials = Some((name.to_string(), ep.password(name)));
    let power = Power::new();
    let (p, storage) = (power.clone(), MemStorage::new(power.clone()));
    let agent = std::thread::spawn(move || {
        let flash = SimFlash::new("1.0.0", 4 << 20, p.clone());
        flash.power_on();
        let (client, connection) = connect_with(&options);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || pump_mqtt(connection, tx));
        let device = DeviceConfig::new(thing(name), DeviceType::parse("co2_monitor").unwrap());
        let mut config = AgentConfig::new(device, 4 << 20);
        config.poll_interval = std::time::Duration::from_millis(20);
        config.reboot_grace = std::time::Duration::from_millis(200);
        config.capabilities = Capabilities::demo(true);
        let http = HostHttp::new(std::time::Duration::from_secs(5), Arc::default());
        let mut agent = Agent::new(config, client, rx, http, flash, storage).with_application(Co2);
        agent.run(p.off_flag()).expect("the agent runs")
    });

    // The cloud's view: messages from the device, by topic.
    let mut from_device = Vec::new();
    let mut wait_for = async |events: &mut tokio::sync::mpsc::Receiver<DeviceEvent>, topic: &str| -> Value {
        loop {
            if let Some(i) = from_device.iter().position(|(t, _): &(String, Value)| t == topic) {
                return from_device.remove(i).1;
            }
            match next_event(events).await {
                DeviceEvent::Message { thing: from, topic, payload } => {
                    assert_eq!(from, thing(name));
                    from_device.push((topic, serde_json::from_slice(&payload).unwrap_or(Value::Null)));
                }
                DeviceEvent::Disconnected { .. } => panic!("the device was disconnected: {from_device:?}"),
                _ => {}
            }
        }
    };
    let config_topic = format!("$aws/things/{name}/shadow/name/config/update");
    let reported = wait_for(&mut ep.link.events, &config_topic).await;
    assert_eq!(reported["state"]["reported"]["sample_rate_seconds"], 60);
    assert_eq!(wait_for(&mut ep.link.events, &telemetry(name)).await, json!({"co2_ppm": 640}));

    let cases = [
        ("c-1", r#"{"command":"update_config","parameters":{"log_level":"debug"}}"#, "SUCCEEDED", None),
        (
            "c-2",
            r#"{"command":"update_config","parameters":{"sample_rate_seconds":9000}}"#,
            "REJECTED",
            Some("OUT_OF_BOUNDS"),
        ),
        ("x-1", r#"{"command":"launch"}"#, "REJECTED", Some("UNSUPPORTED_COMMAND")),
        ("r-1", r#"{"command":"reboot"}"#, "SUCCEEDED", None),
    ];
    for (id, body, status, code) in cases {
        ep.publish(command(name, id, "request/json"), body.as_bytes()).await;
        let answer = wait_for(&mut ep.link.events, &command(name, id, "response/json")).await;
        assert_eq!(answer["status"], status, "{id}: {answer}");
        if let Some(code) = code {
            assert_eq!(answer["statusReason"]["reasonCode"], code, "{id}: {answer}");
        }
        if id == "c-1" {
            let reported = wait_for(&mut ep.link.events, &config_topic).await;
            assert_eq!(reported["state"]["reported"]["log_level"], "debug");
        }
    }
    let exit = tokio::task::spawn_blocking(move || agent.join().unwrap()).await.unwrap();
    assert_eq!(exit, Exit::Reboot);
    power.switch_off();
}
