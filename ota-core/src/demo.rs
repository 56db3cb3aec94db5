//! The demo world: 26 device types, their firmware versions, four devices per type, and
//! deterministic firmware images of realistic size. Pure data; `ota init --demo` writes it
//! through the service, and benchmarks scale it up.

use crate::names::{DeviceType, ThingName};
use crate::version::FirmwareVersion;

/// The demo's device types.
pub const DEVICE_TYPES: [&str; 26] = [
    "vision_ai_face_detector",
    "vision_ai_object_counter",
    "pet_feeder",
    "sphero_rvr_bridge",
    "lerobot_follower_arm",
    "lerobot_leader_arm",
    "uart_jetson_bridge",
    "soil_moisture_sensor",
    "air_quality_monitor",
    "smart_doorbell",
    "garage_door_controller",
    "water_leak_detector",
    "weather_station",
    "plant_watering_pump",
    "motion_sensor",
    "temperature_humidity_sensor",
    "co2_monitor",
    "smart_plug",
    "led_strip_controller",
    "energy_meter",
    "fish_tank_monitor",
    "beehive_scale",
    "bird_feeder_camera",
    "mailbox_notifier",
    "sound_level_meter",
    "gesture_remote",
];

/// The one type whose OTA gate the demo leaves closed.
pub const DISABLED_TYPE: &str = "beehive_scale";

const WITH_1_1: [&str; 5] =
    ["pet_feeder", "vision_ai_face_detector", "smart_doorbell", "weather_station", "air_quality_monitor"];
const WITH_2_1: [&str; 4] = ["pet_feeder", "sphero_rvr_bridge", "lerobot_follower_arm", "lerobot_leader_arm"];
const WITH_3_0: [&str; 3] = ["vision_ai_face_detector", "pet_feeder", "smart_plug"];

/// Every demo device type, parsed.
pub fn device_types() -> Vec<DeviceType> {
    DEVICE_TYPES.iter().filter_map(|t| DeviceType::parse(t).ok()).collect()
}

/// The versions the demo catalog holds for `device_type`, lowest first.
pub fn versions(device_type: &DeviceType) -> Vec<FirmwareVersion> {
    let t = device_type.as_str();
    let mut v = vec![FirmwareVersion::new(1, 0, 0)];
    if WITH_1_1.contains(&t) {
        v.push(FirmwareVersion::new(1, 1, 0));
    }
    v.push(FirmwareVersion::new(2, 0, 0));
    if WITH_2_1.contains(&t) {
        v.push(FirmwareVersion::new(2, 1, 0));
    }
    if WITH_3_0.contains(&t) {
        v.push(FirmwareVersion::new(3, 0, 0));
    }
    v
}

/// The demo's devices of one type, `{type}-01` … `{type}-{count}`, with what each runs:
/// -01 and -02 run 1.0.0, -03 runs 2.0.0, -04 (and any further) the type's latest.
pub fn devices(device_type: &DeviceType, count: u32) -> Vec<(ThingName, FirmwareVersion)> {
    let latest = versions(device_type).pop().unwrap_or_else(|| FirmwareVersion::new(1, 0, 0));
    (1..=count)
        .filter_map(|n| {
            let thing = ThingName::parse(&format!("{device_type}-{n:02}")).ok()?;
            let v = match n {
                1 | 2 => FirmwareVersion::new(1, 0, 0),
                3 => FirmwareVersion::new(2, 0, 0),
                _ => latest.clone(),
            };
            Some((thing, v))
        })
        .collect()
}

/// Release notes for a demo version.
pub fn release_notes(device_type: &DeviceType, version: &FirmwareVersion) -> String {
    let what = match (version.semver().major, version.semver().minor) {
        (1, 0) => "First release",
        (1, _) => "Bug fixes and Wi-Fi reconnect improvements",
        (2, 0) => "New sensor pipeline and lower idle power",
        (2, _) => "Faster boot and MQTT keep-alive tuning",
        _ => "Major update: new features and a refreshed partition layout",
    };
    format!("{what} for {device_type}.")
}

