//! A simulated two-slot OTA flash with the ESP-IDF bootloader's rollback rules.
//!
//! Each slot keeps only what the bootloader needs: the image header (for the version, from
//! the synthetic header or an ESP32 app descriptor), the length and the digest of what was
//! written, and its state. So an 8 MB image costs no memory here either, and a test can
//! still check exactly which bytes landed. A flash can start with an image of any version
//! without its bytes ([`SimFlash::new`]), as a simulated fleet of hundreds needs.
//!
//! States follow ESP-IDF with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE`: a freshly activated
//! image is `New`; its first boot makes it `PendingVerify`; the app confirms it (`Valid`) or
//! marks it `Invalid`; a reset while still `PendingVerify` makes the bootloader mark it
//! invalid and start the other slot.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_svc::io::{ErrorKind, ErrorType, Write};
use embedded_svc::ota::{FirmwareInfo, Ota, OtaUpdate, OtaUpdateFinished, Slot, SlotState};
use ota_core::catalog::Sha256Digest;
use ota_core::integrity::Sha256Verifier;

use super::image::{IMAGE_HEADER_LEN, header_version};
use super::power::{Power, PowerCut};

/// A slot's state as the simulated bootloader tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimSlotState {
    /// Erased, or holding a partial write.
    Empty,
    /// Completely written, not selected for boot.
    Written,
    /// Selected for boot, never booted.
    New,
    /// Booted once, not yet confirmed.
    PendingVerify,
    Valid,
    Invalid,
}

/// A copy of one slot's bookkeeping, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub state: SimSlotState,
    /// From the image header.
    pub version: Option<String>,
    /// Bytes written (0 for the factory image, which was never streamed).
    pub len: u64,
    /// Digest of the bytes written.
    pub digest: Option<Sha256Digest>,
}

#[derive(Debug, Clone)]
struct SimSlot {
    state: SimSlotState,
    version: Option<String>,
    len: u64,
    digest: Option<Sha256Digest>,
}

impl SimSlot {
    fn empty() -> Self {
        SimSlot { state: SimSlotState::Empty, version: None, len: 0, digest: None }
    }
}

#[derive(Debug)]
struct FlashState {
    slots: [SimSlot; 2],
    boot: usize,
    running: usize,
    slot_size: u64,
    failing_versions: Vec<String>,
    /// Every image an update wrote fails its self-test (the factory image does not).
    updates_fail: bool,
}

/// Errors of the simulated flash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlashError {
    #[error("power lost")]
    PowerLost,
    #[error("the image does not fit the {0}-byte slot")]
    TooLarge(u64),
    #[error("the image has no valid header")]
    InvalidImage,
    /// What `mark_running_slot_invalid_and_reboot` returns on the host: the caller restarts.
    #[error("rebooting")]
    Rebooting,
}

impl embedded_svc::io::Error for FlashError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// The flash of one simulated device. Clones share it: it outlives an agent, as flash
/// outlives a reboot.
#[derive(Debug, Clone)]
pub struct SimFlash {
    state: Arc<Mutex<FlashState>>,
    power: Power,
}

impl SimFlash {
    /// A flash whose slot 0 holds a valid image of `version` and whose slots hold
    /// `slot_size` bytes each.
    pub fn new(version: &str, slot_size: u64, power: Power) -> Self {
        let factory = SimSlot { state: SimSlotState::Valid, version: Some(version.to_string()), len: 0, digest: None };
        let state = FlashState {
            slots: [factory, SimSlot::empty()],
            boot: 0,
            running: 0,
            slot_size,
            failing_versions: Vec::new(),
            updates_fail: false,
        };
        SimFlash { state: Arc::new(Mutex::new(state)), power }
    }

    fn lock(&self) -> MutexGuard<'_, FlashState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fault knob: images of `version` fail their self-test when they boot.
    pub fn fail_self_test_of(&self, version: &str) {
        self.lock().failing_versions.push(version.to_string());
    }

