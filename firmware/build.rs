use std::path::PathBuf;

fn main() {
    // Passes ESP-IDF's link arguments and configuration to rustc.
    embuild::espidf::sysenv::output();

    // The firmware-signing keys this build trusts: OTA_TRUSTED_KEYS names a file of
    // `PUBLIC KEY` PEM blocks (`ota keys export NAME >> trusted_keys.pem`). They are compiled
    // in, so only a signed update can change them. Unset: none built in (the device then
    // reads `ota/trusted_keys` from NVS, or checks digests only; see README).
    println!("cargo:rerun-if-env-changed=OTA_TRUSTED_KEYS");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("trusted_keys.pem");
    let keys = match std::env::var("OTA_TRUSTED_KEYS") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("OTA_TRUSTED_KEYS={path}: {e}"))
        }
        Err(_) => String::new(),
    };
    std::fs::write(&out, keys).expect("writing trusted_keys.pem");
}
