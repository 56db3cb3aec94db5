//! A deterministic world for the state machine's tests: two flash slots and a bootloader, a
//! key-value store, a cloud that speaks the Jobs API, and an HTTP server with faults. It
//! executes the machine's actions exactly as a device would and can cut the power before any
//! one of them.

use std::collections::{BTreeSet, VecDeque};

use serde_json::{Value, json};

use super::*;
use crate::catalog::Sha256Digest;
use crate::job::JobExecution;
use crate::names::{DeviceType, JobId, ThingName};
use crate::topics::{self, JobsTopic, ShadowOp, ShadowTopic, ThingTopic};

pub const THING: &str = "pet_feeder-01";
pub const TYPE: &str = "pet_feeder";
pub const SLOT_SIZE: u64 = 64 * 1024;
pub const CHUNK: usize = 1024;

pub fn v(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}

pub fn config() -> DeviceConfig {
    let mut c = DeviceConfig::new(ThingName::parse(THING).unwrap(), DeviceType::parse(TYPE).unwrap());
    c.progress = ProgressPolicy { percent_step: 10, min_interval_ms: 0 };
    c
}

/// Deterministic image bytes; the version is part of the content so versions differ.
pub fn image(version: &str, len: usize) -> Vec<u8> {
    let seed = version.bytes().fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

pub fn digest(bytes: &[u8]) -> Sha256Digest {
    let mut v = crate::integrity::Sha256Verifier::new();
    v.update(bytes);
    v.finish().0
}

pub fn document(version: &str, image: &[u8]) -> Value {
    json!({"operation": "ota_update", "deviceType": TYPE, "version": version, "rollback": false,
           "firmware": {"url": format!("https://firmware.example/v{version}/fw.bin"), "size": image.len(), "sha256": digest(image).to_hex()}})
}

/// The simulated bootloader's slot states (ESP-IDF's NEW and PENDING_VERIFY are both
/// "unverified" to the machine; the difference is whether the image has booted yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sim {
    Empty,
    New,
    PendingVerify,
    Valid,
    Invalid,
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub version: Option<FirmwareVersion>,
    pub state: Sim,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Flip the byte at this image offset every time it is served.
    pub corrupt_at: Option<u64>,
    /// The first response breaks after this image offset.
    pub break_once_at: Option<u64>,
    /// Every response breaks after serving this many bytes.
    pub break_every: Option<u64>,
    /// Every request is refused with this HTTP status.
    pub refuse: Option<u16>,
}

#[derive(Debug)]
pub struct CloudJob {
    pub id: JobId,
    pub document: Value,
    pub status: String,
}

/// Everything that survives a power cut, plus the cloud and the server.
#[derive(Debug)]
pub struct World {
    pub slots: [Slot; 2],
    pub boot: usize,
    pub running: usize,
    pub storage: Option<Vec<u8>>,
    /// Known images by digest, so finished slots know their version.
    pub images: Vec<(Sha256Digest, FirmwareVersion)>,
    /// Images the HTTP server holds, by URL.
    pub served: Vec<(String, Vec<u8>)>,
    pub faults: Faults,
    pub broken: BTreeSet<FirmwareVersion>,
    pub jobs: Vec<CloudJob>,
    /// Every status update the cloud accepted or rejected: (job, status, details, accepted).
    pub statuses: Vec<(JobId, String, Value, bool)>,
    pub shadow: Option<Value>,
    /// Every executed action, across boots, and the phase the machine was in before it.
    pub log: Vec<Action>,
    pub phases: Vec<Phase>,
    pub now_ms: u64,
    pub ms_per_chunk: u64,
    pub downloads: u32,
    pub config: DeviceConfig,
}

/// One boot of the device: the machine and its volatile state.
#[derive(Debug)]
pub struct Device {
    pub machine: UpdateMachine,
    writing: Option<Vec<u8>>,
    finished: Option<Vec<u8>>,
    last_chunk: Vec<u8>,
    events: VecDeque<(u32, Owned)>,
    connected: bool,
    generation: u32,
}

#[derive(Debug)]
enum Owned {
    Event(Event<'static>),
    Chunk(Vec<u8>),
    Ended,
    Broke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Rebooted,
    PowerLost,
    Quiet,
}

impl World {
    /// A device running `running` in slot 0 with nothing pending.
    pub fn new(running: &str) -> Self {
        let empty = Slot { version: None, state: Sim::Empty };
        World {
            slots: [Slot { version: Some(v(running)), state: Sim::Valid }, empty],
            boot: 0,
            running: 0,
            storage: None,
            images: Vec::new(),
            served: Vec::new(),
            faults: Faults::default(),
            broken: BTreeSet::new(),
            jobs: Vec::new(),
            statuses: Vec::new(),
            shadow: None,
            log: Vec::new(),
            phases: Vec::new(),
            now_ms: 0,
            ms_per_chunk: 1000,
            downloads: 0,
            config: config(),
        }
    }

