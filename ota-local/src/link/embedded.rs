//! The embedded device endpoint: an MQTT 3.1.1 server that terminates device connections in
//! this process, the way AWS IoT Core terminates them in front of its Jobs and shadow
//! services. Packets are framed and parsed by rumqttc's codec; this file holds only the
//! server's rules:
//!
//! - Two listeners, either or both: MQTT over TLS with client certificates (as AWS IoT Core),
//!   and plain MQTT with passwords (the simulator, tests, loopback).
//! - Over TLS the connection's identity is the thing named by its verified certificate
//!   (issued by the data dir's CA, [`crate::pki`]), never a claimed client id or username:
//!   the CONNECT's client id must be that thing name (as AWS IoT's usual policy,
//!   `iot:Connect` on `client/${iot:Connection.Thing.ThingName}`) or the CONNACK says "not
//!   authorized"; username and password are ignored. A revoked certificate is refused at
//!   CONNECT, and a connected device whose certificate is revoked is dropped as soon as the
//!   revocation list changes (checked at each CONNECT, on every change made in this process,
//!   and every [`EndpointOptions::revocation_poll`] for changes made by another).
//! - Over plain TCP, CONNECT is authenticated by an [`Authenticator`] (username and
//!   password), only for loopback peers unless [`EndpointOptions::remote_passwords`] says
//!   otherwise: a password in clear does not cross a network by default.
//! - Either way the answer (a thing name) is the connection's identity for its whole life.
//!   A second connection with the same client id takes over: the old one is closed.
//! - A device may subscribe only to its own topics: filters under `$aws/things/{its thing}/`
//!   and `$aws/commands/things/{its thing}/`, and its telemetry topic (others get a SUBACK
//!   failure). It may publish under `$aws/things/{its thing}/`, its command executions'
//!   `.../executions/{id}/response/json`, and `dt/ota/{its thing}/telemetry`, as spelled by
//!   [`ota_core::topics`]. A publish anywhere else (another thing's topics, a command
//!   request, another device's telemetry) is not delivered and closes the connection, as
//!   AWS IoT Core does for a publish its policy denies.
//! - Device publishes go to the cloud side as [`DeviceEvent::Message`], never to other
//!   devices. Cloud publishes go to every session whose subscriptions match, at QoS 1 with
//!   packet ids and a bounded in-flight window (no persistence: clean sessions only).
//! - Nothing a device does can block another: each connection has a bounded outgoing queue,
//!   and a device that lets it overflow is dropped.
//! - Limits ([`EndpointLimits`]): a socket must finish its TLS handshake and send a CONNECT
//!   within the CONNECT deadline; at most `max_unauthenticated` sockets wait for that at once
//!   and at most `max_connections` are open. Sockets that have not authenticated give way:
//!   when either cap is reached, the oldest unauthenticated socket is closed to make room, so
//!   idle sockets, however many, cannot keep a real device out (it needs only its handshake's
//!   time). Authenticated devices are never dropped for a newcomer: once they alone fill
//!   `max_connections`, new sockets are closed at once.
//! - Not offered: QoS 2 (closes the connection, as on AWS IoT Core), retained messages
//!   (the retain flag is ignored), last wills (ignored), and persistent sessions (CONNACK
//!   never says "session present"; a device subscribes again on every connect).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ota_core::names::ThingName;
use ota_core::topics;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS, valid_filter, valid_topic};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::framing::{DeviceStream, PacketIo};
use super::router::{OUTGOING_QUEUE, Outgoing, Publisher, Router, Session, Sessions};
use super::{
    AuthError, Authenticator, DeviceEvent, DeviceLink, EVENT_QUEUE, LinkHandle, LinkPublisher, PublisherInner,
    THINGS_PREFIX,
};
use crate::pki::{DeviceTls, Revocations};

/// QoS 1 messages sent to one device and not yet acknowledged; more wait in its queue.
const IN_FLIGHT_WINDOW: usize = 64;

/// The endpoint's limits on sockets. See the module docs for what happens at each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLimits {
    /// Open sockets, authenticated or not, over both listeners.
    pub max_connections: usize,
    /// Sockets that have not completed CONNECT yet (including those in a TLS handshake).
    pub max_unauthenticated: usize,
    /// How long a socket may take from accept to a CONNECT (TLS handshake included).
    pub connect_timeout: Duration,
}

