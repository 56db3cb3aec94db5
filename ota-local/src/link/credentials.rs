//! Per-device MQTT passwords derived from one secret, so the server stores one file instead
//! of a password per device and provisioning a new device needs no write:
//! `password(thing) = hex(HMAC-SHA256(secret, thing))`. The secret lives in
//! `<data_dir>/device-secret`, readable only by its owner.

use std::fmt;
use std::io;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use ota_core::names::ThingName;
use sha2::Sha256;

use super::{AuthError, Authenticator};

/// File name of the device secret inside the data directory.
pub const DEVICE_SECRET_FILE: &str = "device-secret";

type HmacSha256 = Hmac<Sha256>;

/// Per-device passwords derived from one secret: password(thing) = hex(HMAC-SHA256(secret, thing)).
#[derive(Clone)]
pub struct DeviceCredentials {
    secret: [u8; 32],
}

impl fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCredentials").field("secret", &"<redacted>").finish()
    }
}

impl DeviceCredentials {
    /// Reads `<data_dir>/device-secret`, or creates it (32 random bytes, hex; mode 0600 on
    /// unix) when it does not exist. Two processes starting at once end up with the same
    /// secret: the file appears whole and is never overwritten. A file that is not 64 hex
    /// digits is an error, never replaced: every device's password hangs on it.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Self> {
        crate::secret::load_or_create_secret(data_dir, DEVICE_SECRET_FILE, "32-byte device secret")
            .map(Self::from_secret)
    }

    /// Credentials from a secret held elsewhere (tests, or a secret manager).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        DeviceCredentials { secret }
    }

    /// The MQTT password of `thing`: 64 lowercase hex digits.
    pub fn password_for(&self, thing: &ThingName) -> String {
        hex::encode(self.mac(thing).finalize().into_bytes())
    }

    fn mac(&self, thing: &ThingName) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(thing.as_str().as_bytes());
        mac
    }
}

impl Authenticator for DeviceCredentials {
    /// The client id must be a thing name, the username the same name, and the password that
    /// thing's derived password (compared in constant time).
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<ThingName, AuthError> {
        let thing = ThingName::parse(client_id)
            .map_err(|e| AuthError::NotAuthorized(format!("the client id must be the thing name: {e}")))?;
        let (Some(username), Some(password)) = (username, password) else {
            return Err(AuthError::BadCredentials);
        };
        if username != client_id {
            return Err(AuthError::NotAuthorized(format!(
                "user {username:?} may not connect as client {client_id:?}: they must be the same thing name"
            )));
        }
        let mut given = [0u8; 32];
        if hex::decode_to_slice(password, &mut given).is_err() {
            return Err(AuthError::BadCredentials);
        }
        // verify_slice compares in constant time.
        self.mac(&thing).verify_slice(&given).map_err(|_| AuthError::BadCredentials)?;
        Ok(thing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(s: &str) -> ThingName {
        ThingName::parse(s).unwrap()
    }

    #[test]
    fn the_password_is_the_hex_hmac_of_the_thing_name() {
        let a = DeviceCredentials::from_secret([7; 32]);
        let b = DeviceCredentials::from_secret([8; 32]);
        let p = a.password_for(&thing("pet_feeder-01"));
        // Python: hmac.new(bytes([7] * 32), b"pet_feeder-01", hashlib.sha256).hexdigest()
        assert_eq!(p, "f3eb79e748efc336026e91fb6b59ffcb12d242a01a700570c6c578d62ba00089");
        assert_eq!(p.len(), 64);
        assert!(p.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(p, a.password_for(&thing("pet_feeder-01")));
        assert_ne!(p, a.password_for(&thing("pet_feeder-02")));
        assert_ne!(p, b.password_for(&thing("pet_feeder-01")));
    }

    #[test]
    fn authentication_wants_the_thing_name_twice_and_its_password() {
        let creds = DeviceCredentials::from_secret([1; 32]);
        let good = creds.password_for(&thing("dev-1"));
        let ok = creds.authenticate("dev-1", Some("dev-1"), Some(good.as_bytes()));
        assert_eq!(ok, Ok(thing("dev-1")));
        let upper = good.to_uppercase();
        assert_eq!(creds.authenticate("dev-1", Some("dev-1"), Some(upper.as_bytes())), Ok(thing("dev-1")));
        let other = creds.password_for(&thing("dev-2"));
        assert_eq!(creds.authenticate("dev-1", Some("dev-1"), Some(other.as_bytes())), Err(AuthError::BadCredentials));
        assert_eq!(creds.authenticate("dev-1", Some("dev-1"), Some(b"short")), Err(AuthError::BadCredentials));
        assert_eq!(creds.authenticate("dev-1", Some("dev-1"), None), Err(AuthError::BadCredentials));
        assert_eq!(creds.authenticate("dev-1", None, Some(good.as_bytes())), Err(AuthError::BadCredentials));
        assert!(matches!(
            creds.authenticate("dev-1", Some("dev-2"), Some(other.as_bytes())),
            Err(AuthError::NotAuthorized(_))
        ));
        assert!(matches!(creds.authenticate("a/b", Some("a/b"), Some(b"x")), Err(AuthError::NotAuthorized(_))));
    }

    #[test]
    fn the_secret_file_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeviceCredentials::load_or_create(dir.path()).unwrap();
        let b = DeviceCredentials::load_or_create(dir.path()).unwrap();
        assert_eq!(a.password_for(&thing("x")), b.password_for(&thing("x")));
        let text = std::fs::read_to_string(dir.path().join(DEVICE_SECRET_FILE)).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEVICE_SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [DEVICE_SECRET_FILE], "no temporary file left behind");
    }

    #[test]
    fn a_damaged_secret_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEVICE_SECRET_FILE);
        std::fs::write(&path, "not hex\n").unwrap();
        let err = DeviceCredentials::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex\n");
    }
}
