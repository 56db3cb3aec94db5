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

/// The demo types whose firmware also declares `recalibrate`.
pub const RECALIBRATE: [&str; 10] = [
    "soil_moisture_sensor",
    "air_quality_monitor",
    "co2_monitor",
    "temperature_humidity_sensor",
    "weather_station",
    "beehive_scale",
    "water_leak_detector",
    "sound_level_meter",
    "energy_meter",
    "fish_tank_monitor",
];

/// The demo devices that are offline at `init`, last seen [`OFFLINE_HOURS`] before it.
pub const OFFLINE: [&str; 2] = ["mailbox_notifier-04", "sound_level_meter-04"];

/// How long before `init` the [`OFFLINE`] devices were last seen.
pub const OFFLINE_HOURS: i64 = 11;

/// The demo device that reports a warning, and its message.
pub const WARNING: (&str, &str) = ("air_quality_monitor-03", "PM2.5 sensor drift");

/// Where the demo's `{type}-{n}` stands: -01 `factory-floor-1/line-7`, -02
/// `factory-floor-1/line-3`, -03 `factory-floor-2`, -04 `lab`; further devices nowhere.
pub fn location(n: u32) -> Option<&'static str> {
    match n {
        1 => Some("factory-floor-1/line-7"),
        2 => Some("factory-floor-1/line-3"),
        3 => Some("factory-floor-2"),
        4 => Some("lab"),
        _ => None,
    }
}

/// What every demo firmware of `device_type` declares: `reboot`, `identify` (and
/// `recalibrate` for [`RECALIBRATE`]), `sample_rate_seconds` and `log_level`.
pub fn capabilities(device_type: &DeviceType) -> crate::command::Capabilities {
    crate::command::Capabilities::demo(RECALIBRATE.contains(&device_type.as_str()))
}

/// [`capabilities`] as `metadata.json` fields (`commands`, `settings`), for a publish
/// request's extra fields.
pub fn declarations(device_type: &DeviceType) -> std::collections::BTreeMap<String, serde_json::Value> {
    let c = capabilities(device_type);
    let mut out = std::collections::BTreeMap::new();
    out.insert("commands".to_string(), serde_json::json!(c.commands));
    out.insert("settings".to_string(), serde_json::to_value(&c.settings).unwrap_or_default());
    out
}

