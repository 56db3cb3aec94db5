//! The embedded device endpoint: an MQTT 3.1.1 server that terminates device connections in
//! this process, the way AWS IoT Core terminates them in front of its Jobs and shadow
//! services. Packets are framed and parsed by rumqttc's codec; this file holds only the
//! server's rules:
//!
//! - CONNECT comes first and is authenticated; the answer (a thing name) is the
//!   connection's identity for its whole life. A second connection with the same client id
//!   takes over: the old one is closed.
//! - A device may subscribe only to filters under `$aws/things/{its thing}/` (others get a
//!   SUBACK failure) and publish only there. A publish under another thing's topics is not
//!   delivered and closes the connection, as AWS IoT Core does.
//! - Device publishes go to the cloud side as [`DeviceEvent::Message`], never to other
//!   devices. Cloud publishes go to every session whose subscriptions match, at QoS 1 with
//!   packet ids and a bounded in-flight window (no persistence: clean sessions only).
//! - Nothing a device does can block another: each connection has a bounded outgoing queue,
//!   and a device that lets it overflow is dropped.
//! - Not offered: QoS 2 (closes the connection, as on AWS IoT Core), retained messages
//!   (the retain flag is ignored), last wills (ignored), and persistent sessions (CONNACK
//!   never says "session present"; a device subscribes again on every connect).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ota_core::names::ThingName;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS, valid_filter, valid_topic};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::framing::PacketIo;
use super::router::{OUTGOING_QUEUE, Outgoing, Publisher, Router, Session, Sessions};
use super::{
    AuthError, Authenticator, DeviceEvent, DeviceLink, EVENT_QUEUE, LinkHandle, LinkPublisher, PublisherInner,
    THINGS_PREFIX,
};

/// QoS 1 messages sent to one device and not yet acknowledged; more wait in its queue.
const IN_FLIGHT_WINDOW: usize = 64;
/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded endpoint: an MQTT 3.1.1 server on `listen` (`127.0.0.1:0` picks a free
/// port). Returns the running link and the address it is bound to. Devices authenticate with
/// `auth`; everything they may do follows from the thing it answers.
pub async fn embedded(listen: SocketAddr, auth: Arc<dyn Authenticator>) -> std::io::Result<(DeviceLink, SocketAddr)> {
    let listener = crate::listen(listen).await?;
    let bound = listener.local_addr()?;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let router = Arc::new(Router { sessions: Mutex::new(Sessions::default()), stop: stop.clone() });
    let shared = Arc::new(Shared {
        auth,
        events: events_tx,
        router: router.clone(),
        next_session: AtomicU64::new(1),
        stop: stop.clone(),
        tasks: tasks.clone(),
    });
    tasks.spawn(accept_loop(listener, shared));
    log::info!("device endpoint listening on {bound}");
    let publisher = LinkPublisher { inner: PublisherInner::Embedded(Publisher { router }) };
    Ok((DeviceLink { events, publisher, handle: LinkHandle::new(stop, tasks) }, bound))
}

/// What the connection tasks share. Only they hold the event sender, so the cloud side's
/// event stream ends once the link has stopped.
struct Shared {
    auth: Arc<dyn Authenticator>,
    events: mpsc::Sender<DeviceEvent>,
    router: Arc<Router>,
    next_session: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.router.sessions()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                shared.tasks.spawn(serve(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                log::warn!("device endpoint: accept failed: {e}");
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    /// The device sent DISCONNECT.
    Disconnect,
    /// The device closed the socket without DISCONNECT.
    Closed,
    /// Killed: taken over by a new connection, too slow, or the link is shutting down.
    Killed,
    /// No packet within 1.5 × the keep-alive.
    KeepAliveExpired,
    /// A protocol violation or an I/O error.
    Error(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Disconnect => f.write_str("it sent DISCONNECT"),
            End::Closed => f.write_str("it closed the connection"),
            End::Killed => f.write_str("taken over, too slow, or the endpoint is stopping"),
            End::KeepAliveExpired => f.write_str("silent for 1.5 times its keep-alive"),
            End::Error(why) => f.write_str(why),
        }
    }
}

/// One device connection, from the first byte to the last.
async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut io = PacketIo::new(stream);
    let connect = tokio::select! {
        _ = shared.stop.cancelled() => return,
        first = tokio::time::timeout(CONNECT_TIMEOUT, io.read()) => first,
    };
    let connect = match connect {
        Ok(Ok(Some(Packet::Connect(connect)))) => connect,
        Ok(Err(CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_))) => {
            let _ = io.send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false))).await;
            log::info!("device endpoint: {peer} refused: not MQTT 3.1.1");
            return;
        }
        Ok(Ok(Some(other))) => {
            log::info!("device endpoint: {peer} sent {other:?} before CONNECT; closing");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            log::info!("device endpoint: {peer} sent a malformed CONNECT: {e}");
            return;
        }
        Err(_) => {
            log::info!("device endpoint: {peer} sent no CONNECT within {CONNECT_TIMEOUT:?}; closing");
            return;
        }
    };
    let Some(mut conn) = accept_connect(connect, io, peer, &shared).await else { return };
    let end = conn.run(&shared).await;
    let Connection { client_id, thing, session, .. } = conn;
    // The socket is closed (dropped with the connection) before waiting on the cloud side.
    log::info!("device {client_id} ({thing}) from {peer} disconnected: {end}");
    unregister(&shared, &client_id, session).await;
}

