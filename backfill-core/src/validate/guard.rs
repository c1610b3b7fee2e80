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

use crate::error::Result;
pub use crate::warehouse::Guard;
use crate::warehouse::{SliceWrite, Warehouse};

/// Runs `write`'s guards through `warehouse`'s own queries, for an engine
/// that applies a write and can undo it before anyone reads it (the
/// testkit's fake). SQL engines run the same guards inside the write's
/// transaction instead.
pub async fn check_guards(
    warehouse: &dyn Warehouse,
    write: &SliceWrite<'_>,
    (rows_before, rows_written): (u64, u64),
) -> Result<()> {
    let (table, batch) = (write.table, write.batch);
    for g in write.guards {
        match g {
            Guard::Emptiness { .. } => g.judge_written(&batch.id, rows_before, rows_written)?,
            Guard::Unique { keys } => {
                let r = warehouse
                    .key_report(table, keys, &batch.predicate, crate::checks::SAMPLE_LIMIT)
                    .await?;
                g.judge_keys(&r)?;
            }
            Guard::RowCount { .. } => {
                let after = warehouse.count(table, &batch.predicate).await?;
                g.judge_count(rows_before, after)?;
            }
        }
    }
    Ok(())
}
