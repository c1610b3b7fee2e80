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
//! - a merge is one `MERGE INTO`, after its source keys are refused or
//!   let through and its guards judged on the state it would leave (a
//!   scratch view of the target as merged). Its pre-image of touched keys
//!   (with the batch's marker) comes first, then its key log, each one
//!   statement that adds only what is not there yet: a key is logged only
//!   once its first state is kept, so a crash between the statements
//!   repeats them without keeping a state twice or a merged state at all. Its
//!   restore is one `MERGE INTO` from the pre-image and key log (kept
//!   keys get their rows back, inserted keys are deleted);
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
//!   the batch's write;
//! - a merge's restore puts a key's one pre-image row back: the target's
//!   keys must have stayed unique since preflight checked them (a key kept
//!   twice makes Delta refuse the whole restore, and nothing changes).

use super::{
    check_merge_source, check_restore, check_source, check_write, has_marker, merge_set,
    refuse_merge_keys, run_guards, scratch, slice_table, source_schema, stage_slice, Checked,
    SqlWarehouse,
};
use crate::engine::exec::{self, query_count, Executor};
use crate::error::{Error, Result};
use crate::pattern::StrategySpec;
use crate::sql::stmt;
use crate::warehouse::{Footprint, MergeWrite, Restore, SliceWrite, WriteOutcome};
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
            StrategySpec::PartitionOverwrite
            | StrategySpec::ParallelVersion { .. }
            | StrategySpec::Merge { .. } => None,
            StrategySpec::StagingSwap => Some(format!(
                "a staging swap renames two tables at once, which {engine} cannot do atomically: \
                 between the renames the target would not exist. Use a parallel version (its view \
                 is moved in one statement) or a partition overwrite"
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

    /// Merges one batch's source slice on its keys (see the module's
    /// description).
    pub(super) async fn merge_alone(&self, m: &MergeWrite<'_>) -> Result<WriteOutcome> {
        self.require_replace()?;
        let d = self.d();
        let mut conn = self.exec.connect().await?;
        let c = &mut *conn;
        let w = &m.slice;
        let (table, keys) = (w.table, m.keys);
        let id = w.batch.id.to_string();
        let Checked {
            floats,
            target,
            snapshot_layout,
            ..
        } = check_write(c, d, w, keys).await?;
        let log_layout = check_merge_source(c, d, m).await?.map(|(layout, _)| layout);
        let merged = scratch(d, "__bf_merged");
        let r = async {
            let slice = stage_slice(c, d, w.source, w.batch).await?;
            super::check_finite(c, d, w, &floats, &slice, &Predicate::All).await?;
            refuse_merge_keys(c, d, m, &slice).await?;
            let set = merge_set(w.columns, keys);
            let (matched, inserted) = match c
                .query(&stmt::merge_counts(d, table, keys, &slice))
                .await?
                .first()
            {
                Some(r) => (exec::count(r, 0)?, exec::count(r, 1)?),
                None => (0, 0),
            };
            let counts = (matched, matched + inserted);
            if !w.guards.is_empty() {
                c.execute(&stmt::merged_state(
                    d,
                    &merged,
                    &target.columns,
                    table,
                    (&set, w.columns),
                    keys,
                    &slice,
                ))
                .await?;
                run_guards(c, d, w, counts, (&merged, &w.batch.predicate)).await?;
            }
            // The first state of each key with the batch's marker, then the
            // key (with the marker, in the key log, without a pre-image).
            // The engine reports no counts: the rows to keep are counted
            // first.
            let mut snapshotted = 0;
            if let (Some(log), Some(logged)) = (m.key_log, &log_layout) {
                let kept = match (w.snapshot, &snapshot_layout) {
                    (Some(snap), Some(layout)) => Some((snap, layout)),
                    _ => None,
                };
                if let Some((snap, layout)) = kept {
                    let (count, keep) = stmt::snapshot_unkept_keys(
                        d,
                        snap,
                        &layout.columns,
                        table,
                        keys,
                        (&slice, log),
                        &id,
                    );
                    snapshotted = query_count(c, &count).await?;
                    c.execute(&keep).await?;
                }
                c.execute(&stmt::log_keys_row(
                    d,
                    log,
                    &logged.columns,
                    (keys, &slice),
                    &id,
                    kept.is_none(),
                ))
                .await?;
            }
            c.execute(&stmt::merge_into(d, table, (&set, w.columns), keys, &slice))
                .await?;
            Ok(WriteOutcome {
                rows_before: counts.0,
                rows_written: counts.1,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            })
        }
        .await;
        for t in [slice_table(d), merged] {
            if let Err(e) = c.execute(&stmt::drop_scratch(d, &t)).await {
                tracing::warn!(batch = %id, error = %e, "could not drop a scratch relation");
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
        let target = check_restore(c, d, r).await?;
        if !has_marker(c, d, r.snapshot, &id).await? {
            return Ok(None);
        }
        let rows = query_count(c, &stmt::snapshot_rows(d, r.snapshot, &id)).await?;
        let restore = match r.footprint {
            Footprint::Slice(p) => stmt::replace_from_snapshot(
                d,
                r.table,
                &target.columns,
                r.columns,
                p,
                r.snapshot,
                &id,
            ),
            Footprint::Keys { keys, key_log } => {
                stmt::merge_from_snapshot(d, r.table, r.columns, keys, (r.snapshot, key_log), &id)
            }
        };
        c.execute(&restore).await?;
        Ok(Some(rows))
    }
}
