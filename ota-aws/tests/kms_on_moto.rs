//! The KMS firmware signer ([`ota_aws::kms::KmsSigner`]).
//!
//! On moto: keys are looked up by id, ARN and alias, the key id is the digest of the DER
//! public key KMS returns (so it matches `ota-core`'s rule for local keys), keys that cannot
//! sign firmware are refused with what they are, and KMS's DER signature verifies with
//! `KeyRing` as `firmware.sig`. moto (5.2.1 in CI, still 5.2.5) does not implement
//! `MessageType: DIGEST`: it hashes the digest again, as for `RAW`. Against such a server the
//! signer refuses the signature it gets back, naming the key; that is checked here too.
//!
//! What moto cannot show, the exact `Sign` request (the 32-byte digest, `DIGEST`,
//! `ECDSA_SHA_256`, the resolved ARN) and a signed publish through the service, is checked on
//! the requests themselves (aws-smithy-mocks) with a local P-256 key standing in for KMS.

mod moto;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_sdk_kms::Client as Kms;
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::operation::sign::SignOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use ota_aws::kms::KmsSigner;
use ota_core::Error;
use ota_core::auth::{Caller, Role};
use ota_core::catalog::{ArtifactRef, Sha256Digest};
use ota_core::names::DeviceType;
use ota_core::service::{FleetManager, PublishOptions, PublishRequest, Settings, SigningSettings, TrustedKeySetting};
use ota_core::signing::{FirmwareSignature, FirmwareSigner, KeyRing, LocalSigningKey, TrustedKey};
use ota_core::version::FirmwareVersion;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(data).into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn kms_on(server: &moto::Moto) -> Kms {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&server.url)
        .test_credentials()
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    Kms::new(&shared)
}

