//! embedded-svc MQTT over rumqttc's blocking client, for hosts: plain TCP to a broker such
//! as mosquitto or the local server's password port, or mutual TLS with a device certificate
//! (the local server's TLS port, AWS IoT Core), as the ESP32 does through ESP-IDF. TLS is
//! rustls on the ring provider, configured here: rumqttc's own `use-rustls` feature would
//! bring aws-lc-rs.

use std::sync::Arc;
use std::time::Duration;

use embedded_svc::mqtt::client::{
    Client, Connection, Details, ErrorType, Event, EventPayload, MessageId, Publish, QoS,
};
use rumqttc::{MqttOptions, Packet, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors of the rumqttc-backed client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt: {0}")]
pub struct MqttError(pub String);

/// Opens a session to `host:port` as `client_id` (the thing name on AWS), without
/// credentials, a 5 s keep-alive and a 200 ms pause between reconnects.
pub fn connect(client_id: &str, host: &str, port: u16) -> (HostMqttClient, HostMqttConnection) {
    connect_with(&ConnectOptions::new(client_id, host, port))
}

/// How [`connect_with`] opens a session. A broker that knows each device (mosquitto with a
/// password file, the local server's device endpoint) wants a username and a password; a
/// simulated fleet of hundreds wants a longer keep-alive and slower reconnects than a test.
#[derive(Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    /// Username and password, sent in CONNECT when set.
    pub credentials: Option<(String, String)>,
    /// At least one second (MQTT counts it in seconds).
    pub keep_alive: Duration,
    /// Pause after a failed connection attempt or a lost connection, so a broker that is
    /// down or refuses the credentials is not hammered.
    pub reconnect_delay: Duration,
    /// Mutual TLS ([`ConnectOptions::with_tls`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("ConnectOptions")
            .field("client_id", &self.client_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("keep_alive", &self.keep_alive)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ConnectOptions {
    /// No credentials, a 5 s keep-alive, 200 ms between reconnects (what [`connect`] uses).
    pub fn new(client_id: &str, host: &str, port: u16) -> Self {
        ConnectOptions {
            client_id: client_id.to_string(),
            host: host.to_string(),
            port,
            credentials: None,
            keep_alive: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(200),
            tls: None,
        }
    }

    /// The same, over mutual TLS: the server is trusted by `ca_pem` (the local server's
    /// `ca.pem`, or Amazon's root CA) and the device proves who it is with its certificate
    /// and key (`cert.pem`, `key.pem`). `host` must be a name or an address in the server's
    /// certificate. Bad PEM is an error here, not at the first connection.
    pub fn with_tls(mut self, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, MqttError> {
        self.tls = Some(client_tls_config(ca_pem, cert_pem, key_pem)?);
        Ok(self)
    }

    /// The same, logging in as `username` with `password`.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_string(), password.to_string()));
        self
    }
}

/// Opens a session as [`ConnectOptions`] says. Nothing is sent until the connection half is
/// driven (`ota_device::pump_mqtt`).
pub fn connect_with(opts: &ConnectOptions) -> (HostMqttClient, HostMqttConnection) {
    let mut options = MqttOptions::new(opts.client_id.as_str(), opts.host.as_str(), opts.port);
    options.set_keep_alive(opts.keep_alive.max(Duration::from_secs(1)));
    options.set_clean_session(true);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some((username, password)) = &opts.credentials {
        options.set_credentials(username.as_str(), password.as_str());
    }
    if let Some(tls) = &opts.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    let (client, connection) = rumqttc::Client::new(options, 64);
    let connection =
        HostMqttConnection { connection, connected: false, reconnect_delay: opts.reconnect_delay, last_error: None };
    (HostMqttClient(client), connection)
}

/// A rustls client configuration on the ring provider: trusts the certificates in `ca_pem`
/// and authenticates with the first certificate of `cert_pem` (followed by any intermediates)
/// and the private key in `key_pem` (PKCS#8, SEC1 or PKCS#1).
pub fn client_tls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| MqttError(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA file is not PEM", &e))?;
        roots.add(cert).map_err(|e| bad("the CA certificate cannot be trusted", &e))?;
    }
    if roots.is_empty() {
        return Err(MqttError("the CA file holds no certificate".into()));
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the device certificate file is not PEM", &e))?;
    if chain.is_empty() {
        return Err(MqttError("the device certificate file holds no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("the device key file holds no key", &e))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("the device certificate and key do not go together", &e))?;
    Ok(Arc::new(config))
}

fn qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// The publishing half.
#[derive(Clone)]
pub struct HostMqttClient(rumqttc::Client);

impl std::fmt::Debug for HostMqttClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostMqttClient")
    }
}

impl HostMqttClient {
    /// Ends the session: sends DISCONNECT after whatever is already queued, and the
    /// connection half then returns an error from `next`, so its pump ends. What a device
    /// does just before it restarts.
    pub fn disconnect(&self) -> Result<(), MqttError> {
        self.0.disconnect().map_err(|e| MqttError(e.to_string()))
    }
}

impl ErrorType for HostMqttClient {
    type Error = MqttError;
}

impl Client for HostMqttClient {
    fn subscribe<'a>(&'a mut self, topic: &'a str, q: QoS) -> Result<MessageId, MqttError> {
        self.0.subscribe(topic, qos(q)).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }

    fn unsubscribe<'a>(&'a mut self, topic: &'a str) -> Result<MessageId, MqttError> {
        self.0.unsubscribe(topic).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }
}

impl Publish for HostMqttClient {
    fn publish<'a>(
        &'a mut self,
        topic: &'a str,
        q: QoS,
        retain: bool,
        payload: &'a [u8],
    ) -> Result<MessageId, MqttError> {
        self.0.publish(topic, qos(q), retain, payload.to_vec()).map_err(|e| MqttError(e.to_string()))?;
        Ok(0)
    }
}

