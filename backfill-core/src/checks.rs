//! The checks a brief declares, and how a count may change: what the
//! validation plan says, not how it runs (that is [`crate::validate`]).

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::inspect::{Compared, Dim, Metric};
use crate::{Ident, TableRef, Value};

/// How many duplicate keys a uniqueness check samples.
pub const SAMPLE_LIMIT: usize = 10;

/// A threshold a check compares against.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// At most this much, in the check's unit.
    Absolute(f64),
    /// At most this many percent of the baseline.
    Percent(f64),
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

    /// Judges an exact amount `after` against `before`; a change beyond
    /// the range of an amount is [`crate::Error::AmountOutOfRange`].
    pub fn judge_amount(&self, before: Amount, after: Amount) -> crate::Result<(bool, Threshold)> {
        let diff = after.checked_sub(before)?.abs();
        Ok(match *self {
            Expectation::Unchanged => (diff.is_zero(), Threshold::Absolute(0.0)),
            Expectation::MaxChangeAbsolute(n) => {
                let limit = Amount::from(i64::try_from(n).unwrap_or(i64::MAX));
                (diff <= limit, Threshold::Absolute(n as f64))
            }
            Expectation::MaxChangePercent(p) => {
                let ok = if before.is_zero() {
                    diff.is_zero()
                } else {
                    diff.to_f64() * 100.0 / before.abs().to_f64() <= p
                };
                (ok, Threshold::Percent(p))
            }
        })
    }
}

/// What to do about one kind of drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// Stop claiming batches; the operator accepts or cancels.
    Pause,
    /// Go on; the run's report and change note name it.
    Warn,
}

/// The brief's policy on drift, per kind; each unset kind takes the
/// default of the brief's risk class ([`DriftPolicy::act`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftPolicy {
    /// Columns or types of the target or a source changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Act>,
    /// A table source's rows in the scope changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Act>,
    /// A dependent of the target was redefined, added or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definitions: Option<Act>,
}

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Columns or types.
    Columns,
    /// Rows in the scope.
    Rows,
    /// A dependent's definition.
    Definition,
}

