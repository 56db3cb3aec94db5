//! Firmware signing keys in the data dir, and the trust `settings.json` places in them:
//! `ota keys generate|list|export|revoke`, and loading a key for `ota firmware sign` and
//! `ota firmware publish --sign`.
//!
//! A key named NAME is two files in `<data-dir>/keys/` (a folder only its owner may enter,
//! 0700): `NAME.key`, the P-256 private key as PKCS#8 PEM, owner-only (0600) and never
//! printed; and `NAME.pub`, its public key PEM. Trust is not a property of a key file but of
//! the settings: `signing.trusted_keys` lists the public keys that may sign, and
//! `signing.revoked_keys` the key ids refused even when also trusted. Every refusal here
//! (an unknown name, a key file others can read, a revoked key, a name taken) is an error
//! that changes nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use ota_core::service::{Settings, SigningSettings, TrustedKeySetting};
use ota_core::signing::{KeyId, LocalSigningKey, TrustedKey};
use ota_core::{Error, Result};
use serde::Serialize;

use crate::render::Output;
use crate::table::Table;

/// `ota keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a P-256 signing key: `keys/NAME.key` (private, owner-only, never printed) and
    /// `keys/NAME.pub` in the data dir. With --trust, also add it to settings.json's
    /// `signing.trusted_keys`.
    Generate {
        /// Letters, digits, `-` and `_`, at most 64.
        name: String,
        /// Trust the new key: images it signs may be deployed.
        #[arg(long)]
        trust: bool,
    },
    /// Every key the data dir holds or the settings name: its key id, whether it is trusted
    /// or revoked, and whether its private key is here.
    List,
    /// Print a key's public key (PEM), for devices and other servers to trust. Never the
    /// private key.
    Export { name: String },
    /// Add a key to `signing.revoked_keys`: images it signed are refused from now on, even
    /// while it is also trusted. By name (a key here or a trusted key's name) or key id.
    Revoke {
        /// A key name or a 32-hex-digit key id.
        key: String,
    },
}

/// The folder of the data dir's keys.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("key name", name, "use letters, digits, - and _ (at most 64, not starting with -)"))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::storage(format!("cannot {what} {}: {e}", path.display()))
}

/// Group or other permission bits on a secret's file or folder: refused, like ssh does.
#[cfg(unix)]
fn check_private(path: &Path, what: &'static str, fix: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| io_error("read", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::invalid(
            what,
            path.display().to_string(),
            format!("its permissions are {mode:o}, so others may read it; run `chmod {fix} {}`", path.display()),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &'static str, _: &str) -> Result<()> {
    Ok(())
}

/// The signing key `name` of the data dir. Refused when its file is missing, unreadable,
/// readable by others, or not a P-256 PKCS#8 key.
pub fn load(data_dir: &Path, name: &str) -> Result<LocalSigningKey> {
    check_name(name)?;
    let path = keys_dir(data_dir).join(format!("{name}.key"));
    if !path.exists() {
        return Err(Error::not_found_hint(
            "signing key",
            name,
            format!("no {}; see `ota keys list`, or create it with `ota keys generate {name}`", path.display()),
        ));
    }
    check_private(&path, "signing key file", "600")?;
    let pem = std::fs::read_to_string(&path).map_err(|e| io_error("read", &path, e))?;
    LocalSigningKey::from_pkcs8_pem(&pem).map_err(|_| {
        Error::invalid("signing key file", path.display().to_string(), "not a P-256 PKCS#8 PEM private key")
    })
}

/// The signer `--sign KEY` / `--key KEY` names: `kms:KEY` for a key that never leaves AWS KMS
/// (a key id, ARN or `alias/NAME`; needs the `aws` feature), else a key of the data dir
/// ([`load`]).
pub async fn signer(data_dir: &Path, name: &str) -> Result<Box<dyn ota_core::signing::FirmwareSigner>> {
    match crate::aws::kms_key(name) {
        Some(key) => crate::aws::kms_signer(key).await,
        None => Ok(Box::new(load(data_dir, name)?)),
    }
}

/// A new random key.
pub fn random_key() -> Result<LocalSigningKey> {
    loop {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::storage(format!("no randomness for a signing key: {e}")))?;
        // Out-of-range scalars are astronomically rare: draw again.
        if let Some(key) = LocalSigningKey::from_bytes(&secret) {
            return Ok(key);
        }
    }
}

