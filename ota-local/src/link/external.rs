//! The link through an external MQTT broker (mosquitto, EMQX, ...): the cloud side connects
//! as one privileged client, subscribes to what devices send it under every thing's
//! reserved topics, and publishes replies. The broker enforces device isolation (see
//! [`super::write_mosquitto_files`]); this side only reads the thing from the topic.
//!
//! The connection is kept up for the link's whole life: when the broker restarts, the
//! client reconnects (with a growing pause, up to 5 s) and subscribes again.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubAck, SubscribeFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DeviceEvent, DeviceLink, EVENT_QUEUE, LinkError, LinkHandle, LinkPublisher, MAX_PACKET, PublisherInner};

/// What the cloud subscribes to, for every thing (`+`): job requests (`$next/get` is one of
/// the `+/get`, so it has no filter of its own: overlapping filters can make a broker
/// deliver a message twice), job status updates, classic and named shadow updates and gets,
/// command execution responses and telemetry.
pub const CLOUD_FILTERS: [&str; 8] = [
    "$aws/things/+/jobs/+/get",
    "$aws/things/+/jobs/+/update",
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/get",
    "$aws/commands/things/+/executions/+/response/json",
    "dt/ota/+/telemetry",
];

/// How long [`external`] waits for the broker to accept the connection and subscriptions.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Requests (publishes, subscriptions) queued for the broker before `publish` waits.
const REQUEST_QUEUE: usize = 1024;

/// An external broker: the cloud connects as a privileged client. `url` is
/// `mqtt://user:pass@host:port` (`tcp://` too; port 1883 by default; user and password
/// percent-decoded). Returns once the broker has accepted the connection and every
/// subscription, so a wrong password or a missing ACL entry fails here, not later.
pub async fn external(url: &str, client_id: &str) -> Result<DeviceLink, LinkError> {
    let broker = BrokerUrl::parse(url)?;
    if client_id.is_empty() {
        return Err(LinkError::InvalidUrl("the cloud's client id must not be empty".into()));
    }
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(MAX_PACKET, MAX_PACKET).set_clean_session(true);
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);

    // The first connection, in the caller's task: its failure is the caller's error.
    let mut early = Vec::new();
    let first = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe_many(filters()).map_err(|e| LinkError::Unreachable(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => return check_suback(&ack),
                Ok(Event::Incoming(Packet::Publish(p))) => early.push(p),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(LinkError::Refused(format!("connection refused ({code:?}) by {}", broker.host)));
                }
                Err(e) => return Err(LinkError::Unreachable(format!("{}:{}: {e}", broker.host, broker.port))),
            }
        }
    };
    tokio::time::timeout(FIRST_CONNECT_TIMEOUT, first).await.map_err(|_| {
        LinkError::Unreachable(format!(
            "{}:{} did not accept the connection within {FIRST_CONNECT_TIMEOUT:?}",
            broker.host, broker.port
        ))
    })??;
    log::info!("device link: connected to the broker at {}:{} as {client_id}", broker.host, broker.port);

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let pump = Pump { client: client.clone(), events: events_tx, stop: stop.clone(), tasks: tasks.clone() };
    tasks.spawn(pump.run(eventloop, early));
    let publisher = LinkPublisher { inner: PublisherInner::External(Publisher { client, stop: stop.clone() }) };
    Ok(DeviceLink { events, publisher, handle: LinkHandle::new(stop, tasks) })
}

fn filters() -> Vec<SubscribeFilter> {
    CLOUD_FILTERS.iter().map(|f| SubscribeFilter::new((*f).to_string(), QoS::AtLeastOnce)).collect()
}

fn check_suback(ack: &SubAck) -> Result<(), LinkError> {
    let refused: Vec<&str> = CLOUD_FILTERS
        .iter()
        .zip(&ack.return_codes)
        .filter(|(_, code)| matches!(code, rumqttc::SubscribeReasonCode::Failure))
        .map(|(filter, _)| *filter)
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(LinkError::Refused(format!(
            "subscriptions refused: {refused:?} (does the broker's ACL grant the cloud user `$aws/things/#`, `$aws/commands/things/#` and `dt/ota/#`? `ota devices provision --mosquitto DIR` writes one that does)"
        )))
    }
}