/// The metrics a demo type reports: (name, typical value, daily swing, noise, decimals). The
/// week of history written at `init` and the simulator's live readings both come from here,
/// so a metric keeps its name when the simulator takes over.
pub fn metrics(device_type: &str) -> &'static [(&'static str, f64, f64, f64, u32)] {
    match device_type {
        "vision_ai_face_detector" => &[("faces_detected", 12.0, 10.0, 4.0, 0), ("inference_ms", 48.0, 6.0, 3.0, 1)],
        "vision_ai_object_counter" => &[("objects_counted", 140.0, 90.0, 20.0, 0), ("inference_ms", 35.0, 4.0, 2.0, 1)],
        "pet_feeder" => &[("food_level_pct", 62.0, 18.0, 3.0, 0), ("portions_dispensed", 1.0, 1.0, 0.4, 0)],
        "sphero_rvr_bridge" => &[("battery_pct", 70.0, 25.0, 3.0, 0), ("link_rssi_dbm", -58.0, 4.0, 3.0, 0)],
        "lerobot_follower_arm" => &[("joint_temp_c", 41.0, 6.0, 1.0, 1), ("position_error_deg", 0.4, 0.2, 0.05, 2)],
        "lerobot_leader_arm" => &[("joint_temp_c", 37.0, 4.0, 1.0, 1), ("position_error_deg", 0.3, 0.1, 0.05, 2)],
        "uart_jetson_bridge" => &[("throughput_kbps", 850.0, 300.0, 60.0, 0), ("frame_errors", 1.0, 1.0, 0.7, 0)],
        "soil_moisture_sensor" => &[("soil_moisture_pct", 38.0, 6.0, 1.5, 1), ("soil_temp_c", 17.0, 4.0, 0.5, 1)],
        "air_quality_monitor" => {
            &[("pm2_5_ugm3", 9.0, 4.0, 1.5, 1), ("pm10_ugm3", 16.0, 6.0, 2.0, 1), ("voc_index", 110.0, 40.0, 10.0, 0)]
        }
        "smart_doorbell" => &[("rings", 1.0, 1.0, 0.6, 0), ("motion_events", 6.0, 5.0, 2.0, 0)],
        "garage_door_controller" => &[("door_cycles", 1.0, 1.0, 0.5, 0), ("motor_current_a", 0.2, 0.2, 0.05, 2)],
        "water_leak_detector" => &[("leak_detected", 0.0, 0.0, 0.0, 0), ("humidity_pct", 55.0, 8.0, 2.0, 1)],
        "weather_station" => &[
            ("temperature_c", 14.0, 6.0, 0.8, 1),
            ("humidity_pct", 68.0, 15.0, 3.0, 0),
            ("pressure_hpa", 1013.0, 3.0, 1.5, 1),
            ("wind_speed_mps", 4.0, 2.5, 1.2, 1),
        ],
        "plant_watering_pump" => &[("water_ml", 120.0, 110.0, 20.0, 0), ("tank_level_pct", 64.0, 10.0, 2.0, 0)],
        "motion_sensor" => &[("motion_events", 9.0, 8.0, 3.0, 0), ("illuminance_lux", 320.0, 300.0, 30.0, 0)],
        "temperature_humidity_sensor" => &[("temperature_c", 21.5, 2.0, 0.3, 1), ("humidity_pct", 45.0, 6.0, 1.5, 0)],
        "co2_monitor" => &[("co2_ppm", 650.0, 300.0, 40.0, 0), ("temperature_c", 21.0, 1.5, 0.3, 1)],
        "smart_plug" => &[("power_w", 45.0, 40.0, 6.0, 1), ("energy_kwh", 0.05, 0.04, 0.006, 3)],
        "led_strip_controller" => &[("brightness_pct", 55.0, 45.0, 5.0, 0), ("power_w", 9.0, 7.0, 0.8, 1)],
        "energy_meter" => &[
            ("power_w", 1800.0, 900.0, 150.0, 0),
            ("voltage_v", 230.0, 3.0, 1.0, 1),
            ("energy_kwh", 1.8, 0.9, 0.15, 2),
        ],
        "fish_tank_monitor" => &[("water_temp_c", 25.0, 0.5, 0.2, 1), ("ph", 7.1, 0.1, 0.05, 2)],
        "beehive_scale" => &[("hive_weight_kg", 42.0, 1.2, 0.3, 2), ("hive_temp_c", 34.5, 1.0, 0.3, 1)],
        "bird_feeder_camera" => &[("bird_visits", 5.0, 5.0, 2.0, 0), ("seed_level_pct", 58.0, 12.0, 2.0, 0)],
        "mailbox_notifier" => &[("mail_events", 0.3, 0.3, 0.3, 0), ("battery_pct", 81.0, 1.0, 0.5, 0)],
        "sound_level_meter" => &[("sound_level_dba", 62.0, 14.0, 4.0, 1)],
        "gesture_remote" => &[("gestures", 4.0, 4.0, 2.0, 0), ("battery_pct", 76.0, 2.0, 0.5, 0)],
        _ => &[("uptime_h", 100.0, 0.0, 0.0, 0)],
    }
}