/// Creates `keys/` owner-only, or checks that it is.
fn ensure_keys_dir(data_dir: &Path) -> Result<PathBuf> {
    let dir = keys_dir(data_dir);
    if !dir.exists() {
        std::fs::create_dir_all(data_dir).map_err(|e| io_error("create", data_dir, e))?;
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        match b.create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", &dir, e)),
        }
    }
    check_private(&dir, "keys folder", "700")?;
    Ok(dir)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// What `ota keys generate` made.
#[derive(Debug, Serialize)]
pub struct Generated {
    pub name: String,
    pub key_id: KeyId,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub trusted: bool,
}

/// Generates key `name`; with `trust`, adds it to the settings' trusted keys. A name taken
/// or settings that do not load are refused before anything is written.
pub fn generate(data_dir: &Path, name: &str, trust: bool) -> Result<(Generated, LocalSigningKey)> {
    check_name(name)?;
    let dir = keys_dir(data_dir);
    let (key_path, pub_path) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    if key_path.exists() || pub_path.exists() {
        return Err(Error::AlreadyExists {
            what: "signing key",
            name: name.to_string(),
            hint: format!("{} exists; pick another name (keys are never overwritten)", key_path.display()),
        });
    }
    let key = random_key()?;
    let public = key.public_key_pem()?;
    // The settings as they will be, checked before any file is written.
    let new_settings = if trust {
        let mut edit = SettingsFile::read(data_dir)?;
        add_trusted(&mut edit.signing, name, &key)?;
        Some(edit.checked()?)
    } else {
        None
    };
    ensure_keys_dir(data_dir)?;
    let private = key.to_pkcs8_pem()?;
    write_new(&key_path, private.as_bytes(), 0o600).map_err(|e| io_error("write", &key_path, e))?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(io_error("write", &pub_path, e));
    }
    if let Some(s) = new_settings
        && let Err(e) = s.write()
    {
        let _ = std::fs::remove_file(&key_path);
        let _ = std::fs::remove_file(&pub_path);
        return Err(e);
    }
    Ok((
        Generated {
            name: name.to_string(),
            key_id: key.key_id(),
            private_key: key_path,
            public_key: pub_path,
            trusted: trust,
        },
        key,
    ))
}

fn add_trusted(signing: &mut SigningSettings, name: &str, key: &LocalSigningKey) -> Result<()> {
    let id = key.key_id();
    if signing.revoked_keys.contains(&id) {
        return Err(Error::invalid("signing key", name, format!("key {id} is revoked; it cannot be trusted again")));
    }
    if !signing.trusted_keys.iter().any(|k| k.key_id == id) {
        signing.trusted_keys.push(TrustedKeySetting {
            key_id: id,
            name: Some(name.to_string()),
            public_key: key.public_key_pem()?,
        });
    }
    Ok(())
}

/// `settings.json` edited as JSON, so that parts this code does not know stay as they are.
pub struct SettingsFile {
    path: PathBuf,
    json: serde_json::Value,
    pub signing: SigningSettings,
}

