//! Simulated power: one switch shared by the flash, the storage and the agent's stop flag.
//! A cut armed at a step turns the power off just before that step would happen; from then
//! on every durable operation fails and the agent stops, as if the chip lost power there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A step at which the power can be cut (just before it takes effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// Before the inactive slot is erased for a new image.
    BeforeErase,
    /// Before the flash write that would store image byte N.
    AtImageByte(u64),
    /// Before the written slot is closed (image complete).
    BeforeFinish,
    /// Before anything is written to storage (the pending job).
    BeforeStore,
    /// Before the boot slot is switched to the new image.
    BeforeActivate,
    /// Before the new image marks itself valid (during the self-test).
    BeforeMarkValid,
    /// Before a storage key is removed (clearing the pending job).
    BeforeRemove,
}

/// The error every durable operation returns once the power is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("power lost")]
pub struct PowerLost;

#[derive(Debug, Default)]
struct Inner {
    off: AtomicBool,
    armed: Mutex<Option<PowerCut>>,
}

/// The device's power supply. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Power(Arc<Inner>);

impl Power {
    /// Power on, no cut armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts the power just before `step` next happens.
    pub fn cut_at(&self, step: PowerCut) {
        *self.0.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(step);
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.0.off.load(Ordering::SeqCst)
    }

    /// The flag the agent polls as its stop signal: raised when the power goes off.
    pub fn off_flag(&self) -> &AtomicBool {
        &self.0.off
    }

    /// Switches the power off now (unplugging an idle device ends a simulation).
    pub fn switch_off(&self) {
        self.0.off.store(true, Ordering::SeqCst);
    }

    /// Turns the power back on (the armed cut, having fired, is gone).
    pub fn restore(&self) {
        self.0.off.store(false, Ordering::SeqCst);
    }

    /// Called by a simulated part before a durable step: fails if the power is off, or cuts
    /// it now if this is the armed step.
    pub fn check(&self, step: PowerCut) -> Result<(), PowerLost> {
        if self.is_off() {
            return Err(PowerLost);
        }
        let mut armed = self.0.armed.lock().unwrap_or_else(|e| e.into_inner());
        let hit = match (*armed, step) {
            (Some(PowerCut::AtImageByte(n)), PowerCut::AtImageByte(end)) => n < end,
            (Some(a), b) => a == b,
            (None, _) => false,
        };
        if hit {
            *armed = None;
            self.0.off.store(true, Ordering::SeqCst);
            return Err(PowerLost);
        }
        Ok(())
    }
}
