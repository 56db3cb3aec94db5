//! The default build of `ota` has no AWS backend (the `aws` feature keeps the AWS SDK out of
//! the README's first run). Without the feature, `--backend aws` says how to get it and
//! changes nothing; CI must build with it, so that `aws.rs` runs against moto.
#![cfg(not(feature = "aws"))]

use std::process::Command;

#[test]
fn without_the_aws_feature_the_aws_backend_says_how_to_get_it() {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must build ota-cli with its `aws` feature (cargo test --workspace --features ota-cli/aws), or the AWS backend goes untested"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["--backend", "aws", "plan", "Update all pet_feeder devices to 3.0.0"])
        .env("OTA_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cargo install --path adapters/cli --features aws"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a refused backend writes nothing");
}

#[test]
fn without_the_aws_feature_enroll_and_revoke_on_aws_say_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    for args in [
        vec!["devices", "enroll", "pet_feeder-05", "--type", "pet_feeder", "--out", out_dir.to_str().unwrap()],
        vec!["devices", "revoke", "pet_feeder-05"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["--backend", "aws"])
            .args(&args)
            .env("OTA_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features aws"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}
