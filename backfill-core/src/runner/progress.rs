//! Progress events, and the moving average behind the ETA.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ledger::RunStatus;
use crate::plan::BatchId;
use crate::validate::Outcome;

/// Something a progress bar or an orchestrator wants to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The run started or resumed.
    RunStarted {
        /// Batches in the plan.
        total: usize,
        /// Batches already done (on resume).
        done: usize,
        /// Whether an existing run was continued.
        resumed: bool,
    },
    /// A batch was claimed.
    BatchStarted {
        /// The batch.
        batch: BatchId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A batch was written (and validated, if checks ran).
    BatchFinished {
        /// The batch.
        batch: BatchId,
        /// Rows in the slice before.
        rows_before: u64,
        /// Rows written.
        rows_written: u64,
        /// Time the batch took.
        elapsed: Duration,
        /// Batches done so far.
        done: usize,
        /// Batches in the plan.
        total: usize,
        /// Rows per second over the run's working time.
        rows_per_sec: f64,
        /// Estimated time to finish, from a moving average that excludes
        /// throttled time.
        eta: Option<Duration>,
    },
    /// A batch attempt failed.
    BatchFailed {
        /// The batch.
        batch: BatchId,
        /// The error.
        error: String,
        /// Whether it will be retried.
        will_retry: bool,
    },
    /// A check ran.
    Checked {
        /// Its outcome.
        outcome: Outcome,
    },
    /// The runner is waiting for load to drop.
    Throttled {
        /// Why.
        reason: String,
    },
    /// The run paused at a batch boundary.
    Paused {
        /// Why (operator, or a critical signal).
        reason: String,
    },
    /// The run resumed after a pause.
    Resumed,
    /// The run ended this invocation.
    RunFinished {
        /// Its status.
        status: RunStatus,
    },
}

/// Exponentially weighted moving average of batch durations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ewma {
    mean: Option<f64>,
}

impl Ewma {
    const ALPHA: f64 = 0.2;

    /// Adds one observation in seconds.
    pub fn observe(&mut self, secs: f64) {
        self.mean = Some(match self.mean {
            None => secs,
            Some(m) => m + Self::ALPHA * (secs - m),
        });
    }

    /// The current mean in seconds.
    pub fn mean(&self) -> Option<f64> {
        self.mean
    }

    /// Estimated time for `remaining` batches on `workers` workers.
    pub fn eta(&self, remaining: usize, workers: usize) -> Option<Duration> {
        let m = self.mean?;
        let waves = remaining.div_ceil(workers.max(1));
        Some(Duration::from_secs_f64(m * waves as f64))
    }
}
