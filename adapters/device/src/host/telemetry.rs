//! Simulated sensors for the demo fleet: realistic readings per device type (CO2 in ppm,
//! soil moisture in %, hive weight in kg, power in W, …) as a seeded random walk around a
//! baseline, with a slow drift that `recalibrate` takes back out, and the commands a demo
//! firmware declares.

use std::sync::{Arc, Mutex};

use ota_core::command::{Capabilities, Health, HealthStatus};
use ota_core::names::{DeviceType, ThingName};
use serde_json::{Map, Value};

use crate::Application;

/// What a demo firmware of `device_type` declares (the demo world's declarations).
pub fn demo_capabilities(device_type: &DeviceType) -> Capabilities {
    ota_core::demo::capabilities(device_type)
}

/// One metric: name, baseline, step of the walk, bounds, decimals.
struct Metric {
    name: &'static str,
    baseline: f64,
    step: f64,
    min: f64,
    max: f64,
    decimals: i32,
}

/// The metrics of a type, as the demo world's history names them (`ota_core::demo::metrics`):
/// the walk starts at the typical value, steps by its noise, and stays within three daily
/// swings of it (never below 0 for a quantity that is typically positive, never above 100 for
/// a percentage). The first one drifts.
fn metrics_of(device_type: &str) -> Vec<Metric> {
    ota_core::demo::metrics(device_type)
        .iter()
        .map(|&(name, typical, swing, noise, decimals)| {
            let reach = 3.0 * (swing + noise).max(typical.abs() * 0.05);
            let mut min = typical - reach;
            if typical >= 0.0 {
                min = min.max(0.0);
            }
            let mut max = typical + reach;
            if name.ends_with("_pct") {
                max = max.min(100.0);
            }
            let step = if noise > 0.0 { noise } else { swing * 0.1 };
            #[allow(clippy::cast_possible_wrap)] // a handful of decimals
            Metric { name, baseline: typical, step, min, max, decimals: decimals as i32 }
        })
        .collect()
}

/// splitmix64: small, seeded, reproducible.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // 53 bits of mantissa are all we want
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x.mul_add(2.0, -1.0)
    }
}