impl SettingsFile {
    /// The data dir's settings (the defaults when there is no file).
    pub fn read(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("settings.json");
        let json = match std::fs::read(&path) {
            Ok(bytes) => {
                // Must load as the service loads it.
                Settings::from_json(&bytes, &path.display().to_string())?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::invalid("settings", path.display().to_string(), e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                serde_json::to_value(Settings::default()).map_err(|e| Error::storage(e.to_string()))?
            }
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let signing = match json.get("signing") {
            Some(s) => serde_json::from_value(s.clone())
                .map_err(|e| Error::invalid("settings", path.display().to_string(), e.to_string()))?,
            None => SigningSettings::default(),
        };
        Ok(SettingsFile { path, json, signing })
    }

    /// The edited settings, validated as the service will load them.
    pub fn checked(mut self) -> Result<CheckedSettings> {
        let signing = serde_json::to_value(&self.signing).map_err(|e| Error::storage(e.to_string()))?;
        if let Some(obj) = self.json.as_object_mut() {
            obj.insert("signing".into(), signing);
        }
        let mut bytes = serde_json::to_vec_pretty(&self.json).map_err(|e| Error::storage(e.to_string()))?;
        bytes.push(b'\n');
        Settings::from_json(&bytes, &self.path.display().to_string())?;
        Ok(CheckedSettings { path: self.path, bytes })
    }
}

/// Settings that load, ready to be written.
pub struct CheckedSettings {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl CheckedSettings {
    /// Replaces settings.json whole (a temporary file renamed over it).
    pub fn write(self) -> Result<()> {
        let tmp = self.path.with_extension(format!("json.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&tmp, &self.bytes).map_err(|e| io_error("write", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error("replace", &self.path, e)
        })
    }
}

/// One row of `ota keys list`.
#[derive(Debug, Serialize)]
pub struct KeyRow {
    pub name: Option<String>,
    pub key_id: KeyId,
    pub trusted: bool,
    pub revoked: bool,
    /// Whether the private key is in this data dir (so this data dir can sign with it).
    pub private_key: bool,
}

/// The keys of the data dir and the settings, by name then key id.
pub fn list(data_dir: &Path) -> Result<Vec<KeyRow>> {
    let settings = SettingsFile::read(data_dir)?.signing;
    let mut rows: Vec<KeyRow> = Vec::new();
    let dir = keys_dir(data_dir);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter_map(|f| f.strip_suffix(".pub").map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("read", &dir, e)),
    };
    names.sort();
    for name in names {
        let path = dir.join(format!("{name}.pub"));
        let pem = std::fs::read_to_string(&path).map_err(|e| io_error("read", &path, e))?;
        let Ok(key) = TrustedKey::from_pem(&pem) else {
            continue;
        };
        rows.push(KeyRow {
            name: Some(name.clone()),
            key_id: key.id,
            trusted: settings.trusted_keys.iter().any(|k| k.key_id == key.id),
            revoked: settings.revoked_keys.contains(&key.id),
            private_key: dir.join(format!("{name}.key")).exists(),
        });
    }
    for k in &settings.trusted_keys {
        if !rows.iter().any(|r| r.key_id == k.key_id) {
            rows.push(KeyRow {
                name: k.name.clone(),
                key_id: k.key_id,
                trusted: true,
                revoked: settings.revoked_keys.contains(&k.key_id),
                private_key: false,
            });
        }
    }
    for id in &settings.revoked_keys {
        if !rows.iter().any(|r| r.key_id == *id) {
            rows.push(KeyRow { name: None, key_id: *id, trusted: false, revoked: true, private_key: false });
        }
    }
    Ok(rows)
}

/// The public key PEM of key `name` (a key file here, or a trusted key's name).
pub fn export(data_dir: &Path, name: &str) -> Result<String> {
    check_name(name)?;
    let path = keys_dir(data_dir).join(format!("{name}.pub"));
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            TrustedKey::from_pem(&pem).map_err(|_| {
                Error::invalid("public key file", path.display().to_string(), "not a P-256 public key PEM")
            })?;
            return Ok(pem);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("read", &path, e)),
    }
    let settings = SettingsFile::read(data_dir)?.signing;
    settings
        .trusted_keys
        .iter()
        .find(|k| k.name.as_deref() == Some(name))
        .map(|k| k.public_key.clone())
        .ok_or_else(|| Error::not_found_hint("signing key", name, "see `ota keys list`"))
}

/// The key id `key` names: a key id itself, a key file here, or a trusted key's name.
fn resolve(data_dir: &Path, settings: &SigningSettings, key: &str) -> Result<KeyId> {
    if key.len() == 32
        && let Ok(id) = KeyId::parse_hex(key)
    {
        return Ok(id);
    }
    check_name(key).map_err(|_| Error::invalid("key", key, "expected a key name or a 32-hex-digit key id"))?;
    let path = keys_dir(data_dir).join(format!("{key}.pub"));
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return TrustedKey::from_pem(&pem)
            .map(|k| k.id)
            .map_err(|_| Error::invalid("public key file", path.display().to_string(), "not a P-256 public key PEM"));
    }
    settings
        .trusted_keys
        .iter()
        .find(|k| k.name.as_deref() == Some(key))
        .map(|k| k.key_id)
        .ok_or_else(|| Error::not_found_hint("signing key", key, "see `ota keys list`"))
}