/// A new key on the server: (key id, ARN).
async fn create_key(kms: &Kms, spec: KeySpec, usage: KeyUsageType) -> (String, String) {
    let out = kms.create_key().key_spec(spec).key_usage(usage).send().await.expect("moto creates the key");
    let meta = out.key_metadata().expect("key metadata");
    (meta.key_id().to_string(), meta.arn().expect("an ARN").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p256_kms_key_signs_firmware_digests_on_moto() {
    let Some(server) = moto::start() else { return };
    let kms = kms_on(&server).await;
    let (key, arn) = create_key(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    kms.create_alias().alias_name("alias/ota-firmware").target_key_id(&key).send().await.unwrap();

    let signer = KmsSigner::connect(kms.clone(), &key).await.expect("a P-256 SIGN_VERIFY key");
    // AWS resolves to the ARN; moto answers the bare key id. Either names this one key.
    let resolved = signer.arn().to_string();
    assert!(resolved == arn || resolved == key, "{resolved}");
    for name in [arn.as_str(), "alias/ota-firmware"] {
        let again = KmsSigner::connect(kms.clone(), name).await.unwrap();
        assert_eq!((again.key_id(), again.arn()), (signer.key_id(), resolved.as_str()), "{name}");
    }

    // The key id is ota-core's rule over the DER KMS returns: the first 16 bytes of its SHA-256
    // (`aws kms get-public-key ... | base64 -d | sha256sum | cut -c1-32`).
    let public = kms.get_public_key().key_id(&key).send().await.unwrap();
    let der = public.public_key().unwrap().as_ref().to_vec();
    assert_eq!(signer.key_id().to_hex(), hex(&Sha256::digest(&der))[..32]);
    let from_pem = TrustedKey::from_pem(&signer.public_key_pem().unwrap()).unwrap();
    assert_eq!(from_pem, signer.trusted_key(), "the PEM for settings.json names the same key");

    // KMS's ECDSA_SHA_256 signature is a DER ECDSA signature: exactly firmware.sig. `RAW`
    // means "KMS hashes the message" on AWS and on moto alike, so this holds on both.
    let image = vec![0x5a; 64 * 1024];
    let digest = sha256(&image);
    let ring = KeyRing::new(vec![signer.trusted_key()], vec![]);
    let raw = kms
        .sign()
        .key_id(&key)
        .message(Blob::new(digest.0.to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    let kms_der = raw.signature().unwrap().as_ref();
    let as_sig = FirmwareSignature::from_der(signer.key_id(), kms_der);
    assert_eq!(ring.verify(&sha256(&digest.0), &as_sig), Ok(signer.key_id()), "KMS's DER verifies with KeyRing");
    assert_eq!(as_sig.der().as_deref(), Some(kms_der), "firmware.sig is the DER, byte for byte");
    // A different digest does not verify: the check above can fail.
    assert!(ring.verify(&digest, &as_sig).is_err());

    // The signer sends the digest as `DIGEST`. Where the server honours that (AWS), the result
    // verifies over the image's own digest; moto hashes it again, and the signer says so
    // rather than hand back a signature no device would accept.
    let honoured = moto_honours_digest(&kms, &key, &ring, &digest).await;
    match signer.sign(&digest).await {
        Ok(sig) => {
            assert!(honoured, "a signature came back although the server ignores DIGEST");
            assert_eq!(ring.verify(&digest, &sig), Ok(signer.key_id()));
        }
        Err(e) => {
            assert!(!honoured, "the server honours DIGEST, yet signing failed: {e}");
            let msg = e.to_string();
            assert!(msg.contains("does not verify") && msg.contains(&resolved), "{msg}");
        }
    }
}

/// Whether the server signs a `DIGEST` message as the digest itself (AWS) rather than hashing
/// it again (moto 5.2.x).
async fn moto_honours_digest(kms: &Kms, key: &str, ring: &KeyRing, digest: &Sha256Digest) -> bool {
    let out = kms
        .sign()
        .key_id(key)
        .message(Blob::new(digest.0.to_vec()))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    let id = ring.trusted()[0].id;
    let sig = FirmwareSignature::from_der(id, out.signature().unwrap().as_ref());
    let honoured = ring.verify(digest, &sig).is_ok();
    assert!(honoured || ring.verify(&sha256(&digest.0), &sig).is_ok(), "the signature verifies one way or the other");
    honoured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_sign_firmware_are_refused_on_moto() {
    let Some(server) = moto::start() else { return };
    let kms = kms_on(&server).await;
    for (spec, usage, says) in [
        (KeySpec::EccNistP384, KeyUsageType::SignVerify, "is ECC_NIST_P384 with usage SIGN_VERIFY"),
        (KeySpec::EccSecgP256K1, KeyUsageType::SignVerify, "is ECC_SECG_P256K1 with usage SIGN_VERIFY"),
        (KeySpec::Rsa2048, KeyUsageType::SignVerify, "is RSA_2048 with usage SIGN_VERIFY"),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt, "is RSA_2048 with usage ENCRYPT_DECRYPT"),
    ] {
        let (key, _) = create_key(&kms, spec.clone(), usage).await;
        let err = KmsSigner::connect(kms.clone(), &key).await.expect_err("refused");
        let msg = err.to_string();
        assert!(matches!(err, Error::Invalid { .. }), "{msg}");
        assert!(msg.contains(says) && msg.contains("ECC_NIST_P256") && msg.contains(&key), "{spec:?}: {msg}");
    }
    let missing = "11111111-2222-3333-4444-555555555555";
    let err = KmsSigner::connect(kms.clone(), missing).await.expect_err("no such key");
    assert!(matches!(err, Error::NotFound { .. }) && err.to_string().contains(missing), "{err}");
    let err = KmsSigner::connect(kms, " ").await.expect_err("no key named");
    assert!(err.to_string().contains("alias/NAME"), "{err}");
}

// ---- Request shapes (no moto): a local P-256 key plays KMS. ----

const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn public_der(key: &LocalSigningKey) -> Vec<u8> {
    let pem = key.public_key_pem().unwrap();
    p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap().to_public_key_der().unwrap().as_bytes().to_vec()
}

/// A KMS whose `alias/firmware` is `key`'s public half and whose `Sign` accepts only the
/// request the signer must send, answering with `answer`'s signature of the digest.
fn fake_kms(key: &LocalSigningKey, answer: LocalSigningKey) -> Kms {
    let der = public_der(key);
    let get =
        mock!(Kms::get_public_key).match_requests(|r| r.key_id() == Some("alias/firmware")).then_output(move || {
            GetPublicKeyOutput::builder()
                .key_id(ARN)
                .public_key(Blob::new(der.clone()))
                .key_spec(KeySpec::EccNistP256)
                .key_usage(KeyUsageType::SignVerify)
                .signing_algorithms(SigningAlgorithmSpec::EcdsaSha256)
                .build()
        });
    let sign = mock!(Kms::sign)
        .match_requests(|r| {
            r.key_id() == Some(ARN)
                && r.message().map(|m| m.as_ref().len()) == Some(32)
                && r.message_type() == Some(&MessageType::Digest)
                && r.signing_algorithm() == Some(&SigningAlgorithmSpec::EcdsaSha256)
        })
        .then_compute_output(move |r| {
            let digest = Sha256Digest(r.message().unwrap().as_ref().try_into().unwrap());
            let der = answer.sign_digest(&digest).unwrap().der().unwrap();
            SignOutput::builder()
                .key_id(ARN)
                .signature(Blob::new(der))
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .build()
        });
    mock_client!(aws_sdk_kms, RuleMode::MatchAny, &[&get, &sign])
}

fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}

fn request(version: &str, image: Vec<u8>) -> PublishRequest {
    PublishRequest {
        device_type: DeviceType::parse("pet_feeder").unwrap(),
        version: FirmwareVersion::parse(version).unwrap(),
        image,
        release_notes: String::new(),
        built_at: None,
        extra: Default::default(),
    }
}

#[tokio::test]
async fn the_signer_sends_the_digest_as_digest_and_a_signed_publish_verifies() {
    let stand_in = LocalSigningKey::from_bytes(&[7; 32]).unwrap();
    let signer = KmsSigner::connect(fake_kms(&stand_in, stand_in.clone()), "alias/firmware").await.unwrap();
    assert_eq!((signer.key_id(), signer.arn()), (stand_in.key_id(), ARN));
    assert!(format!("{signer:?}").contains(ARN));

    let image = vec![0xa5; 100_000];
    let digest = sha256(&image);
    let sig = signer.sign(&digest).await.unwrap();
    assert_eq!(sig, stand_in.sign_digest(&digest).unwrap(), "the DER KMS returned, under the key's id");

    // Through the service: signing required, the KMS key trusted by its id and PEM.
    let settings = Settings {
        signing: SigningSettings {
            require_signed: true,
            trusted_keys: vec![TrustedKeySetting {
                key_id: signer.key_id(),
                name: Some("kms".into()),
                public_key: signer.public_key_pem().unwrap(),
            }],
            revoked_keys: vec![],
        },
        ..Settings::default()
    };
    let backend = ota_core::memory::backend();
    let svc = FleetManager::new(backend.clone(), settings).unwrap();
    let options = PublishOptions { signer: Some(&signer as &dyn FirmwareSigner), security_version: 1 };
    let published = svc.publish_firmware_signed(&admin(), request("1.0.0", image.clone()), options).await.unwrap();
    assert_eq!(published.signed_by, Some(signer.key_id()));
    let artifact = ArtifactRef::new(DeviceType::parse("pet_feeder").unwrap(), FirmwareVersion::parse("1.0.0").unwrap());
    assert_eq!(backend.catalog.read_signature(&artifact).await.unwrap(), sig.der(), "firmware.sig is KMS's DER");
}

#[tokio::test]
async fn a_signature_that_does_not_match_the_kms_key_is_refused_and_nothing_is_published() {
    // GetPublicKey says one key; Sign answers with another's signature (a repointed alias, a
    // broken emulator): the signer refuses, naming the key, and the service writes nothing.
    let (said, signed_with) =
        (LocalSigningKey::from_bytes(&[8; 32]).unwrap(), LocalSigningKey::from_bytes(&[9; 32]).unwrap());
    let signer: Arc<KmsSigner> =
        Arc::new(KmsSigner::connect(fake_kms(&said, signed_with), "alias/firmware").await.unwrap());
    let err = signer.sign(&sha256(b"image")).await.unwrap_err().to_string();
    assert!(err.contains("does not verify") && err.contains(ARN) && err.contains(&said.key_id().to_hex()), "{err}");

    let backend = ota_core::memory::backend();
    let svc = FleetManager::new(backend.clone(), Settings::default()).unwrap();
    let options = PublishOptions { signer: Some(signer.as_ref() as &dyn FirmwareSigner), security_version: 0 };
    svc.publish_firmware_signed(&admin(), request("1.0.0", b"image".to_vec()), options).await.unwrap_err();
    let listed = svc.list_firmware(&admin(), None).await.unwrap();
    assert!(listed.is_empty(), "nothing published: {listed:?}");
}

#[tokio::test]
async fn an_empty_or_foreign_public_key_is_refused() {
    let get = mock!(Kms::get_public_key).then_output(|| {
        GetPublicKeyOutput::builder()
            .key_id(ARN)
            .public_key(Blob::new(vec![0x30, 0x03, 0x02, 0x01, 0x01]))
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .build()
    });
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, &[&get]);
    let err = KmsSigner::connect(kms, "alias/firmware").await.unwrap_err();
    assert!(err.to_string().contains("not a P-256 SubjectPublicKeyInfo"), "{err}");
}
