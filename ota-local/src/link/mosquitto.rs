//! The files that make mosquitto enforce what the embedded endpoint enforces by itself: a
//! password file (one derived password per device, plus the cloud's user) and an ACL that
//! lets each device use only `$aws/things/{its name}/#`. `ota devices provision` writes them.
//!
//! The password file uses mosquitto's own hashed format, `user:$7$iterations$salt$hash`
//! (PBKDF2-HMAC-SHA512, 101 iterations, a 12-byte salt, base64), exactly what
//! `mosquitto_passwd` writes, so mosquitto 2 reads it without any tool of its own.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use ota_core::names::ThingName;
use sha2::Sha512;

use super::DeviceCredentials;

/// mosquitto_passwd's iteration count for `$7$` hashes.
const ITERATIONS: u32 = 101;
/// mosquitto_passwd's salt length.
const SALT_LEN: usize = 12;

/// Where [`write_mosquitto_files`] put the files; point mosquitto's `password_file` and
/// `acl_file` at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoFiles {
    /// `mosquitto.passwd`: one hashed password per device and one for the cloud user.
    pub password_file: PathBuf,
    /// `mosquitto.acl`: each device only under its own topics, the cloud under every thing's.
    pub acl_file: PathBuf,
}

/// Writes `mosquitto.passwd` and `mosquitto.acl` into `dir` (created if needed; existing
/// files are replaced whole, never left half-written). Each thing's password is its
/// [`DeviceCredentials::password_for`]; `cloud_user` / `cloud_password` is the account the
/// server connects with ([`super::external`]) and may read and write every thing's topics.
///
/// Refuses (InvalidInput, nothing written) a cloud user that is empty, holds `:` or white
/// space, or is also a thing's name; a thing name with `:` (mosquitto splits user from hash
/// at the first `:`); and a cloud password that is empty or holds a line break.
pub fn write_mosquitto_files(
    dir: &Path,
    creds: &DeviceCredentials,
    things: &[ThingName],
    cloud_user: &str,
    cloud_password: &str,
) -> io::Result<MosquittoFiles> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if cloud_user.is_empty() || cloud_user.contains(':') || cloud_user.chars().any(char::is_whitespace) {
        return Err(invalid(format!("the cloud user {cloud_user:?} must be non-empty, without ':' or spaces")));
    }
    if cloud_password.is_empty() || cloud_password.contains(['\n', '\r']) {
        return Err(invalid("the cloud password must be non-empty and on one line".into()));
    }
    if let Some(t) = things.iter().find(|t| t.as_str().contains(':')) {
        return Err(invalid(format!(
            "the thing name {t} holds ':', which mosquitto's password file cannot carry in a user name"
        )));
    }
    if things.iter().any(|t| t.as_str() == cloud_user) {
        return Err(invalid(format!("the cloud user {cloud_user:?} is also a thing's name; pick another")));
    }

    let mut passwd = String::new();
    let mut seen = HashSet::new();
    for thing in things.iter().filter(|t| seen.insert(t.as_str())) {
        passwd.push_str(&mosquitto_password_line(thing.as_str(), &creds.password_for(thing))?);
        passwd.push('\n');
    }
    passwd.push_str(&mosquitto_password_line(cloud_user, cloud_password)?);
    passwd.push('\n');

    let mut acl = String::new();
    acl.push_str("# Written by ota. Every device (its user name is its thing name) may use only its own topics.\n");
    acl.push_str("pattern readwrite $aws/things/%u/#\n");
    acl.push_str("# Its own command executions (requests in, responses out) and its own telemetry.\n");
    acl.push_str("pattern read $aws/commands/things/%u/executions/#\n");
    acl.push_str("pattern write $aws/commands/things/%u/executions/+/response/json\n");
    acl.push_str("pattern write dt/ota/%u/telemetry\n\n");
    acl.push_str("# The ota server serves every device.\n");
    let _ = writeln!(acl, "user {cloud_user}");
    acl.push_str("topic readwrite $aws/things/#\n");
    acl.push_str("topic readwrite $aws/commands/things/#\n");
    acl.push_str("topic read dt/ota/#\n");

    std::fs::create_dir_all(dir)?;
    let files = MosquittoFiles { password_file: dir.join("mosquitto.passwd"), acl_file: dir.join("mosquitto.acl") };
    replace_file(&files.password_file, passwd.as_bytes())?;
    replace_file(&files.acl_file, acl.as_bytes())?;
    Ok(files)
}

