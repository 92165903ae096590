//! The provisioner's notion of now, so that idle stops can be tested with time that moves only
//! when the test says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock, in UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        k8shell_common::clock::now()
    }
}

/// A paused clock that moves only by [`ManualClock::advance`], and counts how often it was read
/// (so that a test can wait for the reconciler to have looked at the time it set).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
    reads: AtomicU64,
}

impl ManualClock {
    /// Paused at the system's now.
    pub fn new() -> Self {
        Self {
            now: Mutex::new(k8shell_common::clock::now()),
            reads: AtomicU64::new(0),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// How many times the time was read so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.reads.fetch_add(1, Ordering::SeqCst);
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
