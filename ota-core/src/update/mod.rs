//! The device update state machine, sans-IO: events in, actions out (the quinn-proto shape).
//!
//! It holds every decision of a device update (which job to take, when to refuse, when the
//! image is good, what to report, what to persist before a reboot) and performs none of the
//! I/O. The device agent feeds it MQTT messages, HTTP chunks and boot facts, and executes the
//! [`Action`]s it returns in order, so every edge case (including power loss between any two
//! actions) is a unit test.
//!
//! The protocol is the AWS IoT Jobs MQTT API and the classic shadow. The order of actions
//! around a reboot is what makes power loss safe: the image is finished and verified, then
//! the pending job is persisted, then the boot slot is switched, then the device reboots.
//! Whatever image boots next finds the pending job and can finish or fail it.

mod topics;
mod types;

#[cfg(test)]
mod power_loss;
#[cfg(test)]
mod signed;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use topics::Topics;
pub use types::{
    Action, ActionKind, BootInfo, DeviceConfig, Event, PENDING_JOB_KEY, PendingJob, Phase, ProgressPolicy,
    RunningImage, SlotState,
};

use crate::integrity::{Mismatch, Sha256Verifier};
use crate::job::{self, JobExecution, JobStatus, Rejection, UpdateJob};
use crate::names::JobId;
use crate::signing::SignatureError;
use crate::version::FirmwareVersion;

/// One device's update logic. Feed it with [`UpdateMachine::handle`], drain it with
/// [`UpdateMachine::poll_action`] after every event.
#[derive(Debug)]
pub struct UpdateMachine {
    config: DeviceConfig,
    topics: Topics,
    state: State,
    running: Option<RunningImage>,
    update_slot_size: u64,
    /// A job from before the last reboot whose final status is not yet acknowledged.
    report: Option<Report>,
    /// Pending record read at boot of an unverified image, settled after the self-test.
    boot_pending: Option<(PendingJob, SlotState)>,
    /// The last job this boot ended, so redeliveries of it are ignored.
    finished: Option<JobId>,
    actions: VecDeque<Action>,
}

#[derive(Debug)]
enum State {
    Booting,
    SelfTest,
    Idle,
    Downloading(Box<Download>),
    /// The image is written and verified, but the cloud has not yet accepted this job's
    /// IN_PROGRESS: the execution may have been canceled meanwhile, so nothing is installed
    /// until it says go (an accepted status update) or no (a rejection, another next job).
    Verified(Box<UpdateJob>),
    Installing {
        pending: PendingJob,
    },
    RollingBack,
}

#[derive(Debug)]
struct Download {
    job: UpdateJob,
    verifier: Sha256Verifier,
    received: u64,
    attempts: u32,
    /// The cloud accepted an IN_PROGRESS for this job: the execution is ours.
    accepted: bool,
    reported_percent: u64,
    reported_at_ms: u64,
}

#[derive(Debug, Clone)]
struct Report {
    pending: PendingJob,
    status: JobStatus,
    details: Vec<(&'static str, String)>,
}

impl UpdateMachine {
    /// A machine waiting for [`Event::Booted`].
    pub fn new(config: DeviceConfig) -> Self {
        let topics = Topics::new(&config.thing);
        UpdateMachine {
            config,
            topics,
            state: State::Booting,
            running: None,
            update_slot_size: 0,
            report: None,
            boot_pending: None,
            finished: None,
            actions: VecDeque::new(),
        }
    }

