//! The local certificate authority of the device link, the way AWS IoT Core holds one
//! certificate per thing: devices connect to the embedded endpoint over MQTT with mutual TLS,
//! and a connection's identity is the thing name its certificate binds, never a claimed client
//! id. Everything lives in `<data_dir>/device-ca/`:
//!
//! - `ca.pem` (the CA certificate, what devices and the server trust) and `ca-key.pem` (its
//!   ECDSA P-256 key, owner-only). Created together on first use and never replaced: every
//!   enrolled device's certificate hangs on them.
//! - `certificates.json`: the certificates issued to devices (thing, serial, dates) and, for
//!   each, when it was revoked. It is the revocation list: a revoked certificate is refused
//!   at CONNECT and a connected one is dropped ([`Revocations`] follows the file live).
//!
//! Device certificates carry the thing name as their subject common name (no SANs, as AWS IoT
//! certificates), `clientAuth` only, and a random 128-bit serial. The server certificate is
//! issued at each start for the names the endpoint is reached by (`localhost`, `127.0.0.1` and
//! whatever the caller adds) and is not kept: devices trust the CA, not one server certificate.
//!
//! Two processes may share the data dir (`ota devices enroll` next to `ota serve`): the CA
//! appears whole (a directory renamed into place) and the ledger is rewritten by rename, so a
//! reader never sees half a file. Two enrollments at the very same moment could lose one
//! ledger entry (the certificate still works; it just cannot be revoked by name): enroll from
//! one place at a time.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Utc};
use ota_core::names::ThingName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The CA's folder inside the data directory.
pub const CA_DIR: &str = "device-ca";
/// The CA certificate (PEM), inside [`CA_DIR`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (PKCS#8 PEM, owner-only), inside [`CA_DIR`].
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The issued device certificates and their revocations (JSON), inside [`CA_DIR`].
pub const LEDGER_FILE: &str = "certificates.json";

/// Years a device certificate stays valid. Devices often have no clock at boot and the
/// embedded endpoint checks revocation, not age; AWS IoT's certificates run to 2049.
const DEVICE_YEARS: i32 = 20;
const CA_YEARS: i32 = 30;
const SERVER_YEARS: i32 = 10;

/// What a device needs to connect: the CA to trust the server by, and its own certificate and
/// key (the files `ota devices enroll` writes as `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Clone)]
pub struct DeviceBundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate's serial, as the ledger and the logs write it (lowercase hex).
    pub serial: String,
}

impl std::fmt::Debug for DeviceBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBundle").field("serial", &self.serial).field("key_pem", &"<redacted>").finish()
    }
}

/// The endpoint's own certificate and key, for MQTT over TLS and HTTPS downloads.
pub struct ServerIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity").field("certificates", &self.cert_chain.len()).finish_non_exhaustive()
    }
}

/// One issued device certificate, as `certificates.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub thing: String,
    /// Lowercase hex of the serial's bytes.
    pub serial: String,
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// When it was revoked; `None` while it is good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    certificates: Vec<IssuedCertificate>,
}

