//! The agent over the host implementations with an in-process cloud (no broker): faults and
//! power cuts at chosen steps, checked against what the cloud and the flash end up with.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ota_device::host::{
    HttpFaults, LoopbackMqtt, MemStorage, MemoryHttp, MqttHandler, Power, PowerCut, SimFlash, SimSlotState,
    SyntheticImage,
};
use ota_device::{Agent, Exit};

const THING: &str = "pet_feeder-01";
const JOB: &str = "job-1";

struct Rig {
    cloud: Arc<Mutex<Cloud>>,
    power: Power,
    flash: SimFlash,
    storage: MemStorage,
    faults: Arc<Mutex<HttpFaults>>,
    image: SyntheticImage,
}

impl Rig {
    fn new(image_len: u64) -> Self {
        let power = Power::new();
        let image = SyntheticImage::new("2.0.0", image_len);
        let mut cloud = Cloud::new(THING);
        cloud.add_job(JOB, document(&image, "http://firmware.test/v2.0.0/pet_feeder/firmware.bin"));
        Rig {
            cloud: Arc::new(Mutex::new(cloud)),
            flash: SimFlash::new("1.0.0", SLOT_SIZE, power.clone()),
            storage: MemStorage::new(power.clone()),
            faults: Arc::default(),
            image,
            power,
        }
    }

    fn run(&self) -> Vec<Exit> {
        run_until_idle(&self.cloud, &self.flash, &self.power, || {
            let cloud = self.cloud.clone();
            let handler: MqttHandler = Box::new(move |t, p| cloud.lock().unwrap().handle(t, p));
            let (mqtt, events) = LoopbackMqtt::new(Arc::new(Mutex::new(handler)), self.power.clone());
            mqtt.connect();
            let http = MemoryHttp::new(self.image.clone(), self.faults.clone());
            let flash = self.flash.clone();
            let mut agent =
                Agent::new(agent_config(THING), mqtt, events, http, self.flash.clone(), self.storage.clone())
                    .with_self_test(move || !flash.running_image_fails_self_test());
            agent.run(self.power.off_flag()).expect("the agent runs")
        })
    }

    fn final_status(&self) -> (String, serde_json::Value) {
        self.cloud.lock().unwrap().final_status(JOB).expect("the job ended")
    }

    fn running(&self) -> (String, SimSlotState) {
        let (index, state) = self.flash.running_slot();
        (self.flash.slot(index).version.unwrap(), state)
    }
}

#[test]
fn an_update_streams_verifies_reboots_and_reports() {
    let rig = Rig::new(300_000);
    let exits = rig.run();
    assert_eq!(exits, [Exit::Reboot, Exit::Stopped]);
    assert_eq!(rig.running(), ("2.0.0".to_string(), SimSlotState::Valid));
    assert_eq!(rig.flash.slot(1).digest, Some(rig.image.sha256()), "exactly the image landed in the slot");
    let (status, details) = rig.final_status();
    assert_eq!((status.as_str(), &details["firmwareVersion"]), ("SUCCEEDED", &serde_json::json!("2.0.0")));
    assert_eq!(rig.cloud.lock().unwrap().shadow["firmwareVersion"], "2.0.0");
    assert_eq!(rig.storage.value(ota_core::update::PENDING_JOB_KEY), None);
}

#[test]
fn a_corrupt_byte_in_transit_fails_the_job_and_keeps_the_old_image() {
    let rig = Rig::new(300_000);
    rig.faults.lock().unwrap().corrupt_at = Some(123_456);
    assert_eq!(rig.run(), [Exit::Stopped], "no reboot");
    let (status, details) = rig.final_status();
    assert_eq!((status.as_str(), &details["reason"]), ("FAILED", &serde_json::json!("sha256_mismatch")));
    assert_eq!(details["expected"], rig.image.sha256().to_hex());
    assert_eq!(rig.running(), ("1.0.0".to_string(), SimSlotState::Valid));
    assert_eq!(rig.flash.slot(1).state, SimSlotState::Empty, "the written slot was discarded");
}

#[test]
fn truncated_and_dropped_downloads_resume() {
    for (truncate, drop) in [(Some(100_000), None), (None, Some(200_000))] {
        let rig = Rig::new(300_000);
        *rig.faults.lock().unwrap() = HttpFaults { truncate_at: truncate, drop_at: drop, corrupt_at: None };
        rig.run();
        assert_eq!(rig.final_status().0, "SUCCEEDED", "{truncate:?} {drop:?}");
        assert_eq!(rig.flash.slot(1).digest, Some(rig.image.sha256()));
    }
}

#[test]
fn a_new_image_that_fails_its_self_test_is_rolled_back() {
    let rig = Rig::new(300_000);
    rig.flash.fail_self_test_of("2.0.0");
    assert_eq!(rig.run(), [Exit::Reboot, Exit::Reboot, Exit::Stopped]);
    assert_eq!(rig.running(), ("1.0.0".to_string(), SimSlotState::Valid));
    assert_eq!(rig.flash.slot(1).state, SimSlotState::Invalid);
    let (status, details) = rig.final_status();
    assert_eq!(status, "FAILED");
    assert_eq!(details["reason"], "boot_failed");
    assert_eq!(details["firmwareVersion"], "1.0.0");
    assert_eq!(rig.cloud.lock().unwrap().shadow["firmwareVersion"], "1.0.0");
}

#[test]
fn power_loss_at_each_durable_step_ends_cleanly() {
    let cuts = [
        (PowerCut::BeforeErase, "SUCCEEDED"),
        (PowerCut::AtImageByte(150_000), "SUCCEEDED"),
        (PowerCut::BeforeFinish, "SUCCEEDED"),
        (PowerCut::BeforeStore, "SUCCEEDED"),
        (PowerCut::BeforeActivate, "SUCCEEDED"),
        (PowerCut::BeforeMarkValid, "FAILED"),
        (PowerCut::BeforeRemove, "SUCCEEDED"),
    ];
    for (cut, expected) in cuts {
        let rig = Rig::new(300_000);
        rig.power.cut_at(cut);
        rig.run();
        let (status, _) = rig.final_status();
        assert_eq!(status, expected, "{cut:?}");
        let (version, state) = rig.running();
        assert_eq!(state, SimSlotState::Valid, "{cut:?}: boots a confirmed image");
        assert_eq!(version, if expected == "SUCCEEDED" { "2.0.0" } else { "1.0.0" }, "{cut:?}");
        assert_eq!(rig.storage.value(ota_core::update::PENDING_JOB_KEY), None, "{cut:?}");
        assert_eq!(rig.cloud.lock().unwrap().shadow["firmwareVersion"], version, "{cut:?}");
    }
}