/// A deterministic firmware image of about 1.6 MB for one type and version.
///
/// It starts like an ESP32-S3 application image: the `0xE9` image magic, then at offset 32
/// an `esp_app_desc_t`-shaped record (magic `0xABCD5432`, version, project name), so a
/// device can read what it is about to boot. The rest is pseudo-random bytes seeded by the
/// type and version, so every artifact differs and compresses like real code.
pub fn firmware_image(device_type: &DeviceType, version: &FirmwareVersion) -> Vec<u8> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_type.as_str().bytes().chain(version.to_string().bytes()) {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // 1.5 MB to about 1.7 MB, fixed per artifact.
    let len = 1_500_000 + (seed % 200_000) as usize;
    let mut img = vec![0u8; len];
    let mut x = seed | 1;
    for chunk in img.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    img[0] = 0xE9;
    img[1] = 4; // segment count
    img[32..36].copy_from_slice(&0xABCD_5432u32.to_le_bytes());
    write_field(&mut img[48..80], version.to_string().as_bytes());
    write_field(&mut img[80..112], device_type.as_str().as_bytes());
    img
}

fn write_field(dst: &mut [u8], src: &[u8]) {
    dst.fill(0);
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src[..n]);
}

/// Seeds `types` of the demo world through `svc` as `admin`: every demo version published with
/// the image `image(type, version)` gives, `devices_per_type` connected devices on the demo's
/// versions, and the OTA gate open for every type but [`DISABLED_TYPE`]. For tests and
/// benchmarks (feature `testing`); `ota init --demo` is the idempotent, user-facing writer of
/// the demo world.
#[cfg(any(test, feature = "testing"))]
pub async fn seed(
    svc: &crate::service::FleetManager,
    admin: &crate::auth::Caller,
    types: &[&str],
    devices_per_type: u32,
    image: impl Fn(&DeviceType, &FirmwareVersion) -> Vec<u8>,
) -> crate::Result<()> {
    for name in types {
        let t = DeviceType::parse(name)?;
        for v in versions(&t) {
            let request = crate::service::PublishRequest {
                image: image(&t, &v),
                release_notes: release_notes(&t, &v),
                device_type: t.clone(),
                version: v,
                built_at: None,
                extra: Default::default(),
            };
            svc.publish_firmware(admin, request).await?;
        }
        let devices = devices(&t, devices_per_type).into_iter().map(|(thing, v)| crate::device::Device {
            firmware_version: Some(v),
            connected: true,
            last_seen: None,
            ..crate::device::Device::new(thing, t.clone(), svc.settings().naming.thing_group_of(&t))
        });
        svc.backend().registry.upsert_many(devices.collect()).await?;
        svc.set_ota_enabled(admin, &t, *name != DISABLED_TYPE).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_catalog_has_the_documented_versions() {
        let total: usize = device_types().iter().map(|t| versions(t).len()).sum();
        assert_eq!(device_types().len(), 26);
        assert_eq!(total, 26 * 2 + 5 + 4 + 3);
        let pf = DeviceType::parse("pet_feeder").unwrap();
        let names: Vec<String> = versions(&pf).iter().map(|v| v.to_string()).collect();
        assert_eq!(names, ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "3.0.0"]);
        let d = devices(&pf, 4);
        assert_eq!(d[3].0.as_str(), "pet_feeder-04");
        assert_eq!(d[3].1.to_string(), "3.0.0");
        assert_eq!(d[2].1.to_string(), "2.0.0");
    }

    #[test]
    fn images_are_deterministic_distinct_and_realistic() {
        let pf = DeviceType::parse("pet_feeder").unwrap();
        let a = firmware_image(&pf, &FirmwareVersion::new(1, 0, 0));
        let b = firmware_image(&pf, &FirmwareVersion::new(1, 0, 0));
        let c = firmware_image(&pf, &FirmwareVersion::new(2, 0, 0));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!((1_500_000..1_700_000).contains(&a.len()));
        assert_eq!(a[0], 0xE9);
        assert_eq!(&a[48..53], b"1.0.0");
    }
}