impl Default for EndpointLimits {
    /// 20,000 connections, 1,024 not yet authenticated, a 10 s CONNECT deadline.
    fn default() -> Self {
        EndpointLimits { max_connections: 20_000, max_unauthenticated: 1024, connect_timeout: Duration::from_secs(10) }
    }
}

/// What the embedded endpoint listens on and how it lets devices in.
#[derive(Clone)]
pub struct EndpointOptions {
    /// Plain MQTT on this address, devices authenticated by the [`Authenticator`].
    pub plain: Option<(SocketAddr, Arc<dyn Authenticator>)>,
    /// MQTT over TLS on this address, devices identified by their client certificate.
    pub tls: Option<(SocketAddr, DeviceTls)>,
    pub limits: EndpointLimits,
    /// Whether password authentication is offered to peers that are not on loopback (off by
    /// default: passwords would cross the network in clear).
    pub remote_passwords: bool,
    /// How often the revocation list is read again for changes made by another process.
    pub revocation_poll: Duration,
}

impl std::fmt::Debug for EndpointOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointOptions")
            .field("plain", &self.plain.as_ref().map(|(addr, _)| addr))
            .field("tls", &self.tls.as_ref().map(|(addr, _)| addr))
            .field("limits", &self.limits)
            .field("remote_passwords", &self.remote_passwords)
            .field("revocation_poll", &self.revocation_poll)
            .finish()
    }
}

impl EndpointOptions {
    /// Plain MQTT only on `listen`, with passwords for loopback peers and the default limits.
    pub fn plain(listen: SocketAddr, auth: Arc<dyn Authenticator>) -> Self {
        EndpointOptions {
            plain: Some((listen, auth)),
            tls: None,
            limits: EndpointLimits::default(),
            remote_passwords: false,
            revocation_poll: Duration::from_secs(1),
        }
    }

    /// MQTT over TLS only on `listen`, with the default limits.
    pub fn tls(listen: SocketAddr, tls: DeviceTls) -> Self {
        EndpointOptions {
            plain: None,
            tls: Some((listen, tls)),
            limits: EndpointLimits::default(),
            remote_passwords: false,
            revocation_poll: Duration::from_secs(1),
        }
    }
}

/// Where the endpoint's listeners are bound (`:0` in the options picks a free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointAddrs {
    pub plain: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// The embedded endpoint with plain MQTT only on `listen` (`127.0.0.1:0` picks a free port),
/// as [`EndpointOptions::plain`]. Returns the running link and the address it is bound to.
/// Devices authenticate with `auth`; everything they may do follows from the thing it answers.
pub async fn embedded(listen: SocketAddr, auth: Arc<dyn Authenticator>) -> std::io::Result<(DeviceLink, SocketAddr)> {
    let (link, addrs) = embedded_endpoint(EndpointOptions::plain(listen, auth)).await?;
    Ok((link, addrs.plain.expect("a plain listener was asked for")))
}