/// Authenticates the CONNECT, answers it, and registers the session (taking over an older
/// one with the same client id). `None` when the device was refused.
async fn accept_connect(connect: Connect, mut io: PacketIo, peer: SocketAddr, shared: &Shared) -> Option<Connection> {
    let refuse = |code| Packet::ConnAck(ConnAck::new(code, false));
    if connect.protocol != Protocol::V4 {
        let _ = io.send(refuse(ConnectReturnCode::RefusedProtocolVersion)).await;
        return None;
    }
    if connect.client_id.is_empty() {
        // A device must say who it is; the server does not make up ids.
        let _ = io.send(refuse(ConnectReturnCode::BadClientId)).await;
        return None;
    }
    let (username, password) = match &connect.login {
        Some(login) => (
            Some(login.username.as_str()).filter(|u| !u.is_empty()),
            Some(login.password.as_bytes()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let thing = match shared.auth.authenticate(&connect.client_id, username, password) {
        Ok(thing) => thing,
        Err(e) => {
            log::warn!("device endpoint: {peer} refused as client {:?}: {e}", connect.client_id);
            let code = match e {
                AuthError::BadCredentials => ConnectReturnCode::BadUserNamePassword,
                AuthError::NotAuthorized(_) => ConnectReturnCode::NotAuthorized,
            };
            let _ = io.send(refuse(code)).await;
            return None;
        }
    };

    // Permits first (they may wait on the cloud side), then the registry change and its
    // events under one lock, so Connected / Disconnected reach the cloud in the order the
    // registry changed.
    let permits = tokio::select! {
        _ = shared.stop.cancelled() => return None,
        permits = shared.events.reserve_many(2) => permits.ok(),
    };
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let kill = shared.stop.child_token();
    let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_QUEUE);
    let session =
        Session { id, thing: thing.clone(), subscriptions: Vec::new(), outgoing: outgoing_tx, kill: kill.clone() };
    {
        let mut sessions = shared.sessions();
        let mut permits = permits;
        let mut emit = |event| {
            if let Some(permit) = permits.as_mut().and_then(Iterator::next) {
                permit.send(event);
            }
        };
        if let Some((old, last)) = sessions.insert(&connect.client_id, session) {
            // MQTT 3.1.1 §3.1.4: the server disconnects the existing client with that id.
            log::info!("device {} ({}): a new connection from {peer} takes over", connect.client_id, old.thing);
            old.kill.cancel();
            if last {
                emit(DeviceEvent::Disconnected { thing: old.thing });
            }
        }
        emit(DeviceEvent::Connected { thing: thing.clone() });
    }
    if let Err(e) = io.send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await {
        log::info!("device {} ({thing}): CONNACK not sent: {e}", connect.client_id);
    }
    log::info!("device {} ({thing}) connected from {peer}", connect.client_id);
    let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    Some(Connection {
        io,
        client_id: connect.client_id,
        prefix: format!("{THINGS_PREFIX}{thing}/"),
        thing,
        session: id,
        kill,
        outgoing,
        in_flight: HashSet::new(),
        next_packet_id: 1,
        keep_alive,
    })
}

/// Removes the session if it is still the registered one (not taken over) and tells the
/// cloud side when its thing has no session left.
async fn unregister(shared: &Shared, client_id: &str, session: u64) {
    let permit = if shared.stop.is_cancelled() {
        None
    } else {
        tokio::select! {
            _ = shared.stop.cancelled() => None,
            permit = shared.events.reserve() => permit.ok(),
        }
    };
    let mut sessions = shared.sessions();
    if sessions.current(client_id, session).is_some()
        && let Some((old, true)) = sessions.remove(client_id)
        && let Some(permit) = permit
    {
        permit.send(DeviceEvent::Disconnected { thing: old.thing });
    }
}

/// An authenticated device connection.
struct Connection {
    io: PacketIo,
    client_id: String,
    thing: ThingName,
    /// `$aws/things/{thing}/`: the only place this device may subscribe and publish.
    prefix: String,
    session: u64,
    kill: CancellationToken,
    outgoing: mpsc::Receiver<Outgoing>,
    /// QoS 1 messages sent and not yet acknowledged, by packet id.
    in_flight: HashSet<u16>,
    next_packet_id: u16,
    /// 1.5 × the keep-alive the device asked for; `None` when it asked for none.
    keep_alive: Option<Duration>,
}

impl Connection {
    async fn run(&mut self, shared: &Shared) -> End {
        let mut deadline = self.keep_alive.map(|k| Instant::now() + k);
        loop {
            let expiry = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Unbiased: a device that floods publishes must not starve its own deliveries.
            let step = tokio::select! {
                _ = self.kill.cancelled() => return End::Killed,
                packet = self.io.read() => match packet {
                    Ok(Some(packet)) => {
                        let handled = self.handle(packet, shared).await;
                        // Counted from after handling: time spent waiting on a slow cloud
                        // side is not the device's silence.
                        deadline = self.keep_alive.map(|k| Instant::now() + k);
                        handled
                    }
                    Ok(None) => return End::Closed,
                    Err(e) => return End::Error(format!("bad packet: {e}")),
                },
                Some(message) = self.outgoing.recv(), if self.in_flight.len() < IN_FLIGHT_WINDOW => {
                    self.send_outgoing(message).await
                }
                _ = expiry => return End::KeepAliveExpired,
            };
            match step {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(e) => return End::Error(e),
            }
        }
    }

    /// Handles one packet from the device; `Some` ends the connection.
    async fn handle(&mut self, packet: Packet, shared: &Shared) -> Result<Option<End>, String> {
        match packet {
            Packet::Publish(publish) => return self.device_publish(publish, shared).await,
            Packet::PubAck(ack) => {
                self.in_flight.remove(&ack.pkid);
            }
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut granted = Vec::new();
                for filter in subscribe.filters {
                    if valid_filter(&filter.path) && filter.path.starts_with(&self.prefix) {
                        let qos1 = filter.qos != QoS::AtMostOnce;
                        codes.push(SubscribeReasonCode::Success(if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce }));
                        granted.push((filter.path, qos1));
                    } else {
                        log::warn!(
                            "device {} ({}) may not subscribe to {:?}: only under {}",
                            self.client_id,
                            self.thing,
                            filter.path,
                            self.prefix
                        );
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                // The router knows the filters before the device learns they are granted, so
                // anything the cloud publishes after the SUBACK reaches it.
                self.update_subscriptions(shared, |subs| {
                    for (filter, qos1) in granted {
                        match subs.iter_mut().find(|(f, _)| *f == filter) {
                            Some(existing) => existing.1 = qos1,
                            None => subs.push((filter, qos1)),
                        }
                    }
                });
                self.reply(Packet::SubAck(SubAck::new(subscribe.pkid, codes))).await?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.update_subscriptions(shared, |subs| subs.retain(|(f, _)| !unsubscribe.topics.contains(f)));
                self.reply(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))).await?;
            }
            Packet::PingReq => self.reply(Packet::PingResp).await?,
            Packet::Disconnect => return Ok(Some(End::Disconnect)),
            // QoS 2 is not offered (AWS IoT Core does not either), and the rest are packets
            // only a server sends, or a second CONNECT: protocol violations.
            other => return Err(format!("unexpected packet {other:?}")),
        }
        Ok(None)
    }

    /// A publish from the device: to the cloud side if it is under the device's own topics.
    async fn device_publish(&mut self, publish: Publish, shared: &Shared) -> Result<Option<End>, String> {
        if publish.qos == QoS::ExactlyOnce {
            return Err(format!("QoS 2 publish on {:?} (QoS 0 and 1 only)", publish.topic));
        }
        if !valid_topic(&publish.topic) || !publish.topic.starts_with(&self.prefix) || publish.topic == self.prefix {
            // AWS IoT Core closes the connection of a device that publishes where its policy
            // does not allow; the message goes nowhere.
            log::warn!(
                "device {} ({}) published to {:?}, outside its own topics {}: message dropped, connection closed",
                self.client_id,
                self.thing,
                publish.topic,
                self.prefix
            );
            return Ok(Some(End::Error(format!("publish outside its own topics: {:?}", publish.topic))));
        }
        let event =
            DeviceEvent::Message { thing: self.thing.clone(), topic: publish.topic, payload: publish.payload.to_vec() };
        tokio::select! {
            _ = self.kill.cancelled() => return Ok(Some(End::Killed)),
            sent = shared.events.send(event) => {
                if sent.is_err() {
                    // The cloud side is gone; devices cannot be served.
                    return Ok(Some(End::Error("the cloud side stopped listening".into())));
                }
            }
        }
        // Acknowledged only once the cloud side has it queued (at least once).
        if publish.qos == QoS::AtLeastOnce {
            self.reply(Packet::PubAck(PubAck::new(publish.pkid))).await?;
        }
        Ok(None)
    }

    fn update_subscriptions(&self, shared: &Shared, change: impl FnOnce(&mut Vec<(String, bool)>)) {
        let mut sessions = shared.sessions();
        if let Some(session) = sessions.current(&self.client_id, self.session) {
            change(&mut session.subscriptions);
        }
    }

    /// Sends a cloud message, and with it whatever else waits while the window allows, in
    /// one write.
    async fn send_outgoing(&mut self, first: Outgoing) -> Result<Option<End>, String> {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let mut publish = Publish::from_bytes(&*message.topic, message.qos, message.payload);
            if message.qos == QoS::AtLeastOnce {
                publish.pkid = self.allocate_packet_id();
                self.in_flight.insert(publish.pkid);
            }
            self.io.queue(Packet::Publish(publish)).map_err(|e| format!("cannot encode a publish: {e}"))?;
            if self.in_flight.len() < IN_FLIGHT_WINDOW && self.io.pending() < 64 * 1024 {
                next = self.outgoing.try_recv().ok();
            }
        }
        self.flush().await
    }

    /// The next packet id not in flight (the window is far smaller than the id space).
    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains(&id) {
                return id;
            }
        }
    }

    async fn reply(&mut self, packet: Packet) -> Result<(), String> {
        self.io.queue(packet).map_err(|e| format!("cannot encode a reply: {e}"))?;
        match self.flush().await? {
            None => Ok(()),
            Some(_) => Err("killed while writing".into()),
        }
    }

    /// Writes what is buffered, unless the connection is killed meanwhile (a device that
    /// stopped reading must not hold its task forever).
    async fn flush(&mut self) -> Result<Option<End>, String> {
        tokio::select! {
            _ = self.kill.cancelled() => Ok(Some(End::Killed)),
            written = self.io.flush() => written.map(|()| None).map_err(|e| format!("write failed: {e}")),
        }
    }
}