    /// Fault knob: every image an update writes fails its self-test, whatever its version
    /// (a device whose hardware the new firmware trips over); the image the flash started
    /// with keeps passing. For a simulation that does not know the versions it will be sent.
    pub fn fail_self_test_of_updates(&self) {
        self.lock().updates_fail = true;
    }

    /// Whether the running image is one that fails its self-test.
    pub fn running_image_fails_self_test(&self) -> bool {
        let s = self.lock();
        let slot = &s.slots[s.running];
        // Only streamed images have a digest; the factory image never was.
        (s.updates_fail && slot.digest.is_some())
            || slot.version.as_ref().is_some_and(|v| s.failing_versions.contains(v))
    }

    /// Runs the bootloader: picks the slot to start, rolling back an image that booted
    /// before and was never confirmed.
    pub fn power_on(&self) {
        let mut s = self.lock();
        let b = s.boot;
        let start = match s.slots[b].state {
            SimSlotState::Valid => b,
            SimSlotState::New => {
                s.slots[b].state = SimSlotState::PendingVerify;
                b
            }
            SimSlotState::PendingVerify => {
                s.slots[b].state = SimSlotState::Invalid;
                1 - b
            }
            SimSlotState::Empty | SimSlotState::Written | SimSlotState::Invalid => 1 - b,
        };
        s.boot = start;
        s.running = start;
    }

    /// The version the running image reports.
    pub fn running_version(&self) -> Option<String> {
        let s = self.lock();
        s.slots[s.running].version.clone()
    }

    /// The running slot's index and state.
    pub fn running_slot(&self) -> (usize, SimSlotState) {
        let s = self.lock();
        (s.running, s.slots[s.running].state)
    }

    /// What slot `index` holds.
    pub fn slot(&self, index: usize) -> SlotSnapshot {
        let s = self.lock();
        let slot = &s.slots[index];
        SlotSnapshot { state: slot.state, version: slot.version.clone(), len: slot.len, digest: slot.digest }
    }

    /// The slot the bootloader will start next.
    pub fn boot_slot(&self) -> usize {
        self.lock().boot
    }

    fn describe(&self, index: usize) -> Slot {
        let s = self.lock();
        let slot = &s.slots[index];
        let state = match slot.state {
            SimSlotState::Valid => SlotState::Valid,
            SimSlotState::New | SimSlotState::PendingVerify | SimSlotState::Written => SlotState::Unverified,
            SimSlotState::Invalid => SlotState::Invalid,
            SimSlotState::Empty => SlotState::Unknown,
        };
        let firmware = slot.version.as_deref().and_then(|v| {
            Some(FirmwareInfo {
                version: heapless::String::try_from(v).ok()?,
                released: heapless::String::new(),
                description: None,
                signature: None,
                download_id: None,
            })
        });
        let mut label = heapless::String::new();
        let _ = label.push_str(if index == 0 { "ota_0" } else { "ota_1" });
        Slot { label, state, firmware }
    }
}

impl ErrorType for SimFlash {
    type Error = FlashError;
}

impl Ota for SimFlash {
    type Update<'a> = SimUpdate<'a>;

    fn get_boot_slot(&self) -> Result<Slot, FlashError> {
        Ok(self.describe(self.boot_slot()))
    }

    fn get_running_slot(&self) -> Result<Slot, FlashError> {
        let running = self.lock().running;
        Ok(self.describe(running))
    }

    fn get_update_slot(&self) -> Result<Slot, FlashError> {
        let running = self.lock().running;
        Ok(self.describe(1 - running))
    }

    fn is_factory_reset_supported(&self) -> Result<bool, FlashError> {
        Ok(false)
    }

    fn factory_reset(&mut self) -> Result<(), FlashError> {
        Err(FlashError::InvalidImage)
    }