/// The embedded endpoint as `options` say: both listeners share one link, one registry of
/// sessions and one set of limits.
pub async fn embedded_endpoint(options: EndpointOptions) -> std::io::Result<(DeviceLink, EndpointAddrs)> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    if options.plain.is_none() && options.tls.is_none() {
        return Err(invalid("the device endpoint needs a plain or a TLS listener"));
    }
    let limits = options.limits.clone();
    if limits.max_connections == 0 || limits.max_unauthenticated == 0 || limits.connect_timeout.is_zero() {
        return Err(invalid("the endpoint's limits must be above zero"));
    }
    let plain = match &options.plain {
        Some((addr, _)) => Some(crate::listen(*addr).await?),
        None => None,
    };
    let tls = match &options.tls {
        Some((addr, _)) => Some(crate::listen(*addr).await?),
        None => None,
    };
    let addrs = EndpointAddrs {
        plain: plain.as_ref().map(TcpListener::local_addr).transpose()?,
        tls: tls.as_ref().map(TcpListener::local_addr).transpose()?,
    };
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let router = Arc::new(Router { sessions: Mutex::new(Sessions::default()), stop: stop.clone() });
    let revocations = options.tls.as_ref().map(|(_, t)| t.revocations.clone());
    let shared = Arc::new(Shared {
        auth: options.plain.as_ref().map(|(_, auth)| auth.clone()),
        remote_passwords: options.remote_passwords,
        revocations: revocations.clone(),
        limiter: Arc::new(Limiter::new(limits)),
        events: events_tx,
        router: router.clone(),
        next_session: AtomicU64::new(1),
        stop: stop.clone(),
        tasks: tasks.clone(),
    });
    if let Some(listener) = plain {
        tasks.spawn(accept_loop(listener, None, shared.clone()));
        log::info!("device endpoint listening on {} (MQTT, passwords)", addrs.plain.expect("bound"));
    }
    if let (Some(listener), Some((_, device_tls))) = (tls, &options.tls) {
        let acceptor = TlsAcceptor::from(device_tls.config.clone());
        tasks.spawn(accept_loop(listener, Some(acceptor), shared.clone()));
        log::info!("device endpoint listening on {} (MQTT over TLS, client certificates)", addrs.tls.expect("bound"));
    }
    if let Some(revocations) = revocations {
        tasks.spawn(follow_revocations(revocations, options.revocation_poll, shared));
    }
    let publisher = LinkPublisher { inner: PublisherInner::Embedded(Publisher { router }) };
    Ok((DeviceLink { events, publisher, handle: LinkHandle::new(stop, tasks) }, addrs))
}

/// What the connection tasks share. Only they hold the event sender, so the cloud side's
/// event stream ends once the link has stopped.
struct Shared {
    /// Passwords on the plain listener; `None` when there is none.
    auth: Option<Arc<dyn Authenticator>>,
    remote_passwords: bool,
    /// The TLS listener's revocation list; `None` when there is none.
    revocations: Option<Revocations>,
    limiter: Arc<Limiter>,
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

/// Drops every session whose certificate is revoked, whenever the list changes: at once for a
/// change made in this process, within `poll` for one made by another.
async fn follow_revocations(revocations: Revocations, poll: Duration, shared: Arc<Shared>) {
    let mut changed = revocations.subscribe();
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = changed.changed() => {}
            _ = tokio::time::sleep(poll) => {
                match revocations.refresh() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        log::warn!("device endpoint: cannot read the revocation list: {e}");
                        continue;
                    }
                }
            }
        }
        changed.mark_unchanged();
        let sessions = shared.sessions();
        for (client_id, session) in sessions.iter() {
            if session.certificate.as_deref().is_some_and(|serial| revocations.is_revoked_serial(serial)) {
                log::warn!("device {client_id} ({}): its certificate is revoked; disconnecting it", session.thing);
                session.kill.cancel();
            }
        }
    }
}

/// Counts sockets against [`EndpointLimits`]: the unauthenticated ones by age, so the oldest
/// can be closed to make room.
struct Limiter {
    limits: EndpointLimits,
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    /// Sockets that have not completed CONNECT, by accept order, each with what closes it.
    pending: BTreeMap<u64, CancellationToken>,
    authenticated: usize,
    next: u64,
}

/// One socket's place under the limits; given back when dropped.
struct Slot {
    limiter: Arc<Limiter>,
    id: u64,
    /// Cancelled when the socket is closed to make room for a newer one.
    evicted: CancellationToken,
    authenticated: bool,
}