/// The event half; drive it with `ota_device::pump_mqtt` on its own thread.
pub struct HostMqttConnection {
    connection: rumqttc::Connection,
    connected: bool,
    reconnect_delay: Duration,
    last_error: Option<String>,
}

impl HostMqttConnection {
    /// Why the last connection attempt failed or the last session ended (a refused CONNECT,
    /// a TLS handshake the server rejected, a closed socket); `None` once a session is up.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

impl std::fmt::Debug for HostMqttConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMqttConnection").field("connected", &self.connected).finish()
    }
}

/// One event, owning its data.
#[derive(Debug)]
pub enum HostMqttEvent {
    Connected(bool),
    Disconnected,
    Received { topic: String, data: Vec<u8> },
}

impl ErrorType for HostMqttEvent {
    type Error = MqttError;
}

impl Event for HostMqttEvent {
    fn payload(&self) -> EventPayload<'_, MqttError> {
        match self {
            HostMqttEvent::Connected(session) => EventPayload::Connected(*session),
            HostMqttEvent::Disconnected => EventPayload::Disconnected,
            HostMqttEvent::Received { topic, data } => {
                EventPayload::Received { id: 0, topic: Some(topic), data, details: Details::Complete }
            }
        }
    }
}

impl ErrorType for HostMqttConnection {
    type Error = MqttError;
}

impl Connection for HostMqttConnection {
    type Event<'a> = HostMqttEvent;

    fn next(&mut self) -> Result<HostMqttEvent, MqttError> {
        loop {
            match self.connection.recv() {
                Ok(Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack)))) => {
                    self.connected = true;
                    self.last_error = None;
                    return Ok(HostMqttEvent::Connected(ack.session_present));
                }
                Ok(Ok(rumqttc::Event::Incoming(Packet::Publish(p)))) => {
                    return Ok(HostMqttEvent::Received { topic: p.topic, data: p.payload.to_vec() });
                }
                Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                    self.connected = false;
                    return Err(MqttError("disconnected by the client".into()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    // rumqttc reconnects on the next poll; pace it, and say so once per
                    // attempt so the pump notices a receiver that has gone away.
                    self.connected = false;
                    self.last_error = Some(e.to_string());
                    std::thread::sleep(self.reconnect_delay);
                    return Ok(HostMqttEvent::Disconnected);
                }
                Err(rumqttc::RecvError) => return Err(MqttError("the client is gone".into())),
            }
        }
    }
}
