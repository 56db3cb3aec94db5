//! The agent: executes the state machine's actions with embedded-svc traits and feeds it
//! what happens. It holds no update logic of its own; every decision is in
//! `ota_core::update`, so the agent only moves bytes and reports outcomes.
//!
//! Memory is fixed: one chunk buffer, reused for every read; the image only ever exists in
//! the inactive flash slot. A power cut at any point is harmless because the machine orders
//! the durable steps (finish, persist, switch, reboot) and the bootloader does the rest.
//!
//! Beside updates, the agent runs `ota_core::command`'s machine: command executions on the
//! AWS IoT Commands topics, the `config` named shadow (stored under
//! [`ota_core::command::CONFIG_KEY`]), and health and telemetry at the configured interval.
//! What the device does for `identify`, `recalibrate` and its telemetry is the
//! application's ([`Application`]); `reboot` ends [`Agent::run`] with [`Exit::Reboot`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use embedded_svc::http::client::Connection as HttpConnection;
use embedded_svc::io::Write as _;
use embedded_svc::mqtt::client::{Client, Publish, QoS};
use embedded_svc::ota::{Ota, OtaUpdate, OtaUpdateFinished, SlotState as EsvcSlotState};
use embedded_svc::storage::RawStorage;
use ota_core::command::{CONFIG_KEY, Capabilities, CommandAction, CommandEvent, CommandMachine, Health};
use ota_core::update::{
    Action, ActionKind, BootInfo, DeviceConfig, Event, PENDING_JOB_KEY, PendingJob, Phase, RunningImage, SlotState,
    UpdateMachine,
};
use ota_core::version::FirmwareVersion;
use serde_json::{Map, Value};

use crate::download::{self, Body, Refusal};
use crate::mqtt::MqttEvent;

/// Bytes read from HTTP and written to flash at a time: one flash sector.
pub const CHUNK_SIZE: usize = 4096;

/// How the agent runs. Defaults suit a device; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub device: DeviceConfig,
    /// Capacity of the inactive slot (the `ota_1` partition size on the XIAO ESP32S3).
    pub update_slot_size: u64,
    /// A new image that has no MQTT session after this long has failed its self-test.
    pub self_test_timeout: Duration,
    /// How long to wait for an MQTT event before checking deadlines again.
    pub poll_interval: Duration,
    /// Pause before resuming a broken download, so a flapping link is not hammered.
    pub retry_delay: Duration,
    /// Time given to queued QoS 1 publishes (the last status updates) before a reboot:
    /// neither embedded-svc nor ESP-IDF offers a flush, and a restart drops the outbox.
    pub reboot_grace: Duration,
    /// What the firmware declares (its `metadata.json` `commands` and `settings`). Empty:
    /// every command is answered `UNSUPPORTED_COMMAND`.
    pub capabilities: Capabilities,
}

/// The application's part in commands and telemetry. Every method has a default, so a
/// firmware implements only what it declares.
pub trait Application: Send {
    /// `identify`: make the device findable (blink, beep).
    fn identify(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// `recalibrate`: bring the sensors back to their baseline.
    fn recalibrate(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Any other command the firmware declares.
    fn command(&mut self, name: &str, _parameters: &Map<String, Value>) -> Result<(), String> {
        Err(format!("{name} is declared but not implemented by this application"))
    }

    /// The readings and health to report now; `None`: nothing to report.
    fn telemetry(&mut self) -> Option<(Map<String, Value>, Health)> {
        None
    }

    /// The configuration in force: at boot and after every accepted change.
    fn configure(&mut self, _config: &Map<String, Value>) {}
}

/// No application: commands succeed doing nothing, no telemetry.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoApplication;

impl Application for NoApplication {}

impl AgentConfig {
    /// Device defaults: 60 s self-test, 2 s between download attempts.
    pub fn new(device: DeviceConfig, update_slot_size: u64) -> Self {
        AgentConfig {
            device,
            update_slot_size,
            self_test_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            retry_delay: Duration::from_secs(2),
            reboot_grace: Duration::from_secs(1),
            capabilities: Capabilities::default(),
        }
    }
}

/// Why [`Agent::run`] returned normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Restart the device now (`esp_restart()` on the ESP32).
    Reboot,
    /// The stop flag was raised (on the host: the simulated power went off).
    Stopped,
}

/// What stops the agent. Everything else (a failed write, a broken download) is an event
/// the state machine turns into a job status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("cannot read the OTA slots: {0}")]
    Slots(String),
    #[error("the running image carries no valid version ({0:?})")]
    NoVersion(Option<String>),
    #[error("cannot read the pending job from storage: {0}")]
    Storage(String),
    #[error("the MQTT connection is gone for good")]
    MqttClosed,
    #[error("the state machine asked for {0:?} in phase {1:?}; this is a bug")]
    Protocol(ActionKind, Phase),
}