impl Limiter {
    fn new(limits: EndpointLimits) -> Self {
        Limiter { limits, state: Mutex::new(LimiterState::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new socket, closing the oldest unauthenticated one if a cap is reached;
    /// `None` when authenticated devices alone fill `max_connections`.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.lock();
        if state.authenticated >= self.limits.max_connections {
            return None;
        }
        while state.pending.len() >= self.limits.max_unauthenticated
            || state.pending.len() + state.authenticated >= self.limits.max_connections
        {
            let Some((_, oldest)) = state.pending.pop_first() else { break };
            oldest.cancel();
        }
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.pending.insert(id, evicted.clone());
        Some(Slot { limiter: self.clone(), id, evicted, authenticated: false })
    }
}

impl Slot {
    /// Moves the socket from the unauthenticated to the authenticated; false if it was
    /// closed to make room meanwhile.
    fn authenticate(&mut self) -> bool {
        let mut state = self.limiter.lock();
        if state.pending.remove(&self.id).is_none() {
            return false;
        }
        state.authenticated += 1;
        self.authenticated = true;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        if self.authenticated {
            state.authenticated -= 1;
        } else {
            state.pending.remove(&self.id);
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = shared.limiter.admit() else {
                    // Closed at once: the endpoint is full of authenticated devices.
                    log::debug!(
                        "device endpoint: {peer} refused: {} connections",
                        shared.limiter.limits.max_connections
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                shared.tasks.spawn(serve(stream, peer, tls.clone(), slot, shared.clone()));
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
    /// Killed: taken over by a new connection, too slow, revoked, or the link is shutting down.
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
            End::Killed => f.write_str("taken over, too slow, revoked, or the endpoint is stopping"),
            End::KeepAliveExpired => f.write_str("silent for 1.5 times its keep-alive"),
            End::Error(why) => f.write_str(why),
        }
    }
}

/// How a connection proved who it is, before its CONNECT is read.
enum Credential {
    /// Plain TCP: the CONNECT's username and password, if the peer may use them.
    Password { loopback: bool },
    /// TLS: a client certificate from the data dir's CA, verified in the handshake.
    Certificate { thing: ThingName, serial: Vec<u8> },
}

/// One device connection, from the first byte to the last.
async fn serve(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, mut slot: Slot, shared: Arc<Shared>) {
    let deadline = Instant::now() + shared.limiter.limits.connect_timeout;
    let evicted = slot.evicted.clone();
    let opened = tokio::select! {
        _ = shared.stop.cancelled() => return,
        _ = evicted.cancelled() => {
            log::debug!("device endpoint: {peer} closed before CONNECT to make room for newer sockets");
            return;
        }
        opened = tokio::time::timeout_at(deadline, open(stream, peer, tls)) => opened,
    };
    let (io, credential, connect) = match opened {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(_) => {
            log::info!(
                "device endpoint: {peer} sent no CONNECT within {:?}; closing",
                shared.limiter.limits.connect_timeout
            );
            return;
        }
    };
    let Some(mut conn) = accept_connect(connect, io, peer, credential, &mut slot, &shared).await else { return };
    let end = conn.run(&shared).await;
    let Connection { client_id, thing, session, .. } = conn;
    // The socket is closed (dropped with the connection) before waiting on the cloud side.
    log::info!("device {client_id} ({thing}) from {peer} disconnected: {end}");
    unregister(&shared, &client_id, session).await;
    drop(slot);
}

/// The TLS handshake (on the TLS listener) and the first packet, which must be a CONNECT.
/// `None` when the connection is to be closed (logged here).
async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> Option<(PacketIo, Credential, Connect)> {
    let (stream, credential): (Box<dyn DeviceStream>, Credential) = match tls {
        // Canonical first: on a dual-stack listener 127.0.0.1 arrives as ::ffff:127.0.0.1.
        None => (Box::new(stream), Credential::Password { loopback: peer.ip().to_canonical().is_loopback() }),
        Some(acceptor) => {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(e) => {
                    // No client certificate, one from another CA, or not TLS at all.
                    log::info!("device endpoint: {peer} refused in the TLS handshake: {e}");
                    return None;
                }
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first());
            let identity = cert.ok_or_else(|| "no client certificate".to_string()).and_then(crate::pki::identity_of);
            match identity {
                Ok((thing, serial)) => (Box::new(stream), Credential::Certificate { thing, serial }),
                Err(e) => {
                    log::warn!("device endpoint: {peer} refused: {e}");
                    return None;
                }
            }
        }
    };
    let mut io = PacketIo::new(stream);
    match io.read().await {
        Ok(Some(Packet::Connect(connect))) => Some((io, credential, connect)),
        Err(CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_)) => {
            let _ = io.send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false))).await;
            log::info!("device endpoint: {peer} refused: not MQTT 3.1.1");
            None
        }
        Ok(Some(other)) => {
            log::info!("device endpoint: {peer} sent {other:?} before CONNECT; closing");
            None
        }
        Ok(None) => None,
        Err(e) => {
            log::info!("device endpoint: {peer} sent a malformed CONNECT: {e}");
            None
        }
    }
}