    /// The topics this machine publishes and subscribes to.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Where the machine is.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Booting => Phase::Booting,
            State::SelfTest => Phase::SelfTest,
            State::Idle => Phase::Idle,
            State::Downloading(_) | State::Verified(_) => Phase::Downloading,
            State::Installing { .. } => Phase::Installing,
            State::RollingBack => Phase::RollingBack,
        }
    }

    /// The version this boot runs, once booted.
    pub fn running_version(&self) -> Option<&FirmwareVersion> {
        self.running.as_ref().map(|r| &r.version)
    }

    /// The next action to execute, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Parses an MQTT message and handles it; messages on other topics are ignored.
    pub fn handle_message(&mut self, topic: &str, payload: &[u8]) {
        if let Some(event) = self.topics.parse(topic, payload) {
            self.handle(event);
        }
    }

    /// Advances the machine by one event.
    pub fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Booted(info) => self.on_booted(info),
            Event::Connected => self.on_connected(),
            Event::Disconnected => {}
            Event::SelfTestFailed => {
                if matches!(self.state, State::SelfTest) {
                    self.state = State::RollingBack;
                    self.push(Action::MarkSlotInvalidAndReboot);
                }
            }
            Event::JobNotified(exec) | Event::NextJob(exec) => self.on_job(exec),
            Event::UpdateAccepted { job_id, status } => {
                // The reply to a report still pending must be for that report's status.
                let stale = self.report.as_ref().is_some_and(|r| {
                    r.pending.job_id == job_id && status.as_deref().is_some_and(|s| s != r.status.as_str())
                });
                if !stale {
                    self.on_update_reply(job_id, true);
                }
            }
            Event::UpdateRejected { job_id, .. } => self.on_update_reply(job_id, false),
            Event::Chunk { bytes, now_ms } => self.on_chunk(bytes, now_ms),
            Event::DownloadEnded { now_ms } => self.on_download_ended(now_ms),
            Event::DownloadBroke { now_ms } => self.on_download_broke(now_ms),
            Event::DownloadRefused { status } => {
                if let State::Downloading(d) = &self.state {
                    let details = vec![("reason", "download_failed".into()), ("httpStatus", status.to_string())];
                    let id = d.job.job_id.clone();
                    self.fail_download(id, details);
                }
            }
            Event::ActionFailed { action, detail } => self.on_action_failed(action, detail),
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn publish(&mut self, topic: String, payload: String) {
        self.push(Action::Publish { topic, payload });
    }

    fn publish_status(&mut self, job_id: &JobId, status: JobStatus, details: &[(&str, String)]) {
        let topic = self.topics.update(job_id);
        self.publish(topic, job::status_update_payload(status, details));
        if status.is_terminal() {
            self.finished = Some(job_id.clone());
        }
    }

    fn running_version_string(&self) -> String {
        self.running.as_ref().map(|r| r.version.to_string()).unwrap_or_default()
    }

    fn on_booted(&mut self, info: BootInfo) {
        if !matches!(self.state, State::Booting) {
            return;
        }
        self.update_slot_size = info.update_slot_size;
        let unverified = info.running.state != SlotState::Valid;
        self.running = Some(info.running);
        if unverified {
            // Nothing is decided before the self-test: the pending job is settled by
            // whichever image ends up confirmed.
            self.boot_pending = info.pending.map(|p| (p, info.update_slot_state));
            self.state = State::SelfTest;
        } else {
            self.state = State::Idle;
            if let Some(p) = info.pending {
                self.settle_pending(p, info.update_slot_state);
            }
        }
    }

    /// Decides what a pending job from the last boot means now that a valid image runs.
    fn settle_pending(&mut self, pending: PendingJob, update_slot_state: SlotState) {
        let running = self.running_version_string();
        if self.running_version() == Some(&pending.target) {
            let details = vec![("firmwareVersion", running)];
            self.report = Some(Report { pending, status: JobStatus::Succeeded, details });
        } else if update_slot_state == SlotState::Invalid {
            // The bootloader rolled back: the new image booted and was never confirmed.
            let details = vec![
                ("reason", "boot_failed".to_string()),
                ("firmwareVersion", running),
                ("targetVersion", pending.target.to_string()),
            ];
            self.report = Some(Report { pending, status: JobStatus::Failed, details });
        } else {
            // Power was lost after persisting but before the boot slot switched: the new
            // image never ran. Forget the record; the job, still IN_PROGRESS in the cloud,
            // comes back through `$next/get` and starts over.
            self.push(Action::ClearPending);
        }
    }

    fn on_connected(&mut self) {
        if matches!(self.state, State::SelfTest) {
            self.push(Action::MarkSlotValid);
            if let Some(r) = self.running.as_mut() {
                r.state = SlotState::Valid;
            }
            self.state = State::Idle;
            if let Some((p, slot)) = self.boot_pending.take() {
                self.settle_pending(p, slot);
            }
        }
        if matches!(self.state, State::Booting | State::RollingBack) {
            return;
        }
        self.push(Action::Subscribe { topic: self.topics.notify_next() });
        self.push(Action::Subscribe { topic: self.topics.next_get_accepted() });
        for topic in self.topics.update_replies() {
            self.push(Action::Subscribe { topic });
        }
        self.publish_shadow();
        match self.report.clone() {
            // The next job is asked for once this report is acknowledged, so `$next/get`
            // does not hand back the job being reported.
            Some(r) => self.publish_status(&r.pending.job_id, r.status, &r.details),
            None if matches!(self.state, State::Idle) => self.ask_next_job(),
            // Mid-update, the cloud may have lost what we sent (a restart) or canceled the
            // job meanwhile: its answer either confirms the job or ends it.
            None if matches!(self.state, State::Downloading(_) | State::Verified(_)) => self.ask_next_job(),
            None => {}
        }
    }

    fn publish_shadow(&mut self) {
        let Some(running) = &self.running else { return };
        let mut reported = serde_json::json!({
            "firmwareVersion": running.version.to_string(),
            "deviceType": self.config.device_type.as_str(),
            "slot": running.slot,
        });
        if self.config.security_floor > 0 {
            reported["securityVersion"] = self.config.security_floor.into();
        }
        let payload = serde_json::json!({"state": {"reported": reported}}).to_string();
        self.publish(self.topics.shadow_update().to_string(), payload);
    }

    fn ask_next_job(&mut self) {
        self.publish(self.topics.next_get(), r#"{"clientToken":"ota-next"}"#.to_string());
    }

    fn on_job(&mut self, exec: Option<JobExecution>) {
        let same_as = |id: &Option<JobId>, exec: &Option<JobExecution>| match (id, exec) {
            (Some(a), Some(e)) => *a == e.job_id,
            _ => false,
        };
        if same_as(&self.report.as_ref().map(|r| r.pending.job_id.clone()), &exec) || same_as(&self.finished, &exec) {
            return;
        }
        match &self.state {
            State::Idle => {}
            State::Downloading(d) => {
                if same_as(&Some(d.job.job_id.clone()), &exec) {
                    return;
                }
                // Our job is no longer the next one: it was cancelled or timed out.
                self.push(Action::AbortUpdate);
                self.state = State::Idle;
            }
            State::Verified(job) => {
                if let Some(e) = exec.as_ref().filter(|e| e.job_id == job.job_id) {
                    if e.status == JobStatus::InProgress.as_str() {
                        // The cloud holds the execution in progress: that is the go-ahead.
                        let State::Verified(job) = std::mem::replace(&mut self.state, State::Idle) else { return };
                        self.install(*job);
                    } else {
                        // Our IN_PROGRESS never arrived; say it again and keep waiting.
                        let id = job.job_id.clone();
                        let details = [("step", "verified".to_string()), ("progress", "100".to_string())];
                        self.publish_status(&id, JobStatus::InProgress, &details);
                    }
                    return;
                }
                self.push(Action::AbortUpdate);
                self.state = State::Idle;
            }
            _ => return,
        }
        if let Some(exec) = exec {
            self.start_job(exec);
        }
    }

    fn start_job(&mut self, exec: JobExecution) {
        let Some(running) = self.running.clone() else { return };
        let validated =
            job::validate(exec.job_id.clone(), &exec.document, &self.config.device_type, self.update_slot_size)
                .and_then(|job| {
                    if job.version < running.version && !job.rollback {
                        Err(Rejection::Downgrade { running: running.version.clone(), target: job.version })
                    } else if job.firmware.security_version < self.config.security_floor {
                        Err(Rejection::SecurityVersionTooLow {
                            floor: self.config.security_floor,
                            version: job.version,
                            image: job.firmware.security_version,
                        })
                    } else {
                        Ok(job)
                    }
                });
        let job = match validated {
            Ok(job) => job,
            Err(rejection) => {
                let details = [("reason", rejection.code().to_string()), ("detail", rejection.to_string())];
                self.publish_status(&exec.job_id, JobStatus::Rejected, &details);
                return;
            }
        };
        if job.version == running.version {
            // Repeating a rollout is harmless: the device already has what it asks for.
            let details = [("reason", "already_installed".to_string()), ("firmwareVersion", job.version.to_string())];
            self.publish_status(&job.job_id, JobStatus::Succeeded, &details);
            return;
        }
        let details = [
            ("step", "downloading".to_string()),
            ("progress", "0".to_string()),
            ("targetVersion", job.version.to_string()),
        ];
        self.publish_status(&job.job_id, JobStatus::InProgress, &details);
        self.push(Action::BeginUpdate);
        self.push(Action::Download { url: job.firmware.url.clone(), offset: 0 });
        self.state = State::Downloading(Box::new(Download {
            job,
            verifier: Sha256Verifier::new(),
            received: 0,
            attempts: 1,
            accepted: false,
            reported_percent: 0,
            reported_at_ms: 0,
        }));
    }

    fn on_chunk(&mut self, bytes: &[u8], now_ms: u64) {
        let State::Downloading(d) = &mut self.state else { return };
        let offset = d.received;
        let total = offset + bytes.len() as u64;
        if total > d.job.firmware.size {
            // More bytes than the job promised: this is not the image, whatever it is.
            let details = vec![
                ("reason", "sha256_mismatch".to_string()),
                ("expectedSize", d.job.firmware.size.to_string()),
                ("actualSize", format!("more than {}", d.job.firmware.size)),
            ];
            let id = d.job.job_id.clone();
            self.fail_download(id, details);
            return;
        }
        d.verifier.update(bytes);
        d.received = total;
        self.push(Action::WriteChunk { offset, len: bytes.len() });
        self.maybe_report_progress(now_ms);
    }

    fn maybe_report_progress(&mut self, now_ms: u64) {
        let policy = self.config.progress;
        let State::Downloading(d) = &mut self.state else { return };
        let size = d.job.firmware.size;
        let percent = d.received.saturating_mul(100) / size;
        let step_reached = percent >= d.reported_percent + u64::from(policy.percent_step.max(1));
        let interval_passed = now_ms.saturating_sub(d.reported_at_ms) >= policy.min_interval_ms;
        if !(step_reached && interval_passed) || d.received == size {
            return;
        }
        d.reported_percent = percent;
        d.reported_at_ms = now_ms;
        let details = [
            ("step", "downloading".to_string()),
            ("progress", percent.to_string()),
            ("bytes", d.received.to_string()),
            ("size", size.to_string()),
        ];
        let id = d.job.job_id.clone();
        self.publish_status(&id, JobStatus::InProgress, &details);
    }

    fn on_download_ended(&mut self, now_ms: u64) {
        let State::Downloading(d) = &self.state else { return };
        if d.received < d.job.firmware.size {
            // A body shorter than the image is a cut connection, whatever the headers said.
            return self.on_download_broke(now_ms);
        }
        let State::Downloading(d) = std::mem::replace(&mut self.state, State::Idle) else { return };
        let Download { job, verifier, accepted, .. } = *d;
        let verified = verifier.verify(&job.firmware.sha256, job.firmware.size);
        if verified.is_ok()
            && let Err(e) = self.check_signature(&job)
        {
            // The bytes are what the document says, but nobody we trust vouched for them:
            // the slot is discarded and the old image keeps running.
            self.push(Action::AbortUpdate);
            let mut details = vec![("reason", SignatureError::CODE.to_string()), ("detail", e.to_string())];
            if let Some(k) = e.key_id() {
                details.push(("keyId", k.to_hex()));
            }
            self.publish_status(&job.job_id, JobStatus::Failed, &details);
            return;
        }
        match verified {
            Ok(()) if accepted => self.install(job),
            Ok(()) => {
                // Ask for the go-ahead: our first IN_PROGRESS may have been lost (a cloud
                // restart), and only an accepted status update makes the execution ours.
                let details = [("step", "verified".to_string()), ("progress", "100".to_string())];
                self.publish_status(&job.job_id, JobStatus::InProgress, &details);
                self.state = State::Verified(Box::new(job));
            }
            Err(mismatch) => {
                self.push(Action::AbortUpdate);
                let details = match mismatch {
                    Mismatch::Digest { expected, actual } => vec![
                        ("reason", "sha256_mismatch".to_string()),
                        ("expected", expected.to_hex()),
                        ("actual", actual.to_hex()),
                    ],
                    Mismatch::Size { expected, actual } => vec![
                        ("reason", "sha256_mismatch".to_string()),
                        ("expectedSize", expected.to_string()),
                        ("actualSize", actual.to_string()),
                    ],
                };
                self.publish_status(&job.job_id, JobStatus::Failed, &details);
            }
        }
    }

    /// The job's signature over its (just verified) digest, when this device trusts keys.
    fn check_signature(&self, job: &UpdateJob) -> Result<(), SignatureError> {
        let ring = &self.config.trust;
        if ring.trusted().is_empty() {
            return Ok(());
        }
        let signature = job.firmware.signature.as_ref().ok_or(SignatureError::Missing)?;
        ring.verify(&job.firmware.sha256, signature).map(|_| ())
    }

    fn install(&mut self, job: UpdateJob) {
        let pending = PendingJob {
            job_id: job.job_id.clone(),
            target: job.version.clone(),
            previous: self.running_version_or_default(),
        };
        self.push(Action::FinishUpdate);
        self.push(Action::PersistPending(pending.clone()));
        let details = [("step", "rebooting".to_string()), ("progress", "100".to_string())];
        self.publish_status(&job.job_id, JobStatus::InProgress, &details);
        self.push(Action::SetBootSlot);
        self.push(Action::Reboot);
        self.state = State::Installing { pending };
    }

    fn running_version_or_default(&self) -> FirmwareVersion {
        self.running.as_ref().map(|r| r.version.clone()).unwrap_or_else(|| FirmwareVersion::new(0, 0, 0))
    }

    fn on_download_broke(&mut self, _now_ms: u64) {
        let State::Downloading(d) = &mut self.state else { return };
        if d.attempts >= self.config.max_download_attempts {
            let details = vec![
                ("reason", "download_failed".to_string()),
                ("attempts", d.attempts.to_string()),
                ("bytes", d.received.to_string()),
            ];
            let id = d.job.job_id.clone();
            return self.fail_download(id, details);
        }
        d.attempts += 1;
        let (url, offset) = (d.job.firmware.url.clone(), d.received);
        self.push(Action::Download { url, offset });
    }

    /// Ends a download that cannot succeed: discard the slot, report FAILED.
    fn fail_download(&mut self, job_id: JobId, details: Vec<(&'static str, String)>) {
        self.actions.clear();
        self.push(Action::AbortUpdate);
        self.state = State::Idle;
        self.publish_status(&job_id, JobStatus::Failed, &details);
    }

    fn on_update_reply(&mut self, job_id: JobId, accepted: bool) {
        // Accepted or rejected, the cloud will not take this report again (a rejection of
        // a final status means the execution already ended), so the record can go.
        if self.report.as_ref().is_some_and(|r| r.pending.job_id == job_id) {
            self.report = None;
            self.push(Action::ClearPending);
            self.ask_next_job();
            return;
        }
        if let State::Downloading(d) = &mut self.state
            && d.job.job_id == job_id
        {
            if accepted {
                d.accepted = true;
                return;
            }
            // The cloud refused our IN_PROGRESS: the execution was cancelled or removed.
            self.actions.clear();
            self.push(Action::AbortUpdate);
            self.state = State::Idle;
            return;
        }
        if let State::Verified(job) = &self.state
            && job.job_id == job_id
        {
            let State::Verified(job) = std::mem::replace(&mut self.state, State::Idle) else { return };
            if accepted {
                self.install(*job);
            } else {
                self.push(Action::AbortUpdate);
            }
            return;
        }
        if accepted && matches!(self.state, State::Idle) && self.finished.as_ref() == Some(&job_id) {
            self.ask_next_job();
        }
    }

    fn on_action_failed(&mut self, action: ActionKind, detail: String) {
        self.actions.clear();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Downloading(d) => {
                let details = vec![("reason", "flash_error".to_string()), ("detail", detail)];
                if action == ActionKind::BeginUpdate {
                    self.publish_status(&d.job.job_id, JobStatus::Failed, &details);
                } else {
                    self.fail_download(d.job.job_id.clone(), details);
                }
            }
            State::Installing { pending } => {
                let reason = if action == ActionKind::PersistPending { "storage_error" } else { "flash_error" };
                if action == ActionKind::SetBootSlot {
                    self.push(Action::ClearPending);
                }
                let details = [("reason", reason.to_string()), ("detail", detail)];
                self.publish_status(&pending.job_id, JobStatus::Failed, &details);
            }
            State::Idle if action == ActionKind::MarkSlotValid => {
                // An image that cannot be confirmed would be rolled back at the next reset
                // anyway; do it now so the old image reports boot_failed.
                self.report = None;
                self.state = State::RollingBack;
                self.push(Action::MarkSlotInvalidAndReboot);
            }
            other => self.state = other,
        }
    }
}