/// The data dir's device CA. See the module docs.
pub struct LocalCa {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    revocations: Revocations,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Reads `<data_dir>/device-ca/`, or creates it with a new CA (mode 0700, the key 0600)
    /// when it does not exist. A damaged CA is an error, never replaced.
    pub fn load_or_create(data_dir: &Path) -> io::Result<LocalCa> {
        let dir = data_dir.join(CA_DIR);
        if !dir.exists() {
            create_ca(data_dir, &dir)?;
        }
        let read = |file: &str| {
            let path = dir.join(file);
            fs::read_to_string(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
        };
        let ca_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(format!("{} is not a private key this CA can use: {e}", dir.join(CA_KEY_FILE).display()))
        })?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| invalid(format!("{} holds no certificate: {e}", dir.join(CA_CERT_FILE).display())))?;
        // The issuer is rebuilt from the same parameters (its name derives from its key), so
        // what it signs chains to ca.pem as long as the two files belong together: checked
        // here rather than on the first device that cannot connect.
        let cert = webpki::EndEntityCert::try_from(&ca_der)
            .map_err(|e| invalid(format!("{} is not a certificate: {e}", dir.join(CA_CERT_FILE).display())))?;
        if cert.subject_public_key_info().as_ref() != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(invalid(format!(
                "{} and {} do not belong together (the certificate is not this key's)",
                dir.join(CA_CERT_FILE).display(),
                dir.join(CA_KEY_FILE).display()
            )));
        }
        let params = ca_params(&key, Utc::now());
        let revocations = Revocations::new(dir.join(LEDGER_FILE));
        revocations.refresh()?;
        Ok(LocalCa { ca_pem, issuer: Issuer::new(params, key), dir, revocations })
    }

    /// The CA certificate (PEM): what devices trust the server by, and what the server trusts
    /// devices by.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, for a rustls root store.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("checked at load")
    }

    /// The folder holding the CA and its ledger.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a new certificate (and key) for `thing` and records it. Earlier certificates of
    /// the thing stay as they are (revoke them with [`LocalCa::revoke`]).
    pub fn issue_device(&self, thing: &ThingName) -> io::Result<DeviceBundle> {
        let mut bundles = self.issue_devices(std::slice::from_ref(thing))?;
        Ok(bundles.pop().expect("one bundle per thing"))
    }

    /// [`LocalCa::issue_device`] for several things at once, with one ledger write (a
    /// simulated fleet of thousands), in the order given.
    pub fn issue_devices(&self, things: &[ThingName]) -> io::Result<Vec<DeviceBundle>> {
        let now = Utc::now();
        let mut bundles = Vec::with_capacity(things.len());
        let mut records = Vec::with_capacity(things.len());
        for thing in things {
            let (bundle, record) = self.sign_device(thing, now)?;
            bundles.push(bundle);
            records.push(record);
        }
        // Recorded before the certificates are handed out: a certificate the ledger does not
        // know could not be revoked by name.
        self.update_ledger(|ledger| {
            ledger.certificates.extend(records);
            Ok(())
        })?;
        Ok(bundles)
    }

    fn sign_device(&self, thing: &ThingName, now: DateTime<Utc>) -> io::Result<(DeviceBundle, IssuedCertificate)> {
        let key = KeyPair::generate().map_err(|e| io::Error::other(format!("cannot make a device key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "ota device");
        name.push(DnType::CommonName, thing.as_str());
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_after = set_validity(&mut params, now, DEVICE_YEARS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| io::Error::other(format!("cannot sign {thing}'s certificate: {e}")))?;
        let serial = hex::encode(serial);
        let record = IssuedCertificate {
            thing: thing.to_string(),
            serial: serial.clone(),
            issued_at: now,
            not_after,
            revoked_at: None,
        };
        let bundle =
            DeviceBundle { ca_pem: self.ca_pem.clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial };
        Ok((bundle, record))
    }

    /// Revokes every certificate issued to `thing` that is not revoked yet; returns their
    /// serials (empty when all already were). A thing this CA never issued a certificate to
    /// is an error. Connected devices are dropped once the endpoint sees the change (at once
    /// in this process through [`Revocations::refresh`], within its poll interval from
    /// another).
    pub fn revoke(&self, thing: &ThingName) -> io::Result<Vec<String>> {
        let now = Utc::now();
        let revoked = self.update_ledger(|ledger| {
            let mine: Vec<&mut IssuedCertificate> =
                ledger.certificates.iter_mut().filter(|c| c.thing == thing.as_str()).collect();
            if mine.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{thing} has no certificate from this data dir's CA (enroll it first)"),
                ));
            }
            let mut revoked = Vec::new();
            for cert in mine.into_iter().filter(|c| c.revoked_at.is_none()) {
                cert.revoked_at = Some(now);
                revoked.push(cert.serial.clone());
            }
            Ok(revoked)
        })?;
        self.revocations.refresh()?;
        Ok(revoked)
    }

    /// Whether `thing` has certificates and all of them are revoked (it cannot connect until
    /// it is enrolled again).
    pub fn is_revoked(&self, thing: &ThingName) -> io::Result<bool> {
        let ledger = read_ledger(&self.dir.join(LEDGER_FILE))?;
        let mut mine = ledger.certificates.iter().filter(|c| c.thing == thing.as_str()).peekable();
        Ok(mine.peek().is_some() && mine.all(|c| c.revoked_at.is_some()))
    }

    /// Every certificate issued, oldest first.
    pub fn certificates(&self) -> io::Result<Vec<IssuedCertificate>> {
        Ok(read_ledger(&self.dir.join(LEDGER_FILE))?.certificates)
    }

    /// The live revocation list the endpoint checks (shared: every clone sees the same).
    pub fn revocations(&self) -> Revocations {
        self.revocations.clone()
    }

    /// A server certificate for the endpoint, valid for `localhost`, `127.0.0.1`, `::1` and
    /// each of `names` (host names or IP addresses), with a fresh key. Not kept on disk.
    pub fn issue_server(&self, names: &[String]) -> io::Result<ServerIdentity> {
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for name in names {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid(format!("{name:?} is neither a host name nor an IP address")));
            }
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        let mut params = CertificateParams::new(all.clone())
            .map_err(|e| invalid(format!("cannot use {all:?} as the server's names: {e}")))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ota");
        dn.push(DnType::CommonName, all.get(3).map_or("localhost", String::as_str));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        set_validity(&mut params, Utc::now(), SERVER_YEARS);
        let key = KeyPair::generate().map_err(|e| io::Error::other(format!("cannot make the server key: {e}")))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| io::Error::other(format!("cannot sign the server certificate: {e}")))?;
        let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(io::Error::other)?;
        Ok(ServerIdentity { cert_chain: vec![cert.der().clone(), self.ca_der()], key })
    }

    /// The rustls configuration of the device endpoint: this CA's server certificate for
    /// `names`, and a client certificate from this CA required of every device.
    pub fn device_tls(&self, names: &[String]) -> io::Result<DeviceTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).map_err(|e| invalid(format!("the CA certificate cannot be a root: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| io::Error::other(format!("cannot build the client verifier: {e}")))?;
        let identity = self.issue_server(names)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.cert_chain, identity.key)
            .map_err(|e| io::Error::other(format!("cannot use the server certificate: {e}")))?;
        Ok(DeviceTls { config: Arc::new(config), revocations: self.revocations() })
    }

    /// The rustls configuration for HTTPS downloads: the same server certificate as the
    /// device endpoint's, no client certificate (a download link is its own credential).
    pub fn https_config(&self, names: &[String]) -> io::Result<Arc<rustls::ServerConfig>> {
        let identity = self.issue_server(names)?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(identity.cert_chain, identity.key)
                .map_err(|e| io::Error::other(format!("cannot use the server certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn update_ledger<T>(&self, change: impl FnOnce(&mut Ledger) -> io::Result<T>) -> io::Result<T> {
        let path = self.dir.join(LEDGER_FILE);
        let mut ledger = read_ledger(&path)?;
        let out = change(&mut ledger)?;
        let json = serde_json::to_vec_pretty(&ledger).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!(".{LEDGER_FILE}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        write_private(&tmp, &json)?;
        fs::rename(&tmp, &path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
        Ok(out)
    }
}

/// The device endpoint's TLS: the rustls server configuration (client certificates required)
/// and the revocation list it checks at CONNECT and while devices are connected.
#[derive(Clone)]
pub struct DeviceTls {
    pub config: Arc<rustls::ServerConfig>,
    pub revocations: Revocations,
}

impl std::fmt::Debug for DeviceTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTls").field("revocations", &self.revocations).finish_non_exhaustive()
    }
}

/// The revoked certificate serials, as `certificates.json` says, followed live: call
/// [`Revocations::refresh`] (cheap when the file has not changed) and watch
/// [`Revocations::subscribe`] for changes. Clones share one state.
#[derive(Clone)]
pub struct Revocations(Arc<RevocationsInner>);

struct RevocationsInner {
    path: PathBuf,
    state: Mutex<RevocationState>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct RevocationState {
    stamp: Option<FileStamp>,
    serials: HashSet<String>,
}

/// What tells one version of the ledger from the next: it is replaced by rename, so a new
/// version has a new inode (and usually a new mtime and length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("path", &self.0.path).finish_non_exhaustive()
    }
}

impl Revocations {
    fn new(path: PathBuf) -> Self {
        Revocations(Arc::new(RevocationsInner {
            path,
            state: Mutex::new(RevocationState::default()),
            changed: watch::Sender::new(0),
        }))
    }

    /// A list that revokes nothing and follows no file (tests, or a CA held elsewhere).
    pub fn none() -> Self {
        Revocations::new(PathBuf::new())
    }

    /// Whether the certificate with this serial (its bytes) is revoked, as of the last refresh.
    pub fn is_revoked_serial(&self, serial: &[u8]) -> bool {
        self.lock().serials.contains(&hex::encode(serial))
    }

    /// Reads the ledger again if it changed on disk; true (and subscribers are told) when the
    /// set of revoked serials changed. A missing ledger revokes nothing; an unreadable one is
    /// an error and keeps the last good list.
    pub fn refresh(&self) -> io::Result<bool> {
        if self.0.path.as_os_str().is_empty() {
            return Ok(false);
        }
        let stamp = match fs::metadata(&self.0.path) {
            Ok(meta) => Some(FileStamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                #[cfg(unix)]
                inode: std::os::unix::fs::MetadataExt::ino(&meta),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if self.lock().stamp == stamp && stamp.is_some() {
            return Ok(false);
        }
        let serials: HashSet<String> = read_ledger(&self.0.path)?
            .certificates
            .into_iter()
            .filter(|c| c.revoked_at.is_some())
            .map(|c| c.serial)
            .collect();
        let changed = {
            let mut state = self.lock();
            state.stamp = stamp;
            let changed = state.serials != serials;
            state.serials = serials;
            changed
        };
        if changed {
            self.0.changed.send_modify(|v| *v += 1);
        }
        Ok(changed)
    }

    /// Changes whenever a refresh found new revocations.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RevocationState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who a verified device certificate says the device is: the thing name in its subject
/// common name, and its serial.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<(ThingName, Vec<u8>), String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let cn = common_name(parsed.subject()).ok_or("the certificate's subject has no common name")?;
    let thing =
        ThingName::parse(&cn).map_err(|e| format!("the certificate's common name {cn:?} is not a thing name: {e}"))?;
    Ok((thing, parsed.serial().to_vec()))
}

/// The (last) common name in the contents of a DER `Name` (a sequence of RDN sets).
fn common_name(name: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_tlv(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut attrs = set;
        while !attrs.is_empty() {
            let (tag, attr, rest) = der_tlv(attrs)?;
            attrs = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_tlv(attr)?;
            let (value_tag, value, _) = der_tlv(value)?;
            // UTF8String, PrintableString, IA5String.
            if oid_tag == 0x06 && oid == CN_OID && matches!(value_tag, 0x0c | 0x13 | 0x16) {
                found = Some(String::from_utf8(value.to_vec()).ok()?);
            }
        }
    }
    found
}

/// One DER tag-length-value: (tag, value, the rest). Short tags only, as in names.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The CA's parameters. Its name carries a digest of its key, so two data dirs' CAs never
/// share a name, and the issuer can be rebuilt from the key alone.
fn ca_params(key: &KeyPair, now: DateTime<Utc>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let digest = Sha256::digest(key.public_key_raw());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ota");
    dn.push(DnType::CommonName, format!("ota local device CA {}", hex::encode(&digest[..6])));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, now, CA_YEARS);
    params
}

fn create_ca(data_dir: &Path, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(data_dir)?;
    let key = KeyPair::generate().map_err(|e| io::Error::other(format!("cannot make the CA key: {e}")))?;
    let cert = ca_params(&key, Utc::now())
        .self_signed(&key)
        .map_err(|e| io::Error::other(format!("cannot make the CA certificate: {e}")))?;
    // Built whole under a private name, then renamed into place: a concurrent creator's CA
    // wins (rename onto a non-empty directory fails) and both use the same.
    let tmp = data_dir.join(format!(".{CA_DIR}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&tmp)?;
    let written = write_private(&tmp.join(CA_KEY_FILE), key.serialize_pem().as_bytes())
        .and_then(|()| write_private(&tmp.join(CA_CERT_FILE), cert.pem().as_bytes()));
    let renamed = written.and_then(|()| fs::rename(&tmp, dir));
    match renamed {
        Ok(()) => Ok(()),
        Err(_) if dir.join(CA_KEY_FILE).exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
        }
    }
}

fn read_ledger(path: &Path) -> io::Result<Ledger> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("{} is not a certificate ledger: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// 16 random bytes, positive and not zero as X.509 wants.
fn random_serial() -> io::Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| io::Error::other(format!("no randomness for a serial: {e}")))?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(serial)
}

/// Valid from a day before `now` (clocks disagree) to `years` later; returns the end.
fn set_validity(params: &mut CertificateParams, now: DateTime<Utc>, years: i32) -> DateTime<Utc> {
    let start = now - ChronoDuration::days(1);
    let end = now.with_year(now.year() + years).unwrap_or(now + ChronoDuration::days(365 * i64::from(years)));
    let ymd = |d: DateTime<Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    params.not_before = ymd(start);
    params.not_after = ymd(end);
    end
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(s: &str) -> ThingName {
        ThingName::parse(s).unwrap()
    }

    fn verify_as_client(ca: &LocalCa, cert_pem: &str) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        verifier.verify_client_cert(&cert, &[], rustls::pki_types::UnixTime::now()).map(drop).map_err(|e| e.to_string())
    }

    #[test]
    fn the_ca_is_created_once_owner_only_and_signs_device_certificates_naming_their_thing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.ca_pem(), again.ca_pem(), "the second load reads the same CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join(CA_DIR).join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&dir.path().join(CA_DIR)), 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [CA_DIR], "no temporary folder left behind");

        // Issued by the reloaded CA, trusted through the first one's certificate.
        let bundle = again.issue_device(&thing("pet_feeder-01")).unwrap();
        assert_eq!(bundle.ca_pem, ca.ca_pem());
        verify_as_client(&ca, &bundle.cert_pem).unwrap();
        let der = CertificateDer::from_pem_slice(bundle.cert_pem.as_bytes()).unwrap();
        let (name, serial) = identity_of(&der).unwrap();
        assert_eq!(name, thing("pet_feeder-01"));
        assert_eq!(hex::encode(&serial), bundle.serial);
        assert!(bundle.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{bundle:?}").contains("PRIVATE"), "the key stays out of Debug");

        // A certificate from another data dir's CA is not trusted.
        let other = tempfile::tempdir().unwrap();
        let stranger = LocalCa::load_or_create(other.path()).unwrap().issue_device(&thing("pet_feeder-01")).unwrap();
        assert!(verify_as_client(&ca, &stranger.cert_pem).is_err());
        assert_ne!(stranger.ca_pem, ca.ca_pem());
    }

    #[test]
    fn revoking_marks_every_certificate_of_the_thing_and_a_new_enrollment_is_good_again() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let err = ca.revoke(&thing("dev-1")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("dev-1 has no certificate"), "{err}");
        assert!(!ca.is_revoked(&thing("dev-1")).unwrap());

        let first = ca.issue_device(&thing("dev-1")).unwrap();
        let second = ca.issue_device(&thing("dev-1")).unwrap();
        let other = ca.issue_device(&thing("dev-2")).unwrap();
        let serial = |b: &DeviceBundle| hex::decode(&b.serial).unwrap();
        let live = ca.revocations();
        // A second instance (another process) follows the same file.
        let watcher = LocalCa::load_or_create(dir.path()).unwrap().revocations();
        let told = watcher.subscribe();
        assert!(!live.is_revoked_serial(&serial(&first)));

        let mut revoked = ca.revoke(&thing("dev-1")).unwrap();
        revoked.sort();
        let mut expected = vec![first.serial.clone(), second.serial.clone()];
        expected.sort();
        assert_eq!(revoked, expected);
        assert!(ca.is_revoked(&thing("dev-1")).unwrap());
        assert!(!ca.is_revoked(&thing("dev-2")).unwrap());
        assert!(live.is_revoked_serial(&serial(&first)) && live.is_revoked_serial(&serial(&second)));
        assert!(!live.is_revoked_serial(&serial(&other)));
        assert!(!watcher.is_revoked_serial(&serial(&first)), "not refreshed yet");
        assert!(watcher.refresh().unwrap());
        assert!(told.has_changed().unwrap());
        assert!(watcher.is_revoked_serial(&serial(&first)));
        assert!(!watcher.refresh().unwrap(), "nothing new");
        assert_eq!(ca.revoke(&thing("dev-1")).unwrap(), Vec::<String>::new(), "already revoked");

        let many = ca.issue_devices(&[thing("dev-3"), thing("dev-4")]).unwrap();
        assert_eq!(many.len(), 2);
        assert_ne!(many[0].serial, many[1].serial);
        let third = ca.issue_device(&thing("dev-1")).unwrap();
        assert!(!ca.is_revoked(&thing("dev-1")).unwrap());
        assert!(!live.is_revoked_serial(&serial(&third)));
        let ledger = ca.certificates().unwrap();
        assert_eq!(ledger.len(), 6);
        assert_eq!(ledger[3].thing, "dev-3");
        assert_eq!(ledger[4].thing, "dev-4");
        assert_eq!(ledger.iter().filter(|c| c.revoked_at.is_some()).count(), 2);
    }

    #[test]
    fn a_damaged_ca_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(CA_DIR).join(CA_KEY_FILE);
        let other = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(other.path()).unwrap();
        let foreign = fs::read_to_string(other.path().join(CA_DIR).join(CA_KEY_FILE)).unwrap();
        fs::remove_file(&key).unwrap();
        fs::write(&key, &foreign).unwrap();
        let err = LocalCa::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("do not belong together"), "{err}");
        fs::remove_file(&key).unwrap();
        fs::write(&key, "not a key").unwrap();
        let err = LocalCa::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(fs::read_to_string(&key).unwrap(), "not a key");
    }

    #[test]
    fn the_server_certificate_names_loopback_and_the_given_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let server = ca.issue_server(&["ota.lan".into(), "192.168.1.20".into()]).unwrap();
        let cert = webpki::EndEntityCert::try_from(&server.cert_chain[0]).unwrap();
        for name in ["localhost", "127.0.0.1", "ota.lan", "192.168.1.20"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            cert.verify_is_valid_for_subject_name(&name).unwrap();
        }
        assert!(cert.verify_is_valid_for_subject_name(&"other.lan".try_into().unwrap()).is_err());
        assert!(ca.issue_server(&["not a name!".into()]).is_err());
    }

    #[test]
    fn the_common_name_is_read_from_a_der_name() {
        // SET { SEQUENCE { OID 2.5.4.10, UTF8 "o" } }, SET { SEQUENCE { OID 2.5.4.3, UTF8 "dev" } }
        let name = [
            0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x01, b'o', 0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03,
            0x55, 0x04, 0x03, 0x0c, 0x03, b'd', b'e', b'v',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("dev"));
        assert_eq!(common_name(&name[..12]), None, "no CN");
        assert_eq!(common_name(&name[..20]), None, "truncated");
    }
}