/// Decides who the CONNECT is from, answers it, and registers the session (taking over an
/// older one with the same client id). `None` when the device was refused.
async fn accept_connect(
    connect: Connect,
    mut io: PacketIo,
    peer: SocketAddr,
    credential: Credential,
    slot: &mut Slot,
    shared: &Shared,
) -> Option<Connection> {
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
    let identity = match credential {
        Credential::Certificate { thing, serial } => certificate_identity(&connect, thing, serial, shared),
        Credential::Password { loopback } => password_identity(&connect, loopback, shared).map(|thing| (thing, None)),
    };
    let (thing, certificate) = match identity {
        Ok(identity) => identity,
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
    if !slot.authenticate() {
        log::debug!("device endpoint: {peer} closed before CONNACK to make room for newer sockets");
        return None;
    }

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
    let session = Session {
        id,
        thing: thing.clone(),
        subscriptions: Vec::new(),
        outgoing: outgoing_tx,
        kill: kill.clone(),
        certificate: certificate.clone(),
    };
    {
        let mut sessions = shared.sessions();
        // Checked again under the registry lock: a revocation that landed since is seen
        // either here or by the revocation sweep, which takes the same lock.
        if let (Some(serial), Some(revocations)) = (&certificate, &shared.revocations)
            && revocations.is_revoked_serial(serial)
        {
            drop(sessions);
            log::warn!("device endpoint: {peer} refused as {thing}: its certificate was just revoked");
            let _ = io.send(refuse(ConnectReturnCode::NotAuthorized)).await;
            return None;
        }
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
    let how = if certificate.is_some() { "certificate" } else { "password" };
    log::info!("device {} ({thing}) connected from {peer} ({how})", connect.client_id);
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

/// A TLS device: its certificate's thing, if the certificate is not revoked and the CONNECT
/// claims that same thing as its client id.
fn certificate_identity(
    connect: &Connect,
    thing: ThingName,
    serial: Vec<u8>,
    shared: &Shared,
) -> Result<(ThingName, Option<Vec<u8>>), AuthError> {
    if let Some(revocations) = &shared.revocations {
        // A stat of the ledger, reading it only when it changed: a revocation made by another
        // process a moment ago is seen here.
        if let Err(e) = revocations.refresh() {
            log::warn!("device endpoint: cannot read the revocation list, using the last one read: {e}");
        }
        if revocations.is_revoked_serial(&serial) {
            return Err(AuthError::NotAuthorized(format!(
                "the certificate of {thing} (serial {}) is revoked",
                hex::encode(&serial)
            )));
        }
    }
    if connect.client_id != thing.as_str() {
        return Err(AuthError::NotAuthorized(format!(
            "the certificate is {thing}'s; it may connect only as client {thing}"
        )));
    }
    Ok((thing, Some(serial)))
}

/// A plain-TCP device: what the authenticator says of its username and password, if this
/// peer may use passwords at all.
fn password_identity(connect: &Connect, loopback: bool, shared: &Shared) -> Result<ThingName, AuthError> {
    passwords_offered(loopback, shared.remote_passwords)?;
    let Some(auth) = &shared.auth else {
        return Err(AuthError::NotAuthorized("no password authentication here".into()));
    };
    let (username, password) = match &connect.login {
        Some(login) => (
            Some(login.username.as_str()).filter(|u| !u.is_empty()),
            Some(login.password.as_bytes()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    auth.authenticate(&connect.client_id, username, password)
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

/// Whether a peer may log in with a password at all: loopback peers always, others only when
/// remote passwords are enabled.
fn passwords_offered(loopback: bool, remote_passwords: bool) -> Result<(), AuthError> {
    if loopback || remote_passwords {
        return Ok(());
    }
    Err(AuthError::NotAuthorized(
        "password authentication is offered to loopback peers only; connect over TLS with a device certificate".into(),
    ))
}

/// An authenticated device connection.
struct Connection {
    io: PacketIo,
    client_id: String,
    thing: ThingName,
    /// `$aws/things/{thing}/`: where this device may subscribe and publish freely.
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
                    if valid_filter(&filter.path) && self.may_subscribe(&filter.path) {
                        let qos1 = filter.qos != QoS::AtMostOnce;
                        codes.push(SubscribeReasonCode::Success(if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce }));
                        granted.push((filter.path, qos1));
                    } else {
                        log::warn!(
                            "device {} ({}) may not subscribe to {:?}: only to its own topics",
                            self.client_id,
                            self.thing,
                            filter.path,
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

    /// Whether this device may hold `filter` (already a valid filter): under its things or
    /// commands prefix, or its telemetry topic.
    fn may_subscribe(&self, filter: &str) -> bool {
        filter.starts_with(&self.prefix)
            || filter.strip_prefix(topics::COMMANDS_PREFIX).is_some_and(|rest| self.own_levels(rest))
            || topics::parse_telemetry(filter) == Some(self.thing.as_str())
    }

    /// `rest` starts with this thing's level and has something below it.
    fn own_levels(&self, rest: &str) -> bool {
        rest.strip_prefix(self.thing.as_str()).and_then(|r| r.strip_prefix('/')).is_some_and(|r| !r.is_empty())
    }

    /// Whether this device may publish on `topic` (already a valid topic name): below its
    /// things prefix (as before commands), a response to one of its own command executions,
    /// or its own telemetry. A command request is the cloud's to publish, not a device's.
    fn may_publish(&self, topic: &str) -> bool {
        if let Some(rest) = topic.strip_prefix(&self.prefix) {
            return !rest.is_empty();
        }
        match topics::parse_command(topic) {
            Some((thing, _, kind)) => thing == self.thing.as_str() && kind == topics::CommandTopic::Response,
            None => topics::parse_telemetry(topic) == Some(self.thing.as_str()),
        }
    }

    /// A publish from the device: to the cloud side if it is under the device's own topics.
    async fn device_publish(&mut self, publish: Publish, shared: &Shared) -> Result<Option<End>, String> {
        if publish.qos == QoS::ExactlyOnce {
            return Err(format!("QoS 2 publish on {:?} (QoS 0 and 1 only)", publish.topic));
        }
        if !valid_topic(&publish.topic) || !self.may_publish(&publish.topic) {
            // AWS IoT Core closes the connection of a device that publishes where its policy
            // does not allow; the message goes nowhere.
            log::warn!(
                "device {} ({}) published to {:?}, outside its own topics: message dropped, connection closed",
                self.client_id,
                self.thing,
                publish.topic,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_for_loopback_unless_enabled() {
        assert!(passwords_offered(true, false).is_ok());
        assert!(passwords_offered(true, true).is_ok());
        assert!(passwords_offered(false, true).is_ok());
        assert!(matches!(passwords_offered(false, false), Err(AuthError::NotAuthorized(_))));
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(!mapped.is_loopback() && mapped.to_canonical().is_loopback(), "why the peer is canonicalised");
    }

    #[test]
    fn unauthenticated_sockets_give_way_oldest_first_and_authenticated_ones_never() {
        let limits = EndpointLimits { max_connections: 3, max_unauthenticated: 2, ..EndpointLimits::default() };
        let limiter = Arc::new(Limiter::new(limits));
        let mut a = limiter.admit().unwrap();
        let b = limiter.admit().unwrap();
        let c = limiter.admit().unwrap();
        assert!(a.evicted.is_cancelled(), "two unauthenticated at most: the oldest went");
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert!(!a.authenticate(), "an evicted socket cannot authenticate");
        drop(a);
        let mut c = c;
        assert!(c.authenticate());
        let d = limiter.admit().unwrap();
        // b, c (authenticated), d: three open; a fourth closes b, the oldest unauthenticated.
        let e = limiter.admit().unwrap();
        assert!(b.evicted.is_cancelled() && !d.evicted.is_cancelled() && !e.evicted.is_cancelled());
        drop((b, d, e));
        let mut slots: Vec<Slot> = (0..2).map(|_| limiter.admit().unwrap()).collect();
        assert!(slots.iter_mut().all(Slot::authenticate));
        assert!(limiter.admit().is_none(), "full of authenticated devices: refused");
        drop(slots.pop());
        assert!(limiter.admit().is_some(), "room again");
        drop(c);
    }
}