type SelfTest = Box<dyn FnMut() -> bool + Send>;

/// The device agent over MQTT client `M`, HTTP connection `H`, OTA flash `O` and storage `S`.
pub struct Agent<M, H, O, S> {
    machine: UpdateMachine,
    mqtt: M,
    http: H,
    ota: O,
    storage: S,
    events: Receiver<MqttEvent>,
    config: AgentConfig,
    clock: Instant,
    buf: Box<[u8]>,
    self_test: Option<SelfTest>,
    commands: CommandMachine,
    app: Box<dyn Application>,
}

impl<M, H, O, S> fmt::Debug for Agent<M, H, O, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("phase", &self.machine.phase())
            .field("settings", self.commands.config())
            .field("config", &self.config)
            .finish()
    }
}

impl<M, H, O, S> Agent<M, H, O, S>
where
    M: Client + Publish,
    H: HttpConnection,
    O: Ota,
    S: RawStorage,
{
    /// An agent for one boot. `events` comes from [`crate::pump_mqtt`] (or any producer).
    pub fn new(config: AgentConfig, mqtt: M, events: Receiver<MqttEvent>, http: H, ota: O, storage: S) -> Self {
        Agent {
            machine: UpdateMachine::new(config.device.clone()),
            commands: CommandMachine::new(&config.device.thing, config.capabilities.clone(), None),
            app: Box::new(NoApplication),
            mqtt,
            http,
            ota,
            storage,
            events,
            config,
            clock: Instant::now(),
            buf: vec![0u8; CHUNK_SIZE].into_boxed_slice(),
            self_test: None,
        }
    }

    /// An application check that must also pass before a new image is confirmed (sensors,
    /// peripherals). Without one, reaching MQTT is the whole self-test.
    pub fn with_self_test(mut self, check: impl FnMut() -> bool + Send + 'static) -> Self {
        self.self_test = Some(Box::new(check));
        self
    }

    /// The application that answers `identify`, `recalibrate` and other declared commands
    /// and provides telemetry. Without one, they succeed doing nothing.
    pub fn with_application(mut self, app: impl Application + 'static) -> Self {
        self.app = Box::new(app);
        self
    }

    /// The configuration in force (declared defaults, then what was stored).
    pub fn settings(&self) -> &Map<String, Value> {
        self.commands.config()
    }

    /// Where the state machine is.
    pub fn phase(&self) -> Phase {
        self.machine.phase()
    }

    /// Runs until the device must reboot or `stop` is raised.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<Exit, AgentError> {
        if self.machine.phase() == Phase::Booting {
            self.boot()?;
        }
        loop {
            if let Some(exit) = self.execute(stop)? {
                return Ok(exit);
            }
            self.commands.handle(CommandEvent::Tick { now_ms: elapsed_ms(&self.clock) });
            let Agent { commands, app, mqtt, storage, config, .. } = self;
            if let Some(exit) = run_commands(commands, app.as_mut(), mqtt, storage, config.reboot_grace) {
                return Ok(exit);
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(Exit::Stopped);
            }
            if self.machine.phase() == Phase::SelfTest && self.clock.elapsed() > self.config.self_test_timeout {
                self.machine.handle(Event::SelfTestFailed);
                continue;
            }
            match self.events.recv_timeout(self.config.poll_interval) {
                Ok(event) => {
                    let now_ms = elapsed_ms(&self.clock);
                    feed(&mut self.machine, &mut self.commands, event, self.self_test.as_mut(), now_ms);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(AgentError::MqttClosed),
            }
        }
    }

    /// Reads the slots and the pending job and tells the machine how this boot started.
    fn boot(&mut self) -> Result<(), AgentError> {
        let running = self.ota.get_running_slot().map_err(|e| AgentError::Slots(format!("{e:?}")))?;
        let update = self.ota.get_update_slot().map_err(|e| AgentError::Slots(format!("{e:?}")))?;
        let label = running.firmware.as_ref().map(|f| f.version.as_str().to_string());
        let version = label
            .as_deref()
            .and_then(|v| FirmwareVersion::parse(v).ok())
            .ok_or_else(|| AgentError::NoVersion(label.clone()))?;
        let mut buf = [0u8; 512];
        let pending = match self.storage.get_raw(PENDING_JOB_KEY, &mut buf) {
            Ok(Some(bytes)) => PendingJob::from_bytes(bytes),
            Ok(None) => None,
            Err(e) => return Err(AgentError::Storage(format!("{e:?}"))),
        };
        // The stored configuration; one that cannot be read counts as none (defaults), so a
        // bad record never keeps a device from booting and taking updates.
        let mut settings = [0u8; 1024];
        let stored = self.storage.get_raw(CONFIG_KEY, &mut settings).ok().flatten();
        self.commands = CommandMachine::new(&self.config.device.thing, self.config.capabilities.clone(), stored);
        self.app.configure(self.commands.config());
        self.machine.handle(Event::Booted(BootInfo {
            running: RunningImage {
                version,
                slot: running.label.as_str().to_string(),
                state: slot_state(running.state),
            },
            update_slot_state: slot_state(update.state),
            update_slot_size: self.config.update_slot_size,
            pending,
        }));
        Ok(())
    }

    /// Executes queued actions outside an update.
    fn execute(&mut self, stop: &AtomicBool) -> Result<Option<Exit>, AgentError> {
        while let Some(action) = self.machine.poll_action() {
            if stop.load(Ordering::SeqCst) {
                return Ok(Some(Exit::Stopped));
            }
            match action {
                Action::Subscribe { topic } => subscribe(&mut self.mqtt, &topic),
                Action::Publish { topic, payload } => publish(&mut self.mqtt, &topic, &payload),
                Action::BeginUpdate => {
                    if let Some(exit) = self.update(stop)? {
                        return Ok(Some(exit));
                    }
                }
                Action::ClearPending => {
                    if let Err(e) = self.storage.remove(PENDING_JOB_KEY) {
                        failed(&mut self.machine, ActionKind::ClearPending, e);
                    }
                }
                Action::MarkSlotValid => {
                    if let Err(e) = self.ota.mark_running_slot_valid() {
                        failed(&mut self.machine, ActionKind::MarkSlotValid, e);
                    }
                }
                Action::MarkSlotInvalidAndReboot => {
                    // Returns only on failure; either way the next step is a restart, and
                    // the bootloader starts the previous image because this one is invalid
                    // or still unconfirmed.
                    std::thread::sleep(self.config.reboot_grace);
                    let _reboot_or_error = self.ota.mark_running_slot_invalid_and_reboot();
                    return Ok(Some(Exit::Reboot));
                }
                Action::Reboot => {
                    std::thread::sleep(self.config.reboot_grace);
                    return Ok(Some(Exit::Reboot));
                }
                other => return Err(AgentError::Protocol(other.kind(), self.machine.phase())),
            }
        }
        Ok(None)
    }

    /// Streams one image into the inactive slot, from `BeginUpdate` to `FinishUpdate` (then
    /// installs) or `AbortUpdate`. The slot writer lives only in this scope: dropping it
    /// unfinished (a stop, a power cut) leaves the running image untouched.
    fn update(&mut self, stop: &AtomicBool) -> Result<Option<Exit>, AgentError> {
        let Agent { machine, mqtt, http, ota, storage, events, config, clock, buf, commands, app, .. } = self;
        let mut update = match ota.initiate_update() {
            Ok(update) => update,
            Err(e) => {
                failed(machine, ActionKind::BeginUpdate, e);
                return Ok(None);
            }
        };
        let mut body: Option<Body> = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(Some(Exit::Stopped));
            }
            let now_ms = elapsed_ms(clock);
            if let Some(action) = machine.poll_action() {
                match action {
                    Action::Download { url, offset } => match download::open(http, &url, offset) {
                        Ok(b) => body = Some(b),
                        Err(Refusal::Retry) => {
                            std::thread::sleep(config.retry_delay);
                            machine.handle(Event::DownloadBroke { now_ms });
                        }
                        Err(Refusal::Status(status)) => machine.handle(Event::DownloadRefused { status }),
                    },
                    Action::WriteChunk { len, .. } => {
                        if let Err(e) = update.write_all(&buf[..len]) {
                            failed(machine, ActionKind::WriteChunk, e);
                        }
                    }
                    Action::Publish { topic, payload } => publish(mqtt, &topic, &payload),
                    Action::Subscribe { topic } => subscribe(mqtt, &topic),
                    Action::AbortUpdate => {
                        // A failed abort leaves a half-written slot that is never booted and
                        // is erased by the next update.
                        let _ = update.abort();
                        return Ok(None);
                    }
                    Action::FinishUpdate => {
                        return match update.finish() {
                            Ok(finished) => install(machine, mqtt, storage, finished, stop, config.reboot_grace),
                            Err(e) => {
                                failed(machine, ActionKind::FinishUpdate, e);
                                Ok(None)
                            }
                        };
                    }
                    other => {
                        let _ = update.abort();
                        return Err(AgentError::Protocol(other.kind(), machine.phase()));
                    }
                }
                continue;
            }
            if let Some(open) = body.as_mut() {
                match download::read(http, open, buf) {
                    Ok(0) => {
                        body = None;
                        machine.handle(Event::DownloadEnded { now_ms });
                    }
                    Ok(n) => machine.handle(Event::Chunk { bytes: &buf[..n], now_ms }),
                    Err(()) => {
                        body = None;
                        std::thread::sleep(config.retry_delay);
                        machine.handle(Event::DownloadBroke { now_ms });
                    }
                }
                // A cancellation, a reconnect or a command that arrived meanwhile is handled
                // between chunks, not after the whole image.
                while let Ok(event) = events.try_recv() {
                    feed(machine, commands, event, None, now_ms);
                }
                commands.handle(CommandEvent::Tick { now_ms });
                if let Some(exit) = run_commands(commands, app.as_mut(), mqtt, storage, config.reboot_grace) {
                    // Only once the update machine is idle again (the update just ended)
                    // is a reboot accepted.
                    let _ = update.abort();
                    return Ok(Some(exit));
                }
                continue;
            }
            match events.recv_timeout(config.poll_interval) {
                Ok(event) => feed(machine, commands, event, None, now_ms),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(AgentError::MqttClosed),
            }
        }
    }
}

