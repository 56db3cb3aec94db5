//! The data dir's 32-byte secrets (the device-password secret, the download signing key, the
//! local API token), each kept as 64 hex digits in an owner-only file and created on first use.

use std::io::{self, Write};
use std::path::Path;

/// Reads the secret in `<data_dir>/<file>`, or creates it (32 random bytes as hex, mode 0600 on
/// unix) when the file does not exist. Two processes starting at once end up with the same
/// secret: the file appears whole and is never overwritten. A file that is not 64 hex digits
/// is an error and is left alone, never replaced: what hangs on the secret (device passwords,
/// links handed out) would silently break. `what` names the secret in messages.
pub fn load_or_create_secret(data_dir: &Path, file: &str, what: &str) -> io::Result<[u8; 32]> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => return parse(&path, &text, what),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(format!("no randomness for the {what}: {e}")))?;
    // Written whole under a private name, then linked into place: hard_link never replaces an
    // existing file, so a concurrent creator's secret wins and both read the same.
    let tmp = data_dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let written = write_private(&tmp, format!("{}\n", hex::encode(secret)).as_bytes());
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => parse(&path, &std::fs::read_to_string(&path)?, what),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))),
    }
}

fn parse(path: &Path, text: &str, what: &str) -> io::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} must hold 64 hex digits (the {what}, as 64 hex characters); it does not", path.display()),
        )
    })?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
