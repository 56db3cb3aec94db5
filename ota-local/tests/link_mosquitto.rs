//! The device link through Debian's mosquitto, configured only with the files
//! `write_mosquitto_files` generates: the same isolation as the embedded endpoint (a device
//! cannot read or update another device's job), and the external link carrying messages
//! both ways, also across a broker restart.
//!
//! Runs when `OTA_TEST_MOSQUITTO=1` (CI sets it and installs mosquitto); then a missing or
//! failing mosquitto fails the test. Without the variable each test says it skipped (under `CI` it fails).

mod link_common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use link_common::*;
use ota_local::link::{
    DeviceCredentials, DeviceLink, LinkError, MAX_PAYLOAD, MosquittoFiles, external, write_mosquitto_files,
};
use rumqttc::ConnectReturnCode;

const CLOUD_USER: &str = "ota-cloud";
const CLOUD_PASSWORD: &str = "cloud-pass:with@odd/chars";

struct Broker {
    child: Child,
    port: u16,
    bin: PathBuf,
    conf: PathBuf,
    creds: DeviceCredentials,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Broker {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts mosquitto again on the same port and files (after [`Broker::stop`]).
    fn restart(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match spawn(&self.bin, &self.conf, self.port) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                // The old socket may linger a moment.
                Err(e) if Instant::now() > deadline => panic!("mosquitto would not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn password(&self, name: &str) -> String {
        self.creds.password_for(&thing(name))
    }

    fn cloud_url(&self) -> String {
        // The password is percent-encoded where a URL needs it.
        let password = CLOUD_PASSWORD.replace('%', "%25").replace(':', "%3A").replace('@', "%40").replace('/', "%2F");
        format!("mqtt://{CLOUD_USER}:{password}@127.0.0.1:{}", self.port)
    }

    async fn cloud(&self) -> DeviceLink {
        external(&self.cloud_url(), "ota-cloud-link").await.expect("the cloud connects to mosquitto")
    }
}

/// `None` when the test is not enabled; panics when it is and mosquitto cannot run.
fn broker(things: &[&str]) -> Option<Broker> {
    if std::env::var("OTA_TEST_MOSQUITTO").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed: apt-get install mosquitto); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed) to run the mosquitto link tests");
        return None;
    }
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("OTA_TEST_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let creds = DeviceCredentials::from_secret([9; 32]);
    let things: Vec<_> = things.iter().map(|t| thing(t)).collect();
    let files = write_mosquitto_files(dir.path(), &creds, &things, CLOUD_USER, CLOUD_PASSWORD).unwrap();
    // A free port can be taken by another test between probing and mosquitto's bind, so a
    // mosquitto that exits at start is retried on a new port a few times.
    let mut last = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = write_conf(dir.path(), port, &files);
        match spawn(&bin, &conf, port) {
            Ok(child) => return Some(Broker { child, port, bin, conf, creds, _dir: dir }),
            Err(e) => last = e,
        }
    }
    panic!("OTA_TEST_MOSQUITTO=1 but mosquitto would not start: {last}");
}