/// Persists the pending job, switches the boot slot and asks for the reboot, in the order
/// the machine gives.
fn install<M: Client + Publish, S: RawStorage, F: OtaUpdateFinished>(
    machine: &mut UpdateMachine,
    mqtt: &mut M,
    storage: &mut S,
    finished: F,
    stop: &AtomicBool,
    reboot_grace: Duration,
) -> Result<Option<Exit>, AgentError> {
    let mut finished = Some(finished);
    while let Some(action) = machine.poll_action() {
        if stop.load(Ordering::SeqCst) {
            return Ok(Some(Exit::Stopped));
        }
        match action {
            Action::PersistPending(pending) => {
                if let Err(e) = storage.set_raw(PENDING_JOB_KEY, &pending.to_bytes()) {
                    failed(machine, ActionKind::PersistPending, e);
                }
            }
            Action::Publish { topic, payload } => publish(mqtt, &topic, &payload),
            Action::Subscribe { topic } => subscribe(mqtt, &topic),
            Action::SetBootSlot => match finished.take().map(OtaUpdateFinished::activate) {
                Some(Ok(())) => {}
                Some(Err(e)) => failed(machine, ActionKind::SetBootSlot, e),
                None => failed(machine, ActionKind::SetBootSlot, "the image was already activated"),
            },
            Action::ClearPending => {
                if let Err(e) = storage.remove(PENDING_JOB_KEY) {
                    failed(machine, ActionKind::ClearPending, e);
                }
            }
            Action::Reboot => {
                std::thread::sleep(reboot_grace);
                return Ok(Some(Exit::Reboot));
            }
            other => return Err(AgentError::Protocol(other.kind(), machine.phase())),
        }
    }
    Ok(None)
}