/// FNV-1a of the thing name: each device its own, stable walk.
fn seed_of(thing: &str) -> u64 {
    thing.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One device's sensors. The state lives across the device's reboots (the physical
/// quantities do not reset when the firmware restarts).
#[derive(Debug)]
pub struct SimSensor {
    metrics: Vec<(&'static str, f64, f64, f64, f64, i32)>,
    values: Vec<f64>,
    /// Added to the first metric per reading, until a recalibration.
    drift: f64,
    rng: Rng,
    /// The sensor is known to drift (the demo's `air_quality_monitor-03`): health
    /// `warning` until recalibrated.
    drifting: bool,
    pub recalibrations: u32,
    pub identifies: u32,
}

impl SimSensor {
    /// The sensors of `thing`, a `device_type`.
    pub fn new(thing: &ThingName, device_type: &DeviceType) -> Self {
        let metrics: Vec<_> = metrics_of(device_type.as_str())
            .into_iter()
            .map(|m| (m.name, m.baseline, m.step, m.min, m.max, m.decimals))
            .collect();
        let values = metrics.iter().map(|m| m.1).collect();
        let drifting = thing.as_str() == "air_quality_monitor-03";
        SimSensor {
            metrics,
            values,
            drift: 0.0,
            rng: Rng(seed_of(thing.as_str())),
            drifting,
            recalibrations: 0,
            identifies: 0,
        }
    }

    /// The next reading of every metric, rounded as the sensor reports it.
    pub fn read(&mut self) -> Map<String, Value> {
        let mut out = Map::new();
        for (i, &(name, baseline, step, min, max, decimals)) in self.metrics.iter().enumerate() {
            // A walk that leans back to the baseline, so it stays realistic for days.
            let mut v = self.values[i];
            v = (v + self.rng.unit() * step + (baseline - v) * 0.05).clamp(min, max);
            self.values[i] = v;
            if i == 0 {
                // The sensor's error grows until a recalibration (fast on a drifting one).
                let pull = if self.drifting { 4.0 } else { 0.2 };
                self.drift = (self.drift + step * pull * 0.02).min(step * pull * 10.0);
                v = (v + self.drift).clamp(min, max);
            }
            let scale = 10f64.powi(decimals);
            let rounded = (v * scale).round() / scale;
            let value = if decimals == 0 {
                #[allow(clippy::cast_possible_truncation)] // within the metric's bounds
                Value::from(rounded as i64)
            } else {
                Value::from(rounded)
            };
            out.insert(name.to_string(), value);
        }
        out
    }

    /// Every metric back to its baseline, the drift gone.
    pub fn recalibrate(&mut self) {
        for (v, m) in self.values.iter_mut().zip(&self.metrics) {
            *v = m.1;
        }
        self.drift = 0.0;
        self.drifting = false;
        self.recalibrations += 1;
    }

    /// Health as the device sees it.
    pub fn health(&self) -> Health {
        if self.drifting {
            Health { status: HealthStatus::Warning, message: "PM2.5 sensor drift".to_string() }
        } else {
            Health::ok()
        }
    }

    /// How far the first metric has drifted since the last recalibration.
    pub fn drift(&self) -> f64 {
        self.drift
    }
}

/// [`SimSensor`] shared by a device's boots, as its agents' [`Application`].
#[derive(Debug, Clone)]
pub struct SharedSensor(pub Arc<Mutex<SimSensor>>);

impl SharedSensor {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimSensor> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Application for SharedSensor {
    fn identify(&mut self) -> Result<(), String> {
        self.lock().identifies += 1;
        Ok(())
    }

    fn recalibrate(&mut self) -> Result<(), String> {
        self.lock().recalibrate();
        Ok(())
    }

    fn telemetry(&mut self) -> Option<(Map<String, Value>, Health)> {
        let mut sensor = self.lock();
        Some((sensor.read(), sensor.health()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(thing: &str, t: &str) -> SimSensor {
        SimSensor::new(&ThingName::parse(thing).unwrap(), &DeviceType::parse(t).unwrap())
    }

    #[test]
    fn readings_are_per_type_reproducible_and_in_bounds() {
        let mut a = sensor("co2_monitor-01", "co2_monitor");
        let mut b = sensor("co2_monitor-01", "co2_monitor");
        let mut c = sensor("co2_monitor-02", "co2_monitor");
        let (ra, rb, rc) = (a.read(), b.read(), c.read());
        assert_eq!(ra, rb, "same thing, same walk");
        assert_ne!(ra, rc, "another thing, another walk");
        assert_eq!(ra.keys().collect::<Vec<_>>(), ["co2_ppm", "temperature_c"]);
        for _ in 0..10_000 {
            let r = a.read();
            let ppm = r["co2_ppm"].as_i64().unwrap();
            assert!((0..=5000).contains(&ppm), "{ppm}");
        }
        for (t, metric) in [
            ("soil_moisture_sensor", "soil_moisture_pct"),
            ("beehive_scale", "hive_weight_kg"),
            ("energy_meter", "power_w"),
            ("smart_plug", "power_w"),
            ("temperature_humidity_sensor", "humidity_pct"),
            ("weather_station", "pressure_hpa"),
            ("air_quality_monitor", "pm2_5_ugm3"),
            ("pet_feeder", "food_level_pct"),
        ] {
            assert!(sensor(&format!("{t}-01"), t).read().contains_key(metric), "{t}");
        }
        // Live readings carry exactly the metric names of the week of history `init` writes.
        for t in ["co2_monitor", "air_quality_monitor", "sound_level_meter", "fish_tank_monitor", "weather_station"] {
            let mut live: Vec<String> = sensor(&format!("{t}-01"), t).read().keys().cloned().collect();
            live.sort();
            let mut history: Vec<String> = ota_core::demo::metrics(t).iter().map(|m| m.0.to_string()).collect();
            history.sort();
            assert_eq!(live, history, "{t}");
        }
    }

    #[test]
    fn recalibrate_takes_the_drift_back_to_baseline() {
        let mut s = sensor("air_quality_monitor-03", "air_quality_monitor");
        assert_eq!(s.health().status, HealthStatus::Warning);
        for _ in 0..500 {
            s.read();
        }
        let drifted = s.read()["pm2_5_ugm3"].as_f64().unwrap();
        assert!(drifted > 18.0, "a drifting PM2.5 sensor reads over twice its typical 9 µg/m³: {drifted}");
        s.recalibrate();
        assert_eq!(s.health(), Health::ok());
        assert_eq!(s.drift(), 0.0);
        let after = s.read()["pm2_5_ugm3"].as_f64().unwrap();
        assert!((after - 9.0).abs() < 3.0, "back near the 9 µg/m³ typical value: {after}");
        assert_eq!(s.recalibrations, 1);
    }

    #[test]
    fn demo_firmware_declares_recalibrate_for_sensing_types_only() {
        let caps = |t: &str| demo_capabilities(&DeviceType::parse(t).unwrap());
        assert!(caps("co2_monitor").supports("recalibrate"));
        assert!(!caps("smart_plug").supports("recalibrate"));
        for t in ["co2_monitor", "smart_plug"] {
            assert!(caps(t).supports("reboot") && caps(t).supports("identify") && caps(t).supports("update_config"));
        }
    }
}