    /// Queues a job for `version` served from an image of `len` bytes.
    pub fn offer(&mut self, id: &str, version: &str, len: usize) -> Value {
        let img = image(version, len);
        self.images.push((digest(&img), v(version)));
        let doc = document(version, &img);
        self.served.push((doc["firmware"]["url"].as_str().unwrap().to_string(), img));
        self.offer_document(id, doc.clone());
        doc
    }

    pub fn offer_document(&mut self, id: &str, document: Value) {
        self.jobs.push(CloudJob { id: JobId::parse(id).unwrap(), document, status: "QUEUED".into() });
    }

    pub fn running_version(&self) -> FirmwareVersion {
        self.slots[self.running].version.clone().unwrap()
    }

    pub fn pending(&self) -> Option<PendingJob> {
        self.storage.as_deref().and_then(PendingJob::from_bytes)
    }

    pub fn final_status(&self, id: &str) -> Option<(String, Value)> {
        self.statuses
            .iter()
            .filter(|(j, s, _, ok)| j.as_str() == id && *ok && s != "IN_PROGRESS")
            .map(|(_, s, d, _)| (s.clone(), d.clone()))
            .next_back()
    }

    pub fn executed(&self, kind: ActionKind) -> usize {
        self.log.iter().filter(|a| a.kind() == kind).count()
    }

    /// Powers on: the bootloader picks a slot (rolling back an image that booted before and
    /// was never confirmed) and the machine gets `Booted`.
    pub fn power_on(&mut self) -> Device {
        let b = self.boot;
        self.running = match self.slots[b].state {
            Sim::Valid => b,
            Sim::New => {
                self.slots[b].state = Sim::PendingVerify;
                b
            }
            Sim::PendingVerify | Sim::Invalid | Sim::Empty => {
                if self.slots[b].state == Sim::PendingVerify {
                    self.slots[b].state = Sim::Invalid;
                }
                self.boot = 1 - b;
                1 - b
            }
        };
        let map = |s: Sim| match s {
            Sim::Valid => SlotState::Valid,
            Sim::New | Sim::PendingVerify => SlotState::Unverified,
            Sim::Invalid => SlotState::Invalid,
            Sim::Empty => SlotState::Empty,
        };
        let r = &self.slots[self.running];
        let info = BootInfo {
            running: RunningImage {
                version: r.version.clone().unwrap(),
                slot: format!("ota_{}", self.running),
                state: map(r.state),
            },
            update_slot_state: map(self.slots[1 - self.running].state),
            update_slot_size: SLOT_SIZE,
            pending: self.pending(),
        };
        let mut machine = UpdateMachine::new(self.config.clone());
        machine.handle(Event::Booted(info));
        Device {
            machine,
            writing: None,
            finished: None,
            last_chunk: Vec::new(),
            events: VecDeque::new(),
            connected: false,
            generation: 0,
        }
    }

    /// Runs one boot until it reboots, goes quiet, or loses power before executing the
    /// action numbered `cut` (counted across the whole world log).
    pub fn run(&mut self, dev: &mut Device, cut: Option<usize>) -> Stop {
        loop {
            while let Some(action) = dev.machine.poll_action() {
                if cut == Some(self.log.len()) {
                    return Stop::PowerLost;
                }
                self.log.push(action.clone());
                self.phases.push(dev.machine.phase());
                if let Some(stop) = self.execute(dev, action) {
                    return stop;
                }
            }
            if let Some((generation, ev)) = dev.events.pop_front() {
                match ev {
                    Owned::Chunk(_) | Owned::Ended | Owned::Broke if generation != dev.generation => {}
                    Owned::Event(e) => dev.machine.handle(e),
                    Owned::Chunk(bytes) => {
                        self.now_ms += self.ms_per_chunk;
                        dev.machine.handle(Event::Chunk { bytes: &bytes, now_ms: self.now_ms });
                        dev.last_chunk = bytes;
                    }
                    Owned::Ended => dev.machine.handle(Event::DownloadEnded { now_ms: self.now_ms }),
                    Owned::Broke => dev.machine.handle(Event::DownloadBroke { now_ms: self.now_ms }),
                }
                continue;
            }
            if !dev.connected {
                dev.connected = true;
                let broken = self.broken.contains(&self.running_version());
                let ev = if broken && dev.machine.phase() == Phase::SelfTest {
                    Event::SelfTestFailed
                } else {
                    Event::Connected
                };
                dev.machine.handle(ev);
                continue;
            }
            return Stop::Quiet;
        }
    }

    /// Boots and runs until the device is quiet, with at most one power cut.
    pub fn run_to_quiet(&mut self, mut cut: Option<usize>) -> bool {
        let mut lost = false;
        for _ in 0..10 {
            let mut dev = self.power_on();
            match self.run(&mut dev, cut) {
                Stop::Quiet => return lost,
                Stop::PowerLost => {
                    lost = true;
                    cut = None;
                }
                Stop::Rebooted => {}
            }
        }
        panic!("the device never settled: {:?}", self.log.iter().map(Action::kind).collect::<Vec<_>>());
    }

