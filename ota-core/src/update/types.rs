//! The vocabulary of the update state machine: what the device tells it (events), what it
//! asks the device to do (actions), and the small record that survives a reboot.

use serde::{Deserialize, Serialize};

use crate::job::JobExecution;
use crate::names::{DeviceType, JobId, ThingName};
use crate::signing::KeyRing;
use crate::version::FirmwareVersion;

/// The storage key of the pending job. NVS keys are at most 15 characters.
pub const PENDING_JOB_KEY: &str = "ota_pending";

/// What the machine knows about the device it runs on. Fixed for one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub thing: ThingName,
    pub device_type: DeviceType,
    /// HTTP requests allowed for one image (the first plus resumes) before `download_failed`.
    pub max_download_attempts: u32,
    pub progress: ProgressPolicy,
    /// Keys whose signature lets an image in. Not empty: every image must be signed by one
    /// of them (checked over the streamed digest before the boot slot switches). Empty: the
    /// device checks digests only, as before signing.
    pub trust: KeyRing,
    /// The anti-rollback floor (ESP-IDF's eFuse `secure_version`): images below it are refused.
    pub security_floor: u32,
}

impl DeviceConfig {
    /// Defaults: 5 download attempts, progress every 10 % and at most every 5 s.
    pub fn new(thing: ThingName, device_type: DeviceType) -> Self {
        DeviceConfig {
            thing,
            device_type,
            max_download_attempts: 5,
            progress: ProgressPolicy::default(),
            trust: KeyRing::default(),
            security_floor: 0,
        }
    }
}

/// How often `IN_PROGRESS` progress is reported. Both bounds must be met (the later one
/// wins), so a fast download sends one message per step and a slow one does not flood the
/// broker: AWS bills and throttles per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressPolicy {
    pub percent_step: u8,
    pub min_interval_ms: u64,
}

impl Default for ProgressPolicy {
    fn default() -> Self {
        ProgressPolicy { percent_step: 10, min_interval_ms: 5_000 }
    }
}

/// The bootloader's view of an image slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    /// Confirmed by a passed self-test (or the factory image).
    Valid,
    /// Written, or booted but not yet confirmed; a reboot before confirmation rolls back.
    Unverified,
    /// Refused or rolled back by the bootloader.
    Invalid,
    /// Erased or never written.
    Empty,
}

/// The image this boot is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningImage {
    pub version: FirmwareVersion,
    /// The partition label, `ota_0` or `ota_1`; reported in the shadow.
    pub slot: String,
    pub state: SlotState,
}

/// Everything read from flash and storage at boot, before the network is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    pub running: RunningImage,
    /// State of the other slot: `Invalid` right after the bootloader rolled back.
    pub update_slot_state: SlotState,
    /// Capacity of the other slot in bytes.
    pub update_slot_size: u64,
    /// The record persisted before the last reboot into a new image, if any.
    pub pending: Option<PendingJob>,
}

/// Persisted just before the boot slot is switched: enough for whichever image boots next
/// to finish the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJob {
    pub job_id: JobId,
    pub target: FirmwareVersion,
    pub previous: FirmwareVersion,
}

impl PendingJob {
    /// The bytes stored under [`PENDING_JOB_KEY`].
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored record; a record that does not parse counts as none (a torn write
    /// must not keep a device from booting).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What happened. Time arrives in events (`now_ms`, any monotonic origin); the machine never
/// reads a clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// First event of every boot.
    Booted(BootInfo),
    /// The MQTT session is up. On an unverified image this is the passed self-test.
    Connected,
    Disconnected,
    /// The device could not prove the new image works (no MQTT within its deadline).
    SelfTestFailed,
    /// `notify-next`: the next pending job changed (`None`: there is none).
    JobNotified(Option<JobExecution>),
    /// `$next/get/accepted`.
    NextJob(Option<JobExecution>),
    /// `jobs/{jobId}/update/accepted`, with the status it accepted (`executionState.status`)
    /// when the cloud says: a late reply to an earlier update must not pass for the ack of
    /// a later one.
    UpdateAccepted {
        job_id: JobId,
        status: Option<String>,
    },
    /// `jobs/{jobId}/update/rejected`, with AWS's error code.
    UpdateRejected {
        job_id: JobId,
        code: String,
    },
    /// The next bytes of the image, in order, from the last `Download`'s offset.
    Chunk {
        bytes: &'a [u8],
        now_ms: u64,
    },
    /// The HTTP body ended normally.
    DownloadEnded {
        now_ms: u64,
    },
    /// The connection failed or the body was cut short; the download can resume.
    DownloadBroke {
        now_ms: u64,
    },
    /// The server refused the request (4xx): retrying will not help.
    DownloadRefused {
        status: u16,
    },
    /// An action that touches flash or storage failed.
    ActionFailed {
        action: ActionKind,
        detail: String,
    },
}

/// What the device should do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Subscribe {
        topic: String,
    },
    Publish {
        topic: String,
        payload: String,
    },
    /// Open (and erase) the inactive slot for writing.
    BeginUpdate,
    /// GET `url`, with `Range: bytes={offset}-` when `offset` > 0.
    Download {
        url: String,
        offset: u64,
    },
    /// Write all bytes of the `Chunk` event just handled at `offset` of the inactive slot.
    WriteChunk {
        offset: u64,
        len: usize,
    },
    /// Close the slot: the image is complete and verified.
    FinishUpdate,
    /// Discard what was written; the running image stays as it is.
    AbortUpdate,
    PersistPending(PendingJob),
    ClearPending,
    /// Make the finished slot the one the bootloader starts next (as unverified).
    SetBootSlot,
    Reboot,
    MarkSlotValid,
    /// Only returns on failure; the bootloader then starts the previous image.
    MarkSlotInvalidAndReboot,
}

/// An action without its data: for failure reports, logs and power-loss enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    Subscribe,
    Publish,
    BeginUpdate,
    Download,
    WriteChunk,
    FinishUpdate,
    AbortUpdate,
    PersistPending,
    ClearPending,
    SetBootSlot,
    Reboot,
    MarkSlotValid,
    MarkSlotInvalidAndReboot,
}

impl Action {
    /// The kind of this action.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Subscribe { .. } => ActionKind::Subscribe,
            Action::Publish { .. } => ActionKind::Publish,
            Action::BeginUpdate => ActionKind::BeginUpdate,
            Action::Download { .. } => ActionKind::Download,
            Action::WriteChunk { .. } => ActionKind::WriteChunk,
            Action::FinishUpdate => ActionKind::FinishUpdate,
            Action::AbortUpdate => ActionKind::AbortUpdate,
            Action::PersistPending(_) => ActionKind::PersistPending,
            Action::ClearPending => ActionKind::ClearPending,
            Action::SetBootSlot => ActionKind::SetBootSlot,
            Action::Reboot => ActionKind::Reboot,
            Action::MarkSlotValid => ActionKind::MarkSlotValid,
            Action::MarkSlotInvalidAndReboot => ActionKind::MarkSlotInvalidAndReboot,
        }
    }
}

/// Where the machine is; the agent uses it to pick what to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting for `Booted`.
    Booting,
    /// Running an unverified image; waiting for MQTT (the self-test).
    SelfTest,
    /// No update in progress.
    Idle,
    /// Streaming an image into the inactive slot.
    Downloading,
    /// Verified: finishing, persisting, switching the boot slot, rebooting.
    Installing,
    /// Self-test failed; marking the image invalid and rebooting.
    RollingBack,
}