/// A deterministic value in -1..1 for a device, metric and hour.
fn noise(thing: &str, metric: &str, hour: i64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in thing.bytes().chain(metric.bytes()).chain(hour.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    #[allow(clippy::cast_precision_loss)] // 53 bits are plenty for noise
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

/// What `thing` (a demo device of `device_type`) measures at `at`: realistic per type, with
/// a daily cycle and noise, the same every time. The [`WARNING`] device's PM2.5 drifts up.
pub fn telemetry_values(
    device_type: &DeviceType,
    thing: &ThingName,
    at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Map<String, serde_json::Value> {
    let hour = at.timestamp().div_euclid(3600);
    #[allow(clippy::cast_precision_loss)] // hours since 1970 fit
    let phase = (hour.rem_euclid(24) as f64 - 8.0) / 24.0 * std::f64::consts::TAU;
    let mut out = serde_json::Map::new();
    for (name, typical, swing, jitter, decimals) in metrics(device_type.as_str()) {
        let mut v = typical + swing * phase.sin() + jitter * noise(thing.as_str(), name, hour);
        if thing.as_str() == WARNING.0 && *name == "pm2_5_ugm3" {
            // Drift: about 0.2 µg/m³ more every hour of the week.
            #[allow(clippy::cast_precision_loss)]
            let drift = (hour.rem_euclid(24 * 7)) as f64 * 0.2;
            v += drift;
        }
        // Counts, levels and sizes never go below zero; dBm are negative by nature.
        let v = if *typical >= 0.0 { v.max(0.0) } else { v };
        let scale = 10f64.powi(i32::try_from(*decimals).unwrap_or(0));
        let rounded = (v * scale).round() / scale;
        let value = if *decimals == 0 {
            #[allow(clippy::cast_possible_truncation)] // rounded, small
            let whole = rounded as i64;
            serde_json::json!(whole)
        } else {
            serde_json::json!(rounded)
        };
        out.insert((*name).to_string(), value);
    }
    out
}

/// A week of hourly telemetry for one demo device, ending at `until` (its last seen), oldest first.
pub fn telemetry_history(
    device_type: &DeviceType,
    thing: &ThingName,
    until: chrono::DateTime<chrono::Utc>,
) -> Vec<crate::ports::TelemetryPoint> {
    (0..24 * 7)
        .rev()
        .map(|h| {
            let at = until - chrono::Duration::hours(h);
            crate::ports::TelemetryPoint { thing: thing.clone(), at, values: telemetry_values(device_type, thing, at) }
        })
        .collect()
}

/// The demo's record of `{type}-{n}` running `version` at `now`: its location, health (ok,
/// but [`WARNING`]), active, its last telemetry; the [`OFFLINE`] ones last seen
/// [`OFFLINE_HOURS`] before `now`, the others at `now`. Connectivity is left to the caller
/// (`connected` is false: devices connect when they do).
pub fn device_record(
    device_type: &DeviceType,
    thing: ThingName,
    version: FirmwareVersion,
    thing_group: crate::names::ThingGroupName,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::device::Device {
    use crate::device::{Device, Health, HealthStatus, LOCATION, Telemetry};
    let n = thing.conventional_parts().map_or(0, |(_, n)| n);
    let last_seen = if OFFLINE.contains(&thing.as_str()) { now - chrono::Duration::hours(OFFLINE_HOURS) } else { now };
    let health = if thing.as_str() == WARNING.0 {
        Health { status: HealthStatus::Warning, message: WARNING.1.to_string() }
    } else {
        Health { status: HealthStatus::Ok, message: String::new() }
    };
    let mut d = Device {
        firmware_version: Some(version),
        last_seen: Some(last_seen),
        health: Some(health),
        telemetry: Some(Telemetry { values: telemetry_values(device_type, &thing, last_seen), at: last_seen }),
        ..Device::new(thing, device_type.clone(), thing_group)
    };
    if let Some(l) = location(n) {
        d.attributes.insert(LOCATION.to_string(), l.to_string());
    }
    d
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
                extra: declarations(&t),
            };
            svc.publish_firmware(admin, request).await?;
        }
        let group = svc.settings().naming.thing_group_of(&t);
        let now = svc.now();
        // Locations and health as `init --demo` writes them; connected, never seen, no telemetry.
        let devices = devices(&t, devices_per_type).into_iter().map(|(thing, v)| crate::device::Device {
            connected: true,
            last_seen: None,
            telemetry: None,
            ..device_record(&t, thing, v, group.clone(), now)
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
    fn demo_devices_have_their_locations_health_and_a_week_of_realistic_telemetry() {
        let now = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
        let aq = DeviceType::parse("air_quality_monitor").unwrap();
        let group = crate::names::NamingConvention::default().thing_group_of(&aq);
        let recs: Vec<_> =
            devices(&aq, 4).into_iter().map(|(t, v)| device_record(&aq, t, v, group.clone(), now)).collect();
        let at: Vec<_> = recs.iter().map(|d| d.location().unwrap_or("-")).collect();
        assert_eq!(at, ["factory-floor-1/line-7", "factory-floor-1/line-3", "factory-floor-2", "lab"]);
        let warn = recs[2].health.as_ref().unwrap();
        assert_eq!((warn.status.as_str(), warn.message.as_str()), ("warning", "PM2.5 sensor drift"));
        assert!(
            recs.iter()
                .filter(|d| d.thing.as_str() != WARNING.0)
                .all(|d| d.health.as_ref().unwrap().status.as_str() == "ok")
        );

        let mb = DeviceType::parse("mailbox_notifier").unwrap();
        let (t4, v4) = devices(&mb, 4).pop().unwrap();
        let d = device_record(&mb, t4, v4, group.clone(), now);
        assert_eq!(d.last_seen, Some(now - chrono::Duration::hours(11)));

        let co2 = DeviceType::parse("co2_monitor").unwrap();
        let thing = ThingName::parse("co2_monitor-01").unwrap();
        let week = telemetry_history(&co2, &thing, now);
        assert_eq!(week.len(), 168);
        assert_eq!(week.last().unwrap().at, now);
        assert!(week.windows(2).all(|w| w[0].at < w[1].at));
        let ppm: Vec<i64> = week.iter().map(|p| p.values["co2_ppm"].as_i64().unwrap()).collect();
        assert!(ppm.iter().all(|v| (250..1100).contains(v)), "{ppm:?}");
        assert_eq!(telemetry_history(&co2, &thing, now), week, "deterministic");
        let hive = telemetry_values(&DeviceType::parse("beehive_scale").unwrap(), &thing, now);
        assert!((38.0..46.0).contains(&hive["hive_weight_kg"].as_f64().unwrap()));

        assert_eq!(capabilities(&co2).commands, ["reboot", "identify", "recalibrate"]);
        assert_eq!(capabilities(&mb).commands, ["reboot", "identify"]);
        assert_eq!(declarations(&mb)["settings"]["sample_rate_seconds"]["max"], 3600.0);
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