fn feed(
    machine: &mut UpdateMachine,
    commands: &mut CommandMachine,
    event: MqttEvent,
    self_test: Option<&mut SelfTest>,
    now_ms: u64,
) {
    match event {
        MqttEvent::Connected => {
            let failed_check = machine.phase() == Phase::SelfTest && self_test.is_some_and(|check| !check());
            machine.handle(if failed_check { Event::SelfTestFailed } else { Event::Connected });
            if !failed_check {
                commands.handle(CommandEvent::Connected { now_ms });
            }
        }
        MqttEvent::Disconnected => {
            machine.handle(Event::Disconnected);
            commands.handle(CommandEvent::Disconnected);
        }
        MqttEvent::Message { topic, payload } => {
            // A command sees the update machine's phase as it is now.
            if !commands.handle_message(&topic, &payload, machine.phase()) {
                machine.handle_message(&topic, &payload);
            }
        }
    }
}

/// Executes the command machine's queued actions; `Some(Exit::Reboot)` when one is a reboot
/// (after `reboot_grace`, for the response to leave).
fn run_commands<M: Client + Publish, S: RawStorage>(
    commands: &mut CommandMachine,
    app: &mut dyn Application,
    mqtt: &mut M,
    storage: &mut S,
    reboot_grace: Duration,
) -> Option<Exit> {
    while let Some(action) = commands.poll_action() {
        match action {
            CommandAction::Subscribe { topic } => subscribe(mqtt, &topic),
            CommandAction::Publish { topic, payload } => publish(mqtt, &topic, &payload),
            CommandAction::PersistConfig { task, bytes } => {
                let error = storage.set_raw(CONFIG_KEY, &bytes).err().map(|e| format!("{e:?}"));
                let stored = error.is_none();
                commands.handle(CommandEvent::Done { task, error });
                if stored {
                    app.configure(commands.config());
                }
            }
            CommandAction::Run { task, command, parameters } => {
                let outcome = match command.as_str() {
                    "identify" => app.identify(),
                    "recalibrate" => app.recalibrate(),
                    other => app.command(other, &parameters),
                };
                commands.handle(CommandEvent::Done { task, error: outcome.err() });
            }
            CommandAction::Sample => {
                if let Some((metrics, health)) = app.telemetry() {
                    commands.handle(CommandEvent::Sampled { metrics, health });
                }
            }
            CommandAction::Reboot => {
                std::thread::sleep(reboot_grace);
                return Some(Exit::Reboot);
            }
        }
    }
    None
}

fn failed(machine: &mut UpdateMachine, action: ActionKind, error: impl fmt::Debug) {
    machine.handle(Event::ActionFailed { action, detail: format!("{error:?}") });
}

// MQTT errors are not fatal: while disconnected the machine re-subscribes and re-reports
// what matters (the shadow, a pending job's final status) on the next connect.
fn publish<M: Publish>(mqtt: &mut M, topic: &str, payload: &str) {
    let _ = mqtt.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes());
}

fn subscribe<M: Client>(mqtt: &mut M, topic: &str) {
    let _ = mqtt.subscribe(topic, QoS::AtLeastOnce);
}

fn elapsed_ms(clock: &Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn slot_state(state: EsvcSlotState) -> SlotState {
    match state {
        EsvcSlotState::Factory | EsvcSlotState::Valid => SlotState::Valid,
        EsvcSlotState::Unverified => SlotState::Unverified,
        EsvcSlotState::Invalid => SlotState::Invalid,
        EsvcSlotState::Unknown => SlotState::Empty,
    }
}
