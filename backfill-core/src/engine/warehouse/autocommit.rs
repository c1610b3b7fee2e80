//! The batch-write protocol on an engine without transactions, where each
//! statement is its own commit (Spark on Delta tables).
//!
//! What a transaction gives the shared protocol, one statement gives here:
//!
//! - everything that can refuse a batch runs **before** its first write:
//!   the out-of-bounds guard, non-finite values, and the write's guards,
//!   judged on the rows the slice is about to hold (the source's slice)
//!   rather than on the written slice; a refused batch writes nothing;
//! - the pre-image is one statement: the slice's rows and the batch's
//!   marker, only while the batch has no marker (the statement checks
//!   that itself, so a worker that looked before another's write and
//!   writes after it keeps the first state, not that write's output); a
//!   repeated batch never keeps its own output as the state to go back
//!   to;
//! - the write is one statement that replaces the batch's slice
//!   (`INSERT INTO … REPLACE WHERE`), and so is a restore;
//! - the ledger lives elsewhere and the runner marks the batch after the
//!   write: a crash between the two writes the batch again on resume,
//!   which replaces the slice with the same rows as long as the source
//!   does not read the table written. A query source is staged once per
//!   run by default, before any write, which makes it so.
//!
//! What a transaction would give and this does not:
//!
//! - a source that is not staged is read by each check and again by the
//!   write (its slice is a temporary view): one that changes while the run
//!   writes can pass its guards with other rows than those written;
//! - the ledger fences a batch's mark, not its statements: a worker whose
//!   lease was taken over while it still ran can write the batch's slice
//!   again beside the one that took it (its pre-image stays the first);
//! - the tables this makes (pre-images, staged sources, versions) take the
//!   session's default format (`spark.sql.sources.default`), which must be
//!   Delta: a statement that cannot replace a slice of them fails before
//!   the batch's write.

use super::{
    check_source, check_write, has_marker, require_table, run_guards, slice_table, snapshot_layout,
    source_schema, stage_slice, Checked, SqlWarehouse,
};
use crate::engine::exec::{query_count, Executor};
use crate::error::{Error, Result};
use crate::pattern::StrategySpec;
use crate::sql::stmt;
use crate::warehouse::{check_columns, Footprint, Restore, SliceWrite, WriteOutcome};
use crate::{Predicate, Source};

impl<E: Executor> SqlWarehouse<E> {
    /// Why this engine cannot run `strategy` without transactions, if it
    /// cannot (see [`crate::Warehouse::refuses`]).
    pub(super) fn refuses_alone(&self, strategy: &StrategySpec) -> Option<String> {
        let engine = self.exec.engine();
        if !self.exec.replaces_slices() {
            return Some(format!(
                "{engine} has no transactions, and its tables here cannot replace a slice in one \
                 statement (Delta's INSERT INTO … REPLACE WHERE): a batch could be left half \
                 written. Write to Delta tables"
            ));
        }
        match strategy {
            StrategySpec::PartitionOverwrite | StrategySpec::ParallelVersion { .. } => None,
            StrategySpec::StagingSwap => Some(format!(
                "a staging swap renames two tables at once, which {engine} cannot do atomically: \
                 between the renames the target would not exist. Use a parallel version (its view \
                 is moved in one statement) or a partition overwrite"
            )),
            StrategySpec::Merge { .. } => Some(format!(
                "a merge on {engine} would touch rows in several statements without a \
                 transaction to hold them together, and its pre-image of touched keys could be \
                 left half kept. Use a partition overwrite of the affected windows"
            )),
        }
    }

    /// Refuses a write the engine cannot make atomic.
    fn require_replace(&self) -> Result<()> {
        match self.exec.replaces_slices() {
            true => Ok(()),
            false => Err(Error::Unsupported(format!(
                "{} has no transactions and cannot replace a table's slice in one statement \
                 here, so nothing was written (write to Delta tables)",
                self.exec.engine()
            ))),
        }
    }