/// Drives the client's event loop: incoming publishes become events; lost connections are
/// retried and resubscribed.
struct Pump {
    client: AsyncClient,
    events: mpsc::Sender<DeviceEvent>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Pump {
    async fn run(self, mut eventloop: rumqttc::EventLoop, early: Vec<rumqttc::Publish>) {
        for publish in early {
            if !self.deliver(publish).await {
                return;
            }
        }
        let mut backoff = Duration::from_millis(250);
        let mut connected = true;
        loop {
            let polled = tokio::select! {
                _ = self.stop.cancelled() => break,
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    log::info!("device link: reconnected to the broker; subscribing again");
                    connected = true;
                    backoff = Duration::from_millis(250);
                    // Not awaited here: the request waits for this loop to poll it out.
                    let client = self.client.clone();
                    self.tasks.spawn(async move { client.subscribe_many(filters()).await });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Err(e) = check_suback(&ack) {
                        log::error!("device link: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if !self.deliver(publish).await {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        log::warn!("device link: lost the broker: {e}; reconnecting");
                        connected = false;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // A clean DISCONNECT, so the broker does not wait for the keep-alive.
        if connected && self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = eventloop.poll().await {
                    if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                        break;
                    }
                }
            })
            .await;
        }
    }

    /// Hands a publish to the cloud side; false once the link is stopping or nobody listens.
    async fn deliver(&self, publish: rumqttc::Publish) -> bool {
        let Some(thing) = super::thing_of_topic(&publish.topic) else {
            log::warn!("device link: ignoring a message on {:?}, which names no thing", publish.topic);
            return true;
        };
        let event = DeviceEvent::Message { thing, topic: publish.topic, payload: publish.payload.to_vec() };
        tokio::select! {
            _ = self.stop.cancelled() => false,
            sent = self.events.send(event) => sent.is_ok(),
        }
    }
}

/// The external transport's side of [`LinkPublisher`].
#[derive(Clone)]
pub(super) struct Publisher {
    client: AsyncClient,
    stop: CancellationToken,
}

impl Publisher {
    /// Queues the publish for the broker; waits only while the request queue is full (the
    /// broker is away or slower than the cloud side).
    pub(super) async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        if self.stop.is_cancelled() {
            return Err(LinkError::Closed);
        }
        tokio::select! {
            _ = self.stop.cancelled() => Err(LinkError::Closed),
            sent = self.client.publish(topic, QoS::AtLeastOnce, false, payload) => sent.map_err(|_| LinkError::Closed),
        }
    }
}

/// `mqtt://user:pass@host:port`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrokerUrl {
    /// A name or an address; an IPv6 address keeps its brackets (rumqttc joins host and port).
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl BrokerUrl {
    fn parse(url: &str) -> Result<Self, LinkError> {
        let bad = |why: &str| LinkError::InvalidUrl(format!("{url:?}: {why}"));
        let rest = if let Some(rest) = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")) {
            rest
        } else if url.starts_with("mqtts://") || url.starts_with("ssl://") {
            return Err(bad("TLS brokers are not supported; use mqtt:// on a trusted network"));
        } else {
            return Err(bad("expected mqtt://[user:password@]host[:port]"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        if hostport.contains(['/', '?', '#']) {
            return Err(bad("a broker URL has no path, query or fragment"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            (format!("[{addr}]"), after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 1883,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user name"))?;
                let password = percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
                if user.is_empty() {
                    return Err(bad("an empty user name"));
                }
                Some((user, password))
            }
        };
        Ok(BrokerUrl { host, port, credentials })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<BrokerUrl, LinkError> {
        BrokerUrl::parse(url)
    }

    #[test]
    fn urls_give_host_port_and_credentials() {
        let u = parse("mqtt://ota-cloud:p%40ss:w@broker.local:11883").unwrap();
        assert_eq!(u.host, "broker.local");
        assert_eq!(u.port, 11883);
        assert_eq!(u.credentials, Some(("ota-cloud".into(), "p@ss:w".into())));
        let u = parse("tcp://127.0.0.1/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.credentials), ("127.0.0.1", 1883, None));
        let u = parse("mqtt://u@[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 1884));
        assert_eq!(u.credentials, Some(("u".into(), String::new())));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, why) in [
            ("http://h", "expected mqtt://"),
            ("mqtts://h", "TLS"),
            ("mqtt://", "no host"),
            ("mqtt://h:0", "port"),
            ("mqtt://h:x", "port"),
            ("mqtt://h/path", "no path"),
            ("mqtt://u:%zz@h", "%-escape"),
            ("mqtt://:pw@h", "empty user"),
        ] {
            let err = parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
