//! Guards: blocking per-batch checks an engine runs inside the batch's
//! transaction, after the write and before the commit.
//!
//! A batch is the unit people validate; a transaction is what the engine
//! pays for. A blocking check on a batch that ran after the commit would
//! leave a bad day live while the run stops, so the checks that need only
//! the batch's own slice (its keys' uniqueness, its row count) are handed
//! to the write as [`Guard`]s: SQL engines run them on the write's own
//! connection before `COMMIT`, and a failure rolls the write back with
//! its ledger mark. Checks that compare with other data (metric deltas,
//! reconciliation, row diffs) still run after the commit; on an in-place
//! pattern their blocking failure stops the run with that day written,
//! and rollback restores it from its pre-image.

use crate::checks::Threshold;
use crate::error::{Error, Result};
use crate::plan::BatchId;
use crate::warehouse::{KeyReport, SliceWrite, Warehouse};
use crate::{Expectation, Ident};

/// A blocking per-batch check run before the batch commits.
#[derive(Clone, Debug, PartialEq)]
pub enum Guard {
    /// No null and no duplicate key among the slice's rows after the write.
    Unique {
        /// The grain.
        keys: Vec<Ident>,
    },
    /// The slice's row count after the write, against the rows it held
    /// before.
    RowCount {
        /// The allowed change.
        expect: Expectation,
    },
}

impl Guard {
    /// The check's name, as its [`Validator`](super::Validator) reports
    /// it: `unique(id)`, `row_count`.
    pub fn name(&self) -> String {
        match self {
            Guard::Unique { keys } => unique_name(keys),
            Guard::RowCount { .. } => "row_count".into(),
        }
    }

    /// Judges a key report of the slice after the write:
    /// [`Error::GuardFailed`] for a null or duplicate key.
    pub fn judge_keys(&self, batch: &BatchId, r: &KeyReport) -> Result<()> {
        let bad = r.duplicate_keys + r.null_keys;
        if bad == 0 {
            return Ok(());
        }
        Err(Error::GuardFailed {
            batch: batch.to_string(),
            check: self.name(),
            observed: bad as f64,
            expected: Some(0.0),
            threshold: Some(Threshold::Absolute(0.0)),
            detail: format!(
                "{} duplicate key(s), {} null key(s) in {} row(s)",
                r.duplicate_keys, r.null_keys, r.rows
            ),
            sample: r.sample.clone(),
        })
    }

    /// Judges the slice's rows after the write against before:
    /// [`Error::GuardFailed`] beyond the expected change.
    pub fn judge_count(&self, batch: &BatchId, before: u64, after: u64) -> Result<()> {
        let Guard::RowCount { expect } = self else {
            return Ok(());
        };
        let (ok, threshold) = expect.judge(before, after);
        if ok {
            return Ok(());
        }
        Err(Error::GuardFailed {
            batch: batch.to_string(),
            check: self.name(),
            observed: after as f64,
            expected: Some(before as f64),
            threshold: Some(threshold),
            detail: format!("{before} rows before, {after} after"),
            sample: Vec::new(),
        })
    }
}

/// The name of a uniqueness check on `keys`.
pub(crate) fn unique_name(keys: &[Ident]) -> String {
    let keys: Vec<&str> = keys.iter().map(Ident::as_str).collect();
    format!("unique({})", keys.join(", "))
}

/// Runs `write`'s guards through `warehouse`'s own queries, for an engine
/// that applies a write and can undo it before anyone reads it (the
/// testkit's fake). SQL engines run the same guards inside the write's
/// transaction instead.
pub async fn check_guards(
    warehouse: &dyn Warehouse,
    write: &SliceWrite<'_>,
    rows_before: u64,
) -> Result<()> {
    let (table, batch) = (write.table, write.batch);
    for g in write.guards {
        match g {
            Guard::Unique { keys } => {
                let r = warehouse
                    .key_report(table, keys, &batch.predicate, crate::checks::SAMPLE_LIMIT)
                    .await?;
                g.judge_keys(&batch.id, &r)?;
            }
            Guard::RowCount { .. } => {
                let after = warehouse.count(table, &batch.predicate).await?;
                g.judge_count(&batch.id, rows_before, after)?;
            }
        }
    }
    Ok(())
}