/// Adds `key` to the revoked keys; true when it was not revoked before.
pub fn revoke(data_dir: &Path, key: &str) -> Result<(KeyId, bool)> {
    let mut edit = SettingsFile::read(data_dir)?;
    let id = resolve(data_dir, &edit.signing, key)?;
    if edit.signing.revoked_keys.contains(&id) {
        return Ok((id, false));
    }
    edit.signing.revoked_keys.push(id);
    edit.checked()?.write()?;
    Ok((id, true))
}

/// Runs `ota keys …`. `local` is false with `--backend aws`, whose trust lives in
/// `OTA_SETTINGS`: commands that change trust are refused there.
pub fn run(data_dir: &Path, command: KeysCommand, out: &Output, local: bool) -> Result<()> {
    let aws_refusal = || {
        Error::invalid(
            "backend",
            "aws",
            "on AWS, trust is OTA_SETTINGS' signing section: add the key (`ota keys export`) to signing.trusted_keys or signing.revoked_keys there",
        )
    };
    match command {
        KeysCommand::Generate { name, trust } => {
            if trust && !local {
                return Err(aws_refusal());
            }
            let (g, _) = generate(data_dir, &name, trust)?;
            if out.json {
                outln!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
            } else {
                outln!("generated signing key {} (key id {})", g.name, g.key_id);
                outln!("  private key: {} (owner-only; never share it)", g.private_key.display());
                outln!("  public key:  {}", g.public_key.display());
                if g.trusted {
                    outln!("  trusted: added to signing.trusted_keys in settings.json");
                } else {
                    outln!("  not trusted yet: images it signs are refused until it is in signing.trusted_keys");
                }
            }
        }
        KeysCommand::List => {
            let rows = list(data_dir)?;
            if out.json {
                outln!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
            } else {
                let mut t = Table::new(&["NAME", "KEY ID", "TRUST", "PRIVATE KEY"]);
                for r in rows {
                    let trust = match (r.trusted, r.revoked) {
                        (_, true) => "revoked",
                        (true, false) => "trusted",
                        (false, false) => "not trusted",
                    };
                    let private = if r.private_key { "here" } else { "-" };
                    t.row(vec![r.name.unwrap_or_else(|| "-".into()), r.key_id.to_hex(), trust.into(), private.into()]);
                }
                out!("{}", t.render());
            }
        }
        KeysCommand::Export { name } => {
            let pem = export(data_dir, &name)?;
            out!("{pem}");
        }
        KeysCommand::Revoke { key } => {
            if !local {
                return Err(aws_refusal());
            }
            let (id, changed) = revoke(data_dir, &key)?;
            if out.json {
                outln!("{}", serde_json::json!({ "key_id": id, "revoked": true, "changed": changed }));
            } else if changed {
                outln!("revoked key {id}: images it signed are refused from now on (restart `ota serve` to apply)");
            } else {
                outln!("key {id} was already revoked");
            }
        }
    }
    Ok(())
}

/// The name of the key `ota init` and `ota demo` create in a new data dir.
pub const DEFAULT_KEY: &str = "default";

/// The key `ota init` and `ota demo` sign with. A new data dir (no database, no
/// settings.json yet) gets one: key [`DEFAULT_KEY`], trusted, and `require_signed: true`. An
/// existing data dir keeps its settings (without a `signing` section it keeps working
/// unsigned); its [`DEFAULT_KEY`] signs when it exists and is trusted and not revoked.
pub fn default_signer(data_dir: &Path, new_data_dir: bool) -> Result<Option<LocalSigningKey>> {
    let key_path = keys_dir(data_dir).join(format!("{DEFAULT_KEY}.key"));
    if new_data_dir && !data_dir.join("settings.json").exists() && !key_path.exists() {
        let mut edit = SettingsFile::read(data_dir)?;
        edit.signing.require_signed = true;
        let key = random_key()?;
        add_trusted(&mut edit.signing, DEFAULT_KEY, &key)?;
        let checked = edit.checked()?;
        let dir = ensure_keys_dir(data_dir)?;
        let pub_path = dir.join(format!("{DEFAULT_KEY}.pub"));
        write_new(&key_path, key.to_pkcs8_pem()?.as_bytes(), 0o600).map_err(|e| io_error("write", &key_path, e))?;
        write_new(&pub_path, key.public_key_pem()?.as_bytes(), 0o644).map_err(|e| io_error("write", &pub_path, e))?;
        checked.write()?;
        return Ok(Some(key));
    }
    if !key_path.exists() {
        return Ok(None);
    }
    let key = load(data_dir, DEFAULT_KEY)?;
    let settings = SettingsFile::read(data_dir)?.signing;
    let usable = settings.trusted_keys.iter().any(|k| k.key_id == key.key_id())
        && !settings.revoked_keys.contains(&key.key_id());
    Ok(usable.then_some(key))
}