    fn initiate_update(&mut self) -> Result<SimUpdate<'_>, FlashError> {
        self.power.check(PowerCut::BeforeErase).map_err(|_| FlashError::PowerLost)?;
        let slot = {
            let mut s = self.lock();
            let slot = 1 - s.running;
            s.slots[slot] = SimSlot::empty();
            slot
        };
        Ok(SimUpdate { flash: self, slot, verifier: Sha256Verifier::new(), header: [0; IMAGE_HEADER_LEN], done: false })
    }

    fn mark_running_slot_valid(&mut self) -> Result<(), FlashError> {
        self.power.check(PowerCut::BeforeMarkValid).map_err(|_| FlashError::PowerLost)?;
        let mut s = self.lock();
        let r = s.running;
        s.slots[r].state = SimSlotState::Valid;
        Ok(())
    }

    fn mark_running_slot_invalid_and_reboot(&mut self) -> FlashError {
        if self.power.is_off() {
            return FlashError::PowerLost;
        }
        let mut s = self.lock();
        let r = s.running;
        s.slots[r].state = SimSlotState::Invalid;
        s.boot = 1 - r;
        FlashError::Rebooting
    }
}

/// An image being written into the inactive slot. Dropped unfinished (power loss), the slot
/// stays empty: a partial image is never bootable.
#[derive(Debug)]
pub struct SimUpdate<'a> {
    flash: &'a SimFlash,
    slot: usize,
    verifier: Sha256Verifier,
    header: [u8; IMAGE_HEADER_LEN],
    done: bool,
}

impl ErrorType for SimUpdate<'_> {
    type Error = FlashError;
}

impl Write for SimUpdate<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, FlashError> {
        let at = self.verifier.bytes();
        let end = at + buf.len() as u64;
        self.flash.power.check(PowerCut::AtImageByte(end)).map_err(|_| FlashError::PowerLost)?;
        let size = self.flash.lock().slot_size;
        if end > size {
            return Err(FlashError::TooLarge(size));
        }
        if at < IMAGE_HEADER_LEN as u64 {
            let n = (IMAGE_HEADER_LEN - at as usize).min(buf.len());
            self.header[at as usize..at as usize + n].copy_from_slice(&buf[..n]);
        }
        self.verifier.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), FlashError> {
        Ok(())
    }
}

impl<'a> OtaUpdate for SimUpdate<'a> {
    type OtaUpdateFinished = SimUpdateFinished<'a>;

    fn finish(mut self) -> Result<SimUpdateFinished<'a>, FlashError> {
        self.flash.power.check(PowerCut::BeforeFinish).map_err(|_| FlashError::PowerLost)?;
        // Like esp_ota_end, refuse an image without a valid header.
        let version = header_version(&self.header).ok_or(FlashError::InvalidImage)?;
        let verifier = std::mem::take(&mut self.verifier);
        let (digest, len) = verifier.finish();
        self.done = true;
        let mut s = self.flash.lock();
        s.slots[self.slot] =
            SimSlot { state: SimSlotState::Written, version: Some(version), len, digest: Some(digest) };
        Ok(SimUpdateFinished { flash: self.flash, slot: self.slot })
    }

    fn complete(self) -> Result<(), FlashError> {
        self.finish()?.activate()
    }

    fn abort(mut self) -> Result<(), FlashError> {
        self.done = true;
        self.flash.lock().slots[self.slot] = SimSlot::empty();
        Ok(())
    }
}

impl Drop for SimUpdate<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.flash.lock().slots[self.slot] = SimSlot::empty();
        }
    }
}

/// A completely written slot, not yet selected for boot.
#[derive(Debug)]
pub struct SimUpdateFinished<'a> {
    flash: &'a SimFlash,
    slot: usize,
}

impl ErrorType for SimUpdateFinished<'_> {
    type Error = FlashError;
}

impl OtaUpdateFinished for SimUpdateFinished<'_> {
    fn activate(self) -> Result<(), FlashError> {
        self.flash.power.check(PowerCut::BeforeActivate).map_err(|_| FlashError::PowerLost)?;
        let mut s = self.flash.lock();
        s.slots[self.slot].state = SimSlotState::New;
        s.boot = self.slot;
        Ok(())
    }
}