fn write_conf(dir: &Path, port: u16, files: &MosquittoFiles) -> PathBuf {
    let conf = dir.join("mosquitto.conf");
    // `user root`: when the tests run as root, mosquitto would otherwise switch to its own
    // user before reading the (owner-only) password file; as any other user it is ignored.
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nuser root\n",
        files.password_file.display(),
        files.acl_file.display()
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

fn spawn(bin: &Path, conf: &Path, port: u16) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("mosquitto exited at start: {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Whoever answers must be our mosquitto, still running after its bind.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("mosquitto exited at start: {status}"));
            }
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("mosquitto did not listen on port {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn mosquitto_accepts_the_generated_passwords_and_nothing_else() {
    let Some(broker) = broker(&["dev-a", "dev-b"]) else { return };
    let _a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    let b_password = broker.password("dev-b");
    let code = refusal(try_connect(options(broker.port, "dev-a", Some(("dev-a", &b_password)))).await);
    assert!(matches!(code, ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword), "{code:?}");
    let code = refusal(try_connect(options(broker.port, "anonymous", None)).await);
    assert!(matches!(code, ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword), "{code:?}");

    let _cloud = broker.cloud().await;
    let wrong = format!("mqtt://{CLOUD_USER}:nope@127.0.0.1:{}", broker.port);
    let err = external(&wrong, "intruder").await.unwrap_err();
    assert!(matches!(err, LinkError::Refused(_)), "{err}");
}

#[tokio::test]
async fn mosquitto_a_device_account_cannot_eavesdrop_with_the_clouds_wildcards() {
    let Some(broker) = broker(&["dev-a", "dev-b"]) else { return };
    let mut cloud = broker.cloud().await;
    // mosquitto grants the subscriptions (it checks read access per message, at delivery).
    let as_device = format!("mqtt://dev-a:{}@127.0.0.1:{}", broker.password("dev-a"), broker.port);
    let mut spy = external(&as_device, "dev-a-spy").await.expect("mosquitto grants, then filters");
    let a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    let b = connect(broker.port, "dev-b", &broker.password("dev-b")).await;
    b.publish(jobs_topic("dev-b", "job-1/update"), b"b's status").await;
    assert_eq!(next_message(&mut cloud.events).await.0, thing("dev-b"), "the real cloud hears b");
    a.publish(jobs_topic("dev-a", "job-1/update"), b"a's status").await;
    let (from, _, payload) = next_message(&mut spy.events).await;
    assert_eq!((from, payload), (thing("dev-a"), b"a's status".to_vec()), "a's account hears only a");
}

#[tokio::test]
async fn mosquitto_a_device_cannot_read_another_things_job() {
    let Some(broker) = broker(&["dev-a", "dev-b"]) else { return };
    let cloud = broker.cloud().await;
    let mut a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    let mut b = connect(broker.port, "dev-b", &broker.password("dev-b")).await;
    // mosquitto 2.0 grants the SUBACK and then never delivers what the ACL does not let A
    // read (the embedded endpoint refuses the subscription outright).
    let codes = a.subscribe(&[jobs_topic("dev-b", "notify-next"), jobs_topic("dev-a", "notify-next")]).await;
    assert_eq!(codes.len(), 2);
    assert_eq!(b.subscribe(&[jobs_topic("dev-b", "notify-next")]).await.len(), 1);

    // B's job goes to B only; A's next publish is its own, so nothing of B's came before it.
    cloud.publisher.publish(jobs_topic("dev-b", "notify-next"), b"for b".to_vec()).await.unwrap();
    cloud.publisher.publish(jobs_topic("dev-a", "notify-next"), b"for a".to_vec()).await.unwrap();
    assert_eq!(&a.expect_publish().await.payload[..], b"for a");
    assert_eq!(&b.expect_publish().await.payload[..], b"for b");
}

#[tokio::test]
async fn mosquitto_a_device_cannot_update_another_things_job() {
    let Some(broker) = broker(&["dev-a", "dev-b"]) else { return };
    let mut cloud = broker.cloud().await;
    let a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    a.publish(jobs_topic("dev-b", "job-1/update"), b"{\"status\":\"SUCCEEDED\"}").await;
    a.publish(jobs_topic("dev-a", "job-1/update"), b"{\"status\":\"IN_PROGRESS\"}").await;
    // mosquitto drops the forbidden publish (it does not disconnect, unlike AWS IoT Core
    // and the embedded endpoint): the cloud's first message is A's own.
    let (from, topic, payload) = next_message(&mut cloud.events).await;
    assert_eq!(
        (from, topic, payload),
        (thing("dev-a"), jobs_topic("dev-a", "job-1/update"), b"{\"status\":\"IN_PROGRESS\"}".to_vec())
    );
}

#[tokio::test]
async fn mosquitto_the_external_link_carries_messages_both_ways() {
    let Some(broker) = broker(&["dev-a"]) else { return };
    let mut cloud = broker.cloud().await;
    let mut a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    assert_eq!(a.subscribe(&[jobs_topic("dev-a", "$next/get/accepted")]).await.len(), 1);

    a.publish(jobs_topic("dev-a", "$next/get"), b"{}").await;
    let big = vec![5u8; MAX_PAYLOAD];
    a.publish("$aws/things/dev-a/shadow/update".into(), &big).await;
    a.publish("$aws/things/dev-a/shadow/get".into(), b"").await;
    // Each once, in order (`$next/get` comes through the `+/get` filter).
    let (from, topic, _) = next_message(&mut cloud.events).await;
    assert_eq!((from, topic), (thing("dev-a"), jobs_topic("dev-a", "$next/get")));
    let (_, topic, payload) = next_message(&mut cloud.events).await;
    assert_eq!((topic.as_str(), payload.len()), ("$aws/things/dev-a/shadow/update", MAX_PAYLOAD));
    let (_, topic, _) = next_message(&mut cloud.events).await;
    assert_eq!(topic, "$aws/things/dev-a/shadow/get");

    cloud.publisher.publish(jobs_topic("dev-a", "$next/get/accepted"), big.clone()).await.unwrap();
    let p = a.expect_publish().await;
    assert_eq!((p.topic, p.payload.len()), (jobs_topic("dev-a", "$next/get/accepted"), MAX_PAYLOAD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_the_external_link_comes_back_after_a_broker_restart() {
    let Some(mut broker) = broker(&["dev-a"]) else { return };
    let mut cloud = broker.cloud().await;
    broker.stop();
    broker.restart();
    // The cloud reconnects and subscribes again on its own; until it has, a device's
    // message has no subscriber, so the device repeats it.
    let a = connect(broker.port, "dev-a", &broker.password("dev-a")).await;
    let deadline = Instant::now() + WAIT;
    loop {
        a.publish(jobs_topic("dev-a", "$next/get"), b"{}").await;
        match tokio::time::timeout(Duration::from_millis(250), cloud.events.recv()).await {
            Ok(Some(ota_local::link::DeviceEvent::Message { thing: from, topic, .. })) => {
                assert_eq!((from, topic), (thing("dev-a"), jobs_topic("dev-a", "$next/get")));
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "the cloud never heard the device after the restart"),
        }
    }
    cloud.shutdown().await;
}