/// A check declared in the brief's validation plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "snake_case",
    tag = "check",
    deny_unknown_fields
)]
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
    /// End: every planned batch done, and no expected day or partition of
    /// the scope empty (an expected spine left-joined to the rows).
    Coverage {
        /// Days or partitions that may be empty.
        #[serde(default)]
        empty_allowed: u64,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: row counts (and distinct keys) per group, old against new.
    Completeness {
        /// Grouped by these (say day and status).
        #[serde(default)]
        by: Vec<Dim>,
        /// Also count distinct tuples of these columns.
        #[serde(default)]
        keys: Vec<Ident>,
        /// The allowed change per group.
        expect: Expectation,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: null rates of columns, old against new, in one pass.
    NullRate {
        /// The columns.
        columns: Vec<Ident>,
        /// How many percentage points a rate may rise.
        #[serde(default)]
        max_increase: f64,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: rows whose foreign key is set and has no parent.
    References {
        /// The foreign key columns.
        columns: Vec<Ident>,
        /// The parent (dimension) table.
        parent: TableRef,
        /// The parent's key columns, in order.
        parent_columns: Vec<Ident>,
        /// Orphans allowed.
        #[serde(default)]
        max: u64,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: a stakeholder metric, measured before the write into the
    /// baseline and after; the change per group must be within `expect`
    /// and explained exactly by added, removed and changed rows.
    Reconcile {
        /// The metric.
        metric: Metric,
        /// The row key, to attribute the change.
        keys: Vec<Ident>,
        /// The allowed change per group.
        expect: Expectation,
        /// Unexplained change tolerated per group (float sums); default
        /// none.
        #[serde(default)]
        tolerance: Option<Amount>,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: a row-level diff of old against new over the scope, run after
    /// a grain check on both sides.
    RowDiff {
        /// The key.
        keys: Vec<Ident>,
        /// The compared columns; empty compares every other column
        /// exactly.
        #[serde(default)]
        columns: Vec<Compared>,
        /// Keys sampled per kind.
        #[serde(default = "default_sample")]
        sample: usize,
        /// Most rows that may differ (added, removed or changed), if
        /// bounded; a percentage is of the old rows.
        #[serde(default)]
        max_changed: Option<Threshold>,
        /// Take the fast path on this partition dimension: compare counts
        /// and hash sums per partition, and join only those that differ
        /// (worth it when changes are concentrated in a few partitions).
        #[serde(default)]
        partition: Option<Dim>,
        /// Whether a failure stops the run.
        #[serde(default = "yes")]
        blocking: bool,
    },
    /// End: columns added, removed or retyped between old and new.
    Schema {
        /// Whether a difference stops the run.
        #[serde(default)]
        blocking: bool,
    },
    /// End: named keys (known-bad records, high-value customers, rows
    /// near boundaries), shown before and after side by side.
    EdgeCases {
        /// The key column.
        column: Ident,
        /// The keys.
        values: Vec<Value>,
    },
    /// End: table size before and after, from the engine's catalog.
    Size,
    /// Runs a whole-scope check on each batch's slice instead, right
    /// after the batch is written, comparing against the batch's old rows
    /// (its pre-image, or the table the new data replaces). Completeness,
    /// null rates, references, reconciliation and row diffs can run per
    /// batch; coverage, schema, edge cases and size are whole-scope
    /// checks.
    PerBatch {
        /// The check.
        of: Box<CheckSpec>,
    },
}

crate::strict::strict_tagged!(CheckSpec, "check", ["size"]);

fn yes() -> bool {
    true
}

fn default_sample() -> usize {
    SAMPLE_LIMIT
}

impl CheckSpec {
    /// A blocking per-batch check that `keys` are unique and never null
    /// in each written slice; the names are validated.
    pub fn unique<I, S>(keys: I) -> crate::Result<CheckSpec>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(CheckSpec::Unique {
            keys: keys
                .into_iter()
                .map(|k| Ident::new(k))
                .collect::<crate::Result<_>>()?,
            blocking: true,
        })
    }

    /// Whether [`CheckSpec::PerBatch`] can run this check on a batch's
    /// slice (the others are whole-scope checks).
    pub fn can_run_per_batch(&self) -> bool {
        matches!(
            self,
            CheckSpec::Completeness { .. }
                | CheckSpec::NullRate { .. }
                | CheckSpec::References { .. }
                | CheckSpec::Reconcile { .. }
                | CheckSpec::RowDiff { .. }
        )
    }

    /// The columns of the target this check reads (checked before any
    /// write).
    pub fn columns(&self) -> Vec<Ident> {
        match self {
            CheckSpec::PerBatch { of } => of.columns(),
            CheckSpec::RowCount { .. } | CheckSpec::Schema { .. } | CheckSpec::Size => Vec::new(),
            CheckSpec::Coverage { .. } => Vec::new(),
            CheckSpec::Unique { keys, .. } => keys.clone(),
            CheckSpec::Completeness { by, keys, .. } => by
                .iter()
                .map(|d| d.column.clone())
                .chain(keys.iter().cloned())
                .collect(),
            CheckSpec::NullRate { columns, .. } | CheckSpec::References { columns, .. } => {
                columns.clone()
            }
            CheckSpec::Reconcile { metric, keys, .. } => {
                keys.iter().cloned().chain(metric.columns()).collect()
            }
            CheckSpec::RowDiff {
                keys,
                columns,
                partition,
                ..
            } => keys
                .iter()
                .cloned()
                .chain(columns.iter().map(|c| c.column.clone()))
                .chain(partition.iter().map(|p| p.column.clone()))
                .collect(),
            CheckSpec::EdgeCases { column, .. } => vec![column.clone()],
        }
    }
}