    /// Overwrites one batch's slice (see the module's description).
    pub(super) async fn overwrite_alone(&self, w: &SliceWrite<'_>) -> Result<WriteOutcome> {
        self.require_replace()?;
        let d = self.d();
        let mut conn = self.exec.connect().await?;
        let c = &mut *conn;
        let (table, batch) = (w.table, w.batch);
        let id = batch.id.to_string();
        let Checked {
            floats,
            target,
            snapshot_layout,
            ..
        } = check_write(c, d, w, &[]).await?;
        // The run's staged snapshot was checked when the run made it, and
        // is read with the batch's predicate; any other source's slice is
        // a temporary view, checked against the batch's bounds.
        let direct = match (w.straight_from_source(), w.source) {
            (true, Source::Table(t)) => Some(t.clone()),
            _ => None,
        };
        let r = async {
            let (slice, filter) = match &direct {
                Some(t) => (t.clone(), batch.predicate.clone()),
                None => {
                    let src = source_schema(c, d, w.source).await?;
                    check_source(&src, w.source, w.columns, &batch.predicate)?;
                    (stage_slice(c, d, w.source, batch).await?, Predicate::All)
                }
            };
            super::check_finite(c, d, w, &floats, &slice, &filter).await?;
            let before = query_count(c, &stmt::count(d, table, &batch.predicate)).await?;
            let written = query_count(c, &stmt::count(d, &slice, &filter)).await?;
            run_guards(c, d, w, (before, written), (&slice, &filter)).await?;
            let mut snapshotted = 0;
            if let (Some(snap), Some(layout)) = (w.snapshot, &snapshot_layout) {
                if !has_marker(c, d, snap, &id).await? {
                    c.execute(&stmt::replace_snapshot(
                        d,
                        snap,
                        &layout.columns,
                        table,
                        &batch.predicate,
                        &id,
                    ))
                    .await?;
                    snapshotted = before;
                }
            }
            c.execute(&stmt::replace_slice(
                d,
                table,
                &target.columns,
                w.columns,
                &Source::Table(slice),
                batch,
            ))
            .await?;
            Ok(WriteOutcome {
                rows_before: before,
                rows_written: written,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            })
        }
        .await;
        if direct.is_none() {
            // The write stands or failed whatever becomes of the view; the
            // next batch replaces it anyway.
            if let Err(e) = c.execute(&stmt::drop_scratch(d, &slice_table(d))).await {
                tracing::warn!(batch = %id, error = %e, "could not drop the batch's slice view");
            }
        }
        r
    }

    /// Restores one batch's slice from its pre-image, in one statement.
    pub(super) async fn restore_alone(&self, r: &Restore<'_>) -> Result<Option<u64>> {
        self.require_replace()?;
        let d = self.d();
        let mut conn = self.exec.connect().await?;
        let c = &mut *conn;
        let id = r.batch.id.to_string();
        let Footprint::Slice(p) = r.footprint else {
            return Err(Error::Unsupported(format!(
                "{} cannot restore a merge's keys without a transaction",
                self.exec.engine()
            )));
        };
        let target = require_table(c, d, r.table).await?;
        let tname = r.table.to_string();
        check_columns(&target, r.columns.iter().chain(p.columns()), &tname)?;
        let (_, snap_cols) = snapshot_layout(c, d, r.snapshot).await?;
        if let Some(col) = r.columns.iter().find(|c| !snap_cols.contains(c)) {
            return Err(Error::UnknownColumn {
                table: r.snapshot.to_string(),
                column: col.to_string(),
            });
        }
        if !has_marker(c, d, r.snapshot, &id).await? {
            return Ok(None);
        }
        let rows = query_count(c, &stmt::snapshot_rows(d, r.snapshot, &id)).await?;
        c.execute(&stmt::replace_from_snapshot(
            d,
            r.table,
            &target.columns,
            r.columns,
            p,
            r.snapshot,
            &id,
        ))
        .await?;
        Ok(Some(rows))
    }
}