/// One version of `ota firmware list --for THING`.
#[derive(Debug, Serialize)]
pub struct MayRun {
    pub version: ota_core::version::FirmwareVersion,
    pub security_version: u32,
    /// The trusted key that signed it; `None`: unsigned or refused (see `signature`).
    pub signed_by: Option<KeyId>,
    /// `signed`, `unsigned` (allowed: signing is not required) or the refusal.
    pub signature: String,
    /// Whether the device may be updated or rolled back to it.
    pub allowed: bool,
    /// Why not, when it may not.
    pub reason: Option<String>,
    /// The version the device runs.
    pub running: bool,
}

/// What `ota firmware list --for THING` prints: the device, its floor, and per version of
/// its type whether it may run it.
#[derive(Debug, Serialize)]
pub struct ListFor {
    pub thing: ota_core::names::ThingName,
    pub device_type: ota_core::names::DeviceType,
    pub firmware_version: Option<ota_core::version::FirmwareVersion>,
    /// The security version of the firmware it runs: images below it are refused.
    pub security_floor: u32,
    pub versions: Vec<MayRun>,
}

/// `ota firmware list --for THING`: every version of the device's type with its security
/// version and signature, and whether the device may run it. The floor is the security
/// version of the firmware the device runs (as the service plans it); the signature is
/// checked as a start would (the image hashed, the signature verified).
pub async fn list_for(
    svc: &ota_core::service::FleetManager,
    me: &ota_core::auth::Caller,
    thing: &ota_core::names::ThingName,
    out: &Output,
) -> Result<()> {
    let device = svc.device(me, thing).await?;
    let floors = svc.security_versions(&device.device_type).await?;
    let floor = device.firmware_version.as_ref().and_then(|v| floors.get(v)).copied().unwrap_or(0);
    let reports = svc.verify_catalog(me, Some(&device.device_type)).await?;
    let mut versions = Vec::new();
    for r in reports {
        let version = r.artifact.version.clone();
        let security_version = floors.get(&version).copied().unwrap_or(0);
        let running = device.firmware_version.as_ref() == Some(&version);
        let (signed_by, signature, mut reason) = match (&r.verified, &r.error) {
            (Some(v), _) => {
                let s = if v.signed_by.is_some() { "signed" } else { "unsigned" };
                (v.signed_by, s.to_string(), None)
            }
            (None, e) => {
                let e = e.clone().unwrap_or_else(|| "cannot be verified".into());
                (None, "refused".to_string(), Some(e))
            }
        };
        if reason.is_none() && security_version < floor {
            reason =
                Some(format!("{thing} requires security version {floor} or higher; {version} has {security_version}"));
        }
        versions.push(MayRun {
            version,
            security_version,
            signed_by,
            signature,
            allowed: reason.is_none(),
            reason,
            running,
        });
    }
    let report = ListFor {
        thing: device.thing.clone(),
        device_type: device.device_type.clone(),
        firmware_version: device.firmware_version.clone(),
        security_floor: floor,
        versions,
    };
    if out.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    let running = report.firmware_version.as_ref().map_or("an unknown version".to_string(), ToString::to_string);
    outln!("{thing} ({}) runs {running}; security floor {floor}", report.device_type);
    let mut t = Table::new(&["VERSION", "SECURITY", "SIGNATURE", "MAY RUN", "WHY NOT"]);
    for v in &report.versions {
        let sig = match v.signed_by {
            Some(k) => format!("signed by {k}"),
            None => v.signature.clone(),
        };
        let may = if v.running {
            "running"
        } else if v.allowed {
            "yes"
        } else {
            "no"
        };
        t.row(vec![
            v.version.to_string(),
            v.security_version.to_string(),
            sig,
            may.into(),
            v.reason.clone().unwrap_or_default(),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}