/// One line of a mosquitto password file, without the line break, with a fresh random salt:
/// `user:$7$101$<salt>$<hash>`.
pub fn mosquitto_password_line(user: &str, password: &str) -> io::Result<String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| io::Error::other(format!("no randomness for a password salt: {e}")))?;
    Ok(password_line_with_salt(user, password, &salt))
}

fn password_line_with_salt(user: &str, password: &str, salt: &[u8]) -> String {
    let hash = pbkdf2_hmac_sha512(password.as_bytes(), salt, ITERATIONS);
    format!("{user}:$7${ITERATIONS}${}${}", BASE64.encode(salt), BASE64.encode(hash))
}

/// PBKDF2 (RFC 8018) with HMAC-SHA512, for a 64-byte key: one block, so no block counter
/// beyond 1.
fn pbkdf2_hmac_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let prf = <Hmac<Sha512> as KeyInit>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    let mut key = [0u8; 64];
    key.copy_from_slice(&u);
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        key.iter_mut().zip(u.iter()).for_each(|(k, b)| *k ^= b);
    }
    key
}

/// Writes `contents` to a sibling temporary file (owner-only on unix: these are secrets)
/// and renames it over `path`, so mosquitto never reads half a file.
fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        use std::io::Write;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_sha512_vector() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1, 64), as Python's hashlib computes it.
        let key = pbkdf2_hmac_sha512(b"password", b"salt", 1);
        assert_eq!(
            hex::encode(key),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn the_line_is_what_mosquitto_passwd_writes() {
        // `mosquitto_passwd -b -c pw.txt pet_feeder-01 s3cret-pass` (mosquitto 2.0.11) wrote:
        let expected = "pet_feeder-01:$7$101$kdZqMCBKjMSOALRi$3p/02Al9Yh5Scmo9QYeJ2OWWLDs4NVWjg7tSDmofV0qO\
                        zdAEngbWasCOJcmzhPdWovgY7GdxRSP9btfUB61TDg==";
        let salt = BASE64.decode("kdZqMCBKjMSOALRi").unwrap();
        assert_eq!(password_line_with_salt("pet_feeder-01", "s3cret-pass", &salt), expected);
    }

    #[test]
    fn files_hold_every_device_once_and_the_cloud_user() {
        let dir = tempfile::tempdir().unwrap();
        let creds = DeviceCredentials::from_secret([3; 32]);
        let things: Vec<ThingName> = ["a-1", "b-2", "a-1"].iter().map(|s| ThingName::parse(s).unwrap()).collect();
        let files = write_mosquitto_files(dir.path(), &creds, &things, "ota-cloud", "pw").unwrap();
        let passwd = std::fs::read_to_string(&files.password_file).unwrap();
        let users: Vec<&str> = passwd.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(users, ["a-1", "b-2", "ota-cloud"]);
        assert!(passwd.lines().all(|l| l.split_once(':').unwrap().1.starts_with("$7$101$")));
        let acl = std::fs::read_to_string(&files.acl_file).unwrap();
        assert!(acl.contains("pattern readwrite $aws/things/%u/#\n"), "{acl}");
        assert!(acl.contains("pattern write dt/ota/%u/telemetry\n"), "{acl}");
        assert!(acl.contains("pattern read $aws/commands/things/%u/executions/#\n"), "{acl}");
        assert!(acl.contains("user ota-cloud\ntopic readwrite $aws/things/#\n"), "{acl}");
    }

    #[test]
    fn bad_names_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let creds = DeviceCredentials::from_secret([3; 32]);
        let colon = [ThingName::parse("a:1").unwrap()];
        let plain = [ThingName::parse("a-1").unwrap()];
        for (things, user, pass) in [
            (&colon[..], "cloud", "pw"),
            (&plain[..], "", "pw"),
            (&plain[..], "clo ud", "pw"),
            (&plain[..], "a-1", "pw"),
            (&plain[..], "cloud", ""),
            (&plain[..], "cloud", "p\nw"),
        ] {
            let err = write_mosquitto_files(dir.path(), &creds, things, user, pass).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{user:?} {pass:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
