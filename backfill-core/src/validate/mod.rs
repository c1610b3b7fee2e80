//! Validators and their typed outcomes.
//!
//! Checks are pushed down to the engine; only numbers and bounded samples
//! come back. Each returns an [`Outcome`]: pass / warn / fail / error, the
//! observed value, the threshold, a sample, and the query it ran.
//!
//! A check runs per batch, on the slice just written ([`Validator`]), or
//! at the end, on the whole scope ([`ScopeCheck`]). Scope checks that
//! compare old against new measure the old side into the run's baseline
//! before the first write; the runner keeps it in the ledger.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plan::{Batch, BatchId};
use crate::warehouse::{Warehouse, WriteOutcome};
use crate::TableRef;

mod batch;
pub mod guard;
pub mod report;
mod scope;

pub use crate::checks::{CheckSpec, Expectation, Threshold, SAMPLE_LIMIT};
pub use batch::{RowCountCheck, SliceCheck, UniquenessCheck};
pub use guard::Guard;
pub use report::{Detail, EdgeCase, Finding, ReconRow, SchemaChanges, ValidationReport};
pub use scope::{
    CompletenessCheck, CoverageCheck, EdgeCaseCheck, NullRateCheck, OrphanCheck, ReconcileCheck,
    RowDiffCheck, SchemaCheck, ScopeCheck, ScopeContext, SizeCheck,
};

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within expectations.
    Pass,
    /// Outside expectations, but not blocking.
    Warn,
    /// Outside expectations.
    Fail,
    /// The check could not run.
    Error,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The check's name.
    pub check: String,
    /// The batch checked, or `None` for the whole scope.
    pub batch: Option<BatchId>,
    /// The verdict.
    pub status: Status,
    /// Whether a failure stops the run.
    pub blocking: bool,
    /// The observed value.
    pub observed: f64,
    /// The expected value, if any.
    pub expected: Option<f64>,
    /// The threshold applied.
    pub threshold: Option<Threshold>,
    /// A one-line explanation.
    pub detail: String,
    /// A bounded sample of offending keys or rows, as text.
    pub sample: Vec<String>,
    /// The query that ran (with parameters), or a description for the
    /// in-memory engine.
    pub query: String,
}

impl Outcome {
    /// Whether this outcome stops the run.
    pub fn is_blocking_failure(&self) -> bool {
        self.blocking && matches!(self.status, Status::Fail | Status::Error)
    }
}

impl CheckSpec {
    /// The validator that runs this check per batch, if it is a batch
    /// check.
    pub fn validator(&self) -> Option<Box<dyn Validator>> {
        match self {
            CheckSpec::RowCount { expect, blocking } => Some(Box::new(RowCountCheck {
                expect: *expect,
                blocking: *blocking,
            })),
            CheckSpec::Unique { keys, blocking } => Some(Box::new(UniquenessCheck {
                keys: keys.clone(),
                blocking: *blocking,
            })),
            CheckSpec::PerBatch { of } if of.can_run_per_batch() => of
                .scope_check()
                .map(|c| Box::new(batch::SliceCheck(c)) as Box<dyn Validator>),
            _ => None,
        }
    }

    /// The check that runs at the end on the whole scope, if it is one.
    pub fn scope_check(&self) -> Option<Box<dyn ScopeCheck>> {
        let b: Box<dyn ScopeCheck> = match self.clone() {
            CheckSpec::RowCount { .. } | CheckSpec::Unique { .. } | CheckSpec::PerBatch { .. } => {
                return None
            }
            CheckSpec::Coverage {
                empty_allowed,
                blocking,
            } => Box::new(CoverageCheck {
                empty_allowed,
                blocking,
            }),
            CheckSpec::Completeness {
                by,
                keys,
                expect,
                blocking,
            } => Box::new(CompletenessCheck {
                by,
                keys,
                expect,
                blocking,
            }),
            CheckSpec::NullRate {
                columns,
                max_increase,
                blocking,
            } => Box::new(NullRateCheck {
                columns,
                max_increase,
                blocking,
            }),
            CheckSpec::References {
                columns,
                parent,
                parent_columns,
                max,
                blocking,
            } => Box::new(OrphanCheck {
                columns,
                parent,
                parent_columns,
                max,
                blocking,
            }),
            CheckSpec::Reconcile {
                metric,
                keys,
                expect,
                tolerance,
                blocking,
            } => Box::new(ReconcileCheck {
                metric,
                keys,
                expect,
                tolerance: tolerance.unwrap_or_default(),
                blocking,
            }),
            CheckSpec::RowDiff {
                keys,
                columns,
                sample,
                max_changed,
                partition,
                blocking,
            } => Box::new(RowDiffCheck {
                keys,
                columns,
                sample,
                max_changed,
                partition,
                blocking,
            }),
            CheckSpec::Schema { blocking } => Box::new(SchemaCheck { blocking }),
            CheckSpec::EdgeCases { column, values } => Box::new(EdgeCaseCheck { column, values }),
            CheckSpec::Size => Box::new(SizeCheck),
        };
        Some(b)
    }
}

/// Whether `ok` passes, warns or fails for a check that is (or is not)
/// blocking.
pub fn verdict(ok: bool, blocking: bool) -> Status {
    if ok {
        Status::Pass
    } else if blocking {
        Status::Fail
    } else {
        Status::Warn
    }
}

/// What a check looks at.
#[derive(Clone, Copy)]
pub struct CheckContext<'a> {
    /// The engine.
    pub warehouse: &'a dyn Warehouse,
    /// The table the batches were written to.
    pub table: &'a TableRef,
    /// The run's ledger.
    pub ledger: &'a dyn crate::ledger::Ledger,
    /// The run.
    pub run_id: &'a crate::ledger::RunId,
    /// The run's plan.
    pub plan: &'a crate::plan::Plan,
    /// What a diff compares over the whole scope (old rows, new rows),
    /// where the pattern keeps the old rows; a per-batch check narrows it
    /// to the batch.
    pub diff: Option<(&'a crate::inspect::Rows, &'a crate::inspect::Rows)>,
}

/// A check on one batch just written.
#[derive(Clone, Copy, Debug)]
pub struct BatchCheck<'a> {
    /// The batch.
    pub batch: &'a Batch,
    /// What its write reported.
    pub written: &'a WriteOutcome,
}

/// A pushed-down check.
#[async_trait]
pub trait Validator: Send + Sync {
    /// The check's name.
    fn name(&self) -> String;

    /// Whether a failure stops the run.
    fn blocking(&self) -> bool;

    /// Checks one batch just written.
    async fn check_batch(&self, ctx: &CheckContext<'_>, batch: &BatchCheck<'_>) -> Result<Outcome>;

    /// The check as a [`Guard`] the engine runs inside each batch's
    /// transaction, before its commit, if it is blocking and needs only
    /// the batch's own slice. None by default.
    fn guard(&self) -> Option<Guard> {
        None
    }

    /// The outcome of this check for a batch whose [`Validator::guard`]
    /// passed before its commit, when that says all there is to say (no
    /// query after the commit); None for a check with no guard. None by
    /// default: the check runs after the commit too.
    fn guarded_outcome(&self, _batch: &crate::BatchId) -> Option<Outcome> {
        None
    }
}
