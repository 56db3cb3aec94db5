//! Shared by the agent's integration tests: a cloud that speaks the AWS IoT Jobs MQTT API
//! and the classic shadow (as the test's side of the conversation), and a rig that boots a
//! simulated device again and again, as power cycles and reboots require.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_core::names::{DeviceType, ThingName};
use ota_core::update::DeviceConfig;
use ota_device::host::{Power, SimFlash, SyntheticImage};
use ota_device::{AgentConfig, Exit};
use serde_json::{Value, json};

pub const TYPE: &str = "pet_feeder";
pub const SLOT_SIZE: u64 = 16 * 1024 * 1024;

/// One job as the cloud tracks it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub document: Value,
    pub status: String,
}

/// The cloud: job executions of one thing, every status update, the reported shadow.
#[derive(Debug)]
pub struct Cloud {
    pub thing: String,
    pub jobs: Vec<Job>,
    /// (job id, status, statusDetails, accepted) in arrival order.
    pub statuses: Vec<(String, String, Value, bool)>,
    pub shadow: Value,
    /// Switched off once every job has ended and the device asked for more: it is idle.
    pub idle_stop: Option<Power>,
    pub idle: bool,
}

impl Cloud {
    pub fn new(thing: &str) -> Self {
        Cloud {
            thing: thing.into(),
            jobs: Vec::new(),
            statuses: Vec::new(),
            shadow: json!({}),
            idle_stop: None,
            idle: false,
        }
    }

    pub fn add_job(&mut self, id: &str, document: Value) {
        self.jobs.push(Job { id: id.into(), document, status: "QUEUED".into() });
    }

    fn next(&self) -> Option<&Job> {
        self.jobs.iter().find(|j| j.status == "QUEUED" || j.status == "IN_PROGRESS")
    }

    fn execution(&self) -> Value {
        match self.next() {
            Some(j) => json!({"timestamp": 1, "execution": {"jobId": j.id, "status": j.status, "versionNumber": 1,
                                                         "executionNumber": 1, "jobDocument": j.document}}),
            None => json!({"timestamp": 1}),
        }
    }

    /// `notify-next` as AWS publishes it when the next job changes.
    pub fn notify_next(&self) -> (String, Vec<u8>) {
        (format!("$aws/things/{}/jobs/notify-next", self.thing), self.execution().to_string().into_bytes())
    }

    /// The cloud's answer to one device publish.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Vec<(String, Vec<u8>)> {
        let prefix = format!("$aws/things/{}/", self.thing);
        let Some(rest) = topic.strip_prefix(&prefix) else { return vec![] };
        let body: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        if rest == "shadow/update" {
            if let Some(reported) = body["state"]["reported"].as_object() {
                for (k, v) in reported {
                    self.shadow[k] = v.clone();
                }
            }
            return vec![];
        }
        if rest == "jobs/$next/get" {
            let all_done = !self.jobs.is_empty() && self.next().is_none();
            if all_done {
                self.idle = true;
                if let Some(p) = &self.idle_stop {
                    p.switch_off();
                }
            }
            return vec![(format!("{prefix}jobs/$next/get/accepted"), self.execution().to_string().into_bytes())];
        }
        let Some(id) = rest.strip_prefix("jobs/").and_then(|r| r.strip_suffix("/update")) else { return vec![] };
        let status = body["status"].as_str().unwrap_or_default().to_string();
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) else {
            return vec![(format!("{prefix}jobs/{id}/update/rejected"), br#"{"code":"ResourceNotFound"}"#.to_vec())];
        };
        let terminal = !matches!(job.status.as_str(), "QUEUED" | "IN_PROGRESS");
        self.statuses.push((id.to_string(), status.clone(), body["statusDetails"].clone(), !terminal));
        if terminal {
            return vec![(
                format!("{prefix}jobs/{id}/update/rejected"),
                br#"{"code":"InvalidStateTransition"}"#.to_vec(),
            )];
        }
        job.status = status;
        vec![(format!("{prefix}jobs/{id}/update/accepted"), b"{}".to_vec())]
    }

    /// The final status the cloud accepted for `id`, with its details.
    pub fn final_status(&self, id: &str) -> Option<(String, Value)> {
        self.statuses
            .iter()
            .filter(|(j, s, _, ok)| j == id && *ok && s != "IN_PROGRESS")
            .map(|(_, s, d, _)| (s.clone(), d.clone()))
            .next_back()
    }

    /// `progress` values of the IN_PROGRESS downloading updates.
    pub fn progress(&self, id: &str) -> Vec<String> {
        self.statuses
            .iter()
            .filter(|(j, s, d, _)| j == id && s == "IN_PROGRESS" && d["step"] == "downloading")
            .map(|(_, _, d, _)| d["progress"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A job document for `image` at `url`.
pub fn document(image: &SyntheticImage, url: &str) -> Value {
    json!({"operation": "ota_update", "deviceType": TYPE, "version": image.version(), "rollback": false,
           "firmware": {"url": url, "size": image.len(), "sha256": image.sha256().to_hex()}})
}

/// Agent settings with short waits for tests.
pub fn agent_config(thing: &str) -> AgentConfig {
    let device = DeviceConfig::new(ThingName::parse(thing).unwrap(), DeviceType::parse(TYPE).unwrap());
    let mut c = AgentConfig::new(device, SLOT_SIZE);
    c.self_test_timeout = Duration::from_secs(5);
    c.poll_interval = Duration::from_millis(20);
    c.retry_delay = Duration::from_millis(20);
    c.reboot_grace = Duration::from_millis(300);
    c
}

/// Boots the device until the cloud sees it idle, through reboots and power cuts. `boot`
/// runs one boot of the agent (the caller wires the transports) and returns how it ended.
pub fn run_until_idle(
    cloud: &Arc<Mutex<Cloud>>,
    flash: &SimFlash,
    power: &Power,
    mut boot: impl FnMut() -> Exit,
) -> Vec<Exit> {
    cloud.lock().unwrap().idle_stop = Some(power.clone());
    // A watchdog unplugs a device that hangs, so a defect fails the test instead of
    // stalling the run.
    let finished = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let (f, t, p) = (finished.clone(), timed_out.clone(), power.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                t.store(true, Ordering::SeqCst);
                p.switch_off();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut exits = Vec::new();
    for _ in 0..12 {
        flash.power_on();
        let exit = boot();
        exits.push(exit);
        assert!(!timed_out.load(Ordering::SeqCst), "the device hung for 60 s: {exits:?}");
        if exit == Exit::Stopped {
            power.restore();
            if cloud.lock().unwrap().idle {
                finished.store(true, Ordering::SeqCst);
                return exits;
            }
        }
    }
    finished.store(true, Ordering::SeqCst);
    panic!("the device never went idle: {exits:?}");
}
