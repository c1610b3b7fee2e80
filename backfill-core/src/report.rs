//! The run report: what happened, serializable for tools and readable at
//! a glance.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ledger::{Asset, Liveness, RunId, RunStatus};
use crate::plan::BatchId;
use crate::validate::{Outcome, Status, ValidationReport};

/// What a run (or one invocation of it) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// The target table.
    pub target: String,
    /// The write pattern.
    pub strategy: String,
    /// Status after this invocation.
    pub status: RunStatus,
    /// Plan, strategy and source fingerprint.
    pub fingerprint: String,
    /// Batches in the plan.
    pub batches_total: usize,
    /// Batches written (or validated).
    pub batches_done: usize,
    /// Batches written by this invocation.
    pub batches_this_run: usize,
    /// Rows written by this invocation.
    pub rows_written: u64,
    /// Rows in those slices before.
    pub rows_before: u64,
    /// Check outcomes from this invocation.
    pub outcomes: Vec<Outcome>,
    /// Batches never written.
    pub gaps: Vec<BatchId>,
    /// Assets kept, with owner and expiry.
    pub assets: Vec<Asset>,
    /// Wall time of this invocation.
    pub elapsed: Duration,
    /// Time spent waiting on load signals.
    pub throttled: Duration,
    /// The end-of-run checks, once every batch is done (and the plan
    /// declares any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationReport>,
    /// Preflight warnings (such as engine dependents the brief does not
    /// declare).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Batches still `running` under a lease when this call ended: in
    /// other workers' hands, or held by a dead worker until its lease
    /// expires where the ledger cannot tell.
    #[serde(default)]
    pub held: Vec<Held>,
    /// Drift of what the run depends on since its baseline, seen by this
    /// call; a kind the brief's policy pauses on paused the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::drift::Drift>,
}

/// A batch still held under a lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The batch.
    pub batch: BatchId,
    /// The worker holding it.
    pub worker: String,
    /// The worker's process instance.
    pub instance: String,
    /// When its lease ends unless renewed.
    pub expires_at: jiff::Timestamp,
    /// Whether its holder is alive.
    pub liveness: Liveness,
}

impl RunReport {
    /// Whether this invocation had nothing left to do.
    pub fn nothing_to_do(&self) -> bool {
        self.batches_this_run == 0 && self.gaps.is_empty()
    }

    /// Outcomes that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Fail | Status::Error))
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "run {} on {} ({}): {}",
            self.run_id,
            self.target,
            self.strategy,
            self.status.as_str()
        )?;
        writeln!(
            f,
            "  batches {}/{} done, {} this invocation; {} rows written ({} before) in {:.1}s{}",
            self.batches_done,
            self.batches_total,
            self.batches_this_run,
            self.rows_written,
            self.rows_before,
            self.elapsed.as_secs_f64(),
            if self.throttled.is_zero() {
                String::new()
            } else {
                format!(", {:.1}s throttled", self.throttled.as_secs_f64())
            }
        )?;
        let passed = self
            .outcomes
            .iter()
            .filter(|o| o.status == Status::Pass)
            .count();
        let warned = self
            .outcomes
            .iter()
            .filter(|o| o.status == Status::Warn)
            .count();
        let failed = self.failures().count();
        writeln!(
            f,
            "  checks: {passed} passed, {warned} warned, {failed} failed"
        )?;
        for o in self.failures().take(5) {
            writeln!(
                f,
                "    FAIL {} {}: {}",
                o.check,
                o.batch.as_ref().map(|b| b.0.as_str()).unwrap_or("scope"),
                o.detail
            )?;
        }
        if !self.gaps.is_empty() {
            writeln!(
                f,
                "  incomplete: {} of {} batches written",
                self.batches_done, self.batches_total
            )?;
            for h in self.held.iter().take(5) {
                let who = match h.liveness {
                    Liveness::Alive => "alive: it goes on".to_string(),
                    Liveness::Dead => "dead: the next run takes it back".to_string(),
                    Liveness::Unknown => format!(
                        "liveness unknown: it is taken back when the lease ends at {}, or release it",
                        h.expires_at
                    ),
                };
                writeln!(
                    f,
                    "  batch {} is held by worker {} ({who})",
                    h.batch, h.worker
                )?;
            }
            let shown: Vec<&str> = self.gaps.iter().take(5).map(|g| g.0.as_str()).collect();
            writeln!(
                f,
                "  gaps: {} batch(es) not written: {}",
                self.gaps.len(),
                shown.join(", ")
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        for d in &self.drift {
            let act = match d.act {
                crate::drift::Act::Pause => "PAUSED",
                crate::drift::Act::Warn => "warning",
            };
            writeln!(f, "  drift ({act}): {d}")?;
        }
        if let Some(v) = &self.validation {
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// The estimate a test slice gives for the full plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SliceEstimate {
    /// The batches run, with rows written and time taken.
    pub batches: Vec<(BatchId, u64, Duration)>,
    /// Mean time per batch.
    pub mean_batch: Duration,
    /// Mean rows per batch.
    pub mean_rows: f64,
    /// Batches in the full plan.
    pub plan_batches: usize,
    /// Estimated time for the whole plan at the configured concurrency.
    pub estimated_total: Duration,
    /// Estimated rows for the whole plan.
    pub estimated_rows: u64,
    /// Check outcomes on the slice.
    pub outcomes: Vec<Outcome>,
}
