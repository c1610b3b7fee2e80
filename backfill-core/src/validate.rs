//! Validators and their typed outcomes.
//!
//! Checks are pushed down to the engine; only numbers and bounded samples
//! come back. Each returns an [`Outcome`]: pass / warn / fail / error, the
//! observed value, the threshold, a sample, and the query it ran.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plan::{Batch, BatchId};
use crate::warehouse::{Warehouse, WriteOutcome};
use crate::{Ident, Predicate, TableRef};

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

/// A threshold a check compares against.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// At most this much, in the check's unit.
    Absolute(f64),
    /// At most this many percent of the baseline.
    Percent(f64),
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

/// How a count may change.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Expectation {
    /// Exactly the same.
    Unchanged,
    /// At most this many percent up or down.
    MaxChangePercent(f64),
    /// At most this many up or down.
    MaxChangeAbsolute(u64),
}

impl Expectation {
    /// Judges `after` against `before`.
    pub fn judge(&self, before: u64, after: u64) -> (bool, Threshold) {
        let diff = before.abs_diff(after) as f64;
        match *self {
            Expectation::Unchanged => (diff == 0.0, Threshold::Absolute(0.0)),
            Expectation::MaxChangeAbsolute(n) => (diff <= n as f64, Threshold::Absolute(n as f64)),
            Expectation::MaxChangePercent(p) => {
                let pct = if before == 0 {
                    if after == 0 {
                        0.0
                    } else {
                        f64::INFINITY
                    }
                } else {
                    diff * 100.0 / before as f64
                };
                (pct <= p, Threshold::Percent(p))
            }
        }
    }
}

/// A check declared in the brief's validation plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum CheckSpec {
    /// Per batch: the slice's row count after the write against before.
    RowCount {
        /// The allowed change.
        expect: Expectation,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// Per batch: no null and no duplicate keys in the written slice.
    Unique {
        /// The grain.
        keys: Vec<Ident>,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
}

fn yes() -> bool {
    true
}

impl CheckSpec {
    /// The validator that runs this check.
    pub fn validator(&self) -> Box<dyn Validator> {
        match self {
            CheckSpec::RowCount { expect, blocking } => Box::new(RowCountCheck {
                expect: *expect,
                blocking: *blocking,
            }),
            CheckSpec::Unique { keys, blocking } => Box::new(UniquenessCheck {
                keys: keys.clone(),
                blocking: *blocking,
            }),
        }
    }
}

/// What a check looks at.
#[derive(Clone, Copy)]
pub struct CheckContext<'a> {
    /// The engine.
    pub warehouse: &'a dyn Warehouse,
    /// The table the batches were written to.
    pub table: &'a TableRef,
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
}

fn query_text(
    ctx: &CheckContext<'_>,
    render: impl FnOnce(&dyn crate::sql::Dialect) -> crate::sql::Sql,
    what: &str,
) -> String {
    match ctx.warehouse.dialect() {
        Some(d) => render(d).display(),
        None => format!("in-memory: {what}"),
    }
}

/// Row count of the slice after the write against before.
#[derive(Clone, Debug)]
pub struct RowCountCheck {
    /// The allowed change.
    pub expect: Expectation,
    /// Whether a failure stops the run.
    pub blocking: bool,
}

#[async_trait]
impl Validator for RowCountCheck {
    fn name(&self) -> String {
        "row_count".into()
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn check_batch(&self, ctx: &CheckContext<'_>, b: &BatchCheck<'_>) -> Result<Outcome> {
        let pred: &Predicate = &b.batch.predicate;
        let after = ctx.warehouse.count(ctx.table, pred).await?;
        let before = b.written.rows_before;
        let (ok, threshold) = self.expect.judge(before, after);
        Ok(Outcome {
            check: self.name(),
            batch: Some(b.batch.id.clone()),
            status: if ok {
                Status::Pass
            } else if self.blocking {
                Status::Fail
            } else {
                Status::Warn
            },
            blocking: self.blocking,
            observed: after as f64,
            expected: Some(before as f64),
            threshold: Some(threshold),
            detail: format!("{before} rows before, {after} after"),
            sample: Vec::new(),
            query: query_text(
                ctx,
                |d| crate::sql::stmt::count(d, ctx.table, pred),
                "count rows in slice",
            ),
        })
    }
}

/// No null and no duplicate keys in the written slice.
#[derive(Clone, Debug)]
pub struct UniquenessCheck {
    /// The grain.
    pub keys: Vec<Ident>,
    /// Whether a failure stops the run.
    pub blocking: bool,
}

/// How many duplicate keys a uniqueness check samples.
pub const SAMPLE_LIMIT: usize = 10;

#[async_trait]
impl Validator for UniquenessCheck {
    fn name(&self) -> String {
        let keys: Vec<&str> = self.keys.iter().map(Ident::as_str).collect();
        format!("unique({})", keys.join(", "))
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn check_batch(&self, ctx: &CheckContext<'_>, b: &BatchCheck<'_>) -> Result<Outcome> {
        let r = ctx
            .warehouse
            .key_report(ctx.table, &self.keys, &b.batch.predicate, SAMPLE_LIMIT)
            .await?;
        let bad = r.duplicate_keys + r.null_keys;
        Ok(Outcome {
            check: self.name(),
            batch: Some(b.batch.id.clone()),
            status: if bad == 0 {
                Status::Pass
            } else if self.blocking {
                Status::Fail
            } else {
                Status::Warn
            },
            blocking: self.blocking,
            observed: bad as f64,
            expected: Some(0.0),
            threshold: Some(Threshold::Absolute(0.0)),
            detail: format!(
                "{} duplicate key(s), {} null key(s) in {} row(s)",
                r.duplicate_keys, r.null_keys, r.rows
            ),
            sample: r.sample,
            query: query_text(
                ctx,
                |d| {
                    crate::sql::stmt::key_report(
                        d,
                        ctx.table,
                        &self.keys,
                        &b.batch.predicate,
                        SAMPLE_LIMIT,
                    )
                    .0
                },
                "group by key having count(*) > 1",
            ),
        })
    }
}