    fn execute(&mut self, dev: &mut Device, action: Action) -> Option<Stop> {
        let update = 1 - self.running;
        let g = dev.generation;
        match action {
            Action::Subscribe { .. } => {}
            Action::Publish { topic, payload } => {
                let reply = self.cloud(&topic, &payload);
                dev.events.extend(reply.into_iter().map(|e| (g, Owned::Event(e))));
            }
            Action::BeginUpdate => {
                self.slots[update] = Slot { version: None, state: Sim::Empty };
                dev.writing = Some(Vec::new());
            }
            Action::Download { url, offset } => {
                dev.generation += 1;
                self.downloads += 1;
                let g = dev.generation;
                dev.events.extend(self.serve(&url, offset).into_iter().map(|e| (g, e)));
            }
            Action::WriteChunk { offset, len } => {
                let w = dev.writing.as_mut().expect("write without BeginUpdate");
                assert_eq!(w.len() as u64, offset, "chunks are written in order");
                assert_eq!(dev.last_chunk.len(), len);
                w.extend_from_slice(&dev.last_chunk);
                assert!(w.len() as u64 <= SLOT_SIZE);
            }
            Action::FinishUpdate => {
                let bytes = dev.writing.take().expect("finish without BeginUpdate");
                let d = digest(&bytes);
                let version = self.images.iter().find(|(i, _)| *i == d).map(|(_, v)| v.clone());
                self.slots[update] = Slot { version, state: Sim::New };
                dev.finished = Some(bytes);
            }
            Action::AbortUpdate => {
                dev.writing = None;
                self.slots[update] = Slot { version: None, state: Sim::Empty };
            }
            Action::PersistPending(p) => self.storage = Some(p.to_bytes()),
            Action::ClearPending => self.storage = None,
            Action::SetBootSlot => {
                assert!(dev.finished.is_some() && self.slots[update].version.is_some(), "activate an unfinished slot");
                self.boot = update;
            }
            Action::Reboot => return Some(Stop::Rebooted),
            Action::MarkSlotValid => self.slots[self.running].state = Sim::Valid,
            Action::MarkSlotInvalidAndReboot => {
                self.slots[self.running].state = Sim::Invalid;
                self.boot = update;
                return Some(Stop::Rebooted);
            }
        }
        None
    }

    fn serve(&mut self, url: &str, offset: u64) -> Vec<Owned> {
        let Some((_, image)) = self.served.iter().find(|(u, _)| u == url) else {
            return vec![Owned::Event(Event::DownloadRefused { status: 404 })];
        };
        if let Some(status) = self.faults.refuse {
            return vec![Owned::Event(Event::DownloadRefused { status })];
        }
        if offset >= image.len() as u64 {
            return vec![Owned::Event(Event::DownloadRefused { status: 416 })];
        }
        let mut end = image.len() as u64;
        let mut broke = false;
        if let Some(at) = self.faults.break_once_at.take().filter(|at| *at > offset && *at < end) {
            (end, broke) = (at, true);
        }
        if let Some(n) = self.faults.break_every.filter(|n| offset + n < end) {
            (end, broke) = (offset + n, true);
        }
        let mut body = image[offset as usize..end as usize].to_vec();
        if let Some(at) = self.faults.corrupt_at.filter(|at| (offset..end).contains(at)) {
            body[(at - offset) as usize] ^= 0xff;
        }
        let mut out: Vec<Owned> = body.chunks(CHUNK).map(|c| Owned::Chunk(c.to_vec())).collect();
        out.push(if broke { Owned::Broke } else { Owned::Ended });
        out
    }

    /// The cloud side of one publish: the Jobs API and the shadow.
    fn cloud(&mut self, topic: &str, payload: &str) -> Vec<Event<'static>> {
        let body: Value = serde_json::from_str(payload).expect("the device publishes JSON");
        let request = topics::parse_for(THING, topic).expect("the device publishes on its own topics");
        if request == ThingTopic::Shadow(ShadowTopic::classic(ShadowOp::Update)) {
            self.shadow = Some(body["state"]["reported"].clone());
            return vec![];
        }
        if request == ThingTopic::Jobs(JobsTopic::Get(topics::NEXT_JOB, None)) {
            let next = self.jobs.iter().find(|j| j.status == "QUEUED" || j.status == "IN_PROGRESS");
            let exec = next.map(|j| JobExecution {
                job_id: j.id.clone(),
                status: j.status.clone(),
                document: j.document.clone(),
            });
            return vec![Event::NextJob(exec)];
        }
        let ThingTopic::Jobs(JobsTopic::Update(id, None)) = request else {
            panic!("not a request the cloud serves: {topic}")
        };
        let status = body["status"].as_str().unwrap().to_string();
        let details = body["statusDetails"].clone();
        let job = self.jobs.iter_mut().find(|j| j.id.as_str() == id).expect("a known job");
        let job_id = job.id.clone();
        let terminal = !matches!(job.status.as_str(), "QUEUED" | "IN_PROGRESS");
        self.statuses.push((job_id.clone(), status.clone(), details, !terminal));
        if terminal {
            return vec![Event::UpdateRejected { job_id, code: "InvalidStateTransition".into() }];
        }
        job.status = status.clone();
        vec![Event::UpdateAccepted { job_id, status: Some(status) }]
    }
}
