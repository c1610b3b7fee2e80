//! The adapter seam: what every engine (and the testkit's fake) provides.
//!
//! Operations are typed: tables, predicates, sources and keys, never SQL
//! fragments from the caller. Writes are atomic per call: each
//! `*_slice` method runs in one transaction and either fully applies or
//! leaves the target untouched.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::checks::{Expectation, Threshold};
use crate::error::{Error, Result};
use crate::inspect::{Answer, Inspect};
use crate::ledger::{RunId, TxMark};
use crate::plan::Batch;
use crate::sql::Dialect;
use crate::{Ident, Predicate, Source, TableRef, TableSchema, Value};

pub use crate::sql::{BATCH_COLUMN, MARKER_COLUMN};

/// One batch written by overwriting its slice: in one transaction, check
/// the guard, copy the pre-image, delete the slice, insert the new slice,
/// and (when `mark` is given) mark the batch written in the ledger.
#[derive(Clone, Copy, Debug)]
pub struct SliceWrite<'a> {
    /// The run.
    pub run_id: &'a RunId,
    /// The batch.
    pub batch: &'a Batch,
    /// The table written (the target, a stage or a new version).
    pub table: &'a TableRef,
    /// Where new rows come from.
    pub source: &'a Source,
    /// Whether `source` is the run's staged snapshot of the corrected rows
    /// (`RunOptions::stage_source`): a table of the run's own that never
    /// reads the written table, so a batch may insert straight from it
    /// instead of copying its slice aside before the delete.
    pub staged_source: bool,
    /// The columns written, in order.
    pub columns: &'a [Ident],
    /// Pre-image table to copy the slice into first, if any.
    pub snapshot: Option<&'a TableRef>,
    /// Ledger update to commit in the same transaction, if the ledger
    /// lives in this engine.
    pub mark: Option<&'a TxMark>,
    /// Blocking checks of the written slice to run after the write and
    /// before the commit; a failure is [`Error::ValidationFailed`] and
    /// nothing of the write stays.
    ///
    /// [`Error::ValidationFailed`]: crate::Error::ValidationFailed
    pub guards: &'a [Guard],
}

impl SliceWrite<'_> {
    /// Whether the batch may insert straight from its source: the run's
    /// staged snapshot, which never reads the written table, so no copy of
    /// the slice is needed before the delete, and its columns were checked
    /// when the run made it.
    pub fn straight_from_source(&self) -> bool {
        self.staged_source && !self.source.is_bounded()
    }
}

/// One batch written by merging on a key: null and duplicate source keys
/// are refused before any write; then, in one transaction, the pre-image
/// of touched keys is kept, rows are updated or inserted, and the ledger
/// is marked. An engine without transactions keeps the pre-image (with
/// the batch's marker) and then the key log, one statement each, and
/// merges in one more (see `engine::warehouse::autocommit`).
#[derive(Clone, Copy, Debug)]
pub struct MergeWrite<'a> {
    /// The slice write (table, source, columns, snapshot, mark).
    pub slice: SliceWrite<'a>,
    /// The key columns.
    pub keys: &'a [Ident],
    /// Table recording which keys each batch touched (for rollback), if
    /// snapshots are on.
    pub key_log: Option<&'a TableRef>,
    /// The run's whole scope, if the merge must stay inside it: a source
    /// key whose target row lies outside it is refused before the write
    /// ([`Error::KeysOutsideScope`]).
    ///
    /// [`Error::KeysOutsideScope`]: crate::Error::KeysOutsideScope
    pub scope: Option<&'a Predicate>,
}

/// One batch's write as a commit group holds it: an overwrite of its
/// slice or a merge on a key.
#[derive(Clone, Copy, Debug)]
pub enum BatchWrite<'a> {
    /// See [`SliceWrite`].
    Overwrite(SliceWrite<'a>),
    /// See [`MergeWrite`].
    Merge(MergeWrite<'a>),
}

impl<'a> BatchWrite<'a> {
    /// The slice write (for a merge, the slice it merges).
    pub fn slice(&self) -> &SliceWrite<'a> {
        match self {
            BatchWrite::Overwrite(w) => w,
            BatchWrite::Merge(m) => &m.slice,
        }
    }

    /// The batch written.
    pub fn batch(&self) -> &'a Batch {
        self.slice().batch
    }

    /// Writes this one batch in its own transaction.
    pub async fn apply(&self, w: &dyn Warehouse) -> Result<WriteOutcome> {
        match self {
            BatchWrite::Overwrite(s) => w.overwrite_slice(s).await,
            BatchWrite::Merge(m) => w.merge_slice(m).await,
        }
    }
}

/// Why a commit group did not commit. Nothing of any of its batches was
/// written, unless `landed` says the commit itself went through.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFailure {
    /// The position in the group of the batch whose write failed; `None`
    /// when the transaction as a whole failed (its begin or its commit).
    pub index: Option<usize>,
    /// The error.
    pub error: Error,
}

impl GroupFailure {
    /// The write of the group's `index`-th batch failed.
    pub fn at(index: usize, error: Error) -> Self {
        GroupFailure {
            index: Some(index),
            error,
        }
    }

    /// The group's transaction failed as a whole.
    pub fn whole(error: Error) -> Self {
        GroupFailure { index: None, error }
    }
}

impl std::fmt::Display for GroupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "write {} of the group: {}", i + 1, self.error),
            None => write!(f, "the group's transaction: {}", self.error),
        }
    }
}

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
    /// The rows written from the source against the rows the slice held:
    /// no empty (or shrunken, below `min_ratio`) source slice over a slice
    /// that had rows. See [`crate::brief::Emptiness`].
    Emptiness {
        /// The least share of the slice's rows the source must give.
        min_ratio: f64,
        /// Batches allowed to come back empty.
        expected_empty: Vec<crate::plan::BatchId>,
    },
}

impl Guard {
    /// The check's name, as its `Validator` reports
    /// it: `unique(id)`, `row_count`.
    pub fn name(&self) -> String {
        match self {
            Guard::Unique { keys } => unique_name(keys),
            Guard::RowCount { .. } => "row_count".into(),
            Guard::Emptiness { .. } => "emptiness".into(),
        }
    }

    /// The emptiness guard of a brief's validation plan, unless it is off
    /// or the pattern does not replace whole rows (a merge of nothing
    /// changes nothing).
    pub fn emptiness(brief: &crate::brief::Brief) -> Option<Guard> {
        let e = &brief.validation.emptiness;
        (!e.off && brief.strategy.replaces_rows()).then(|| Guard::Emptiness {
            min_ratio: e.min_ratio,
            expected_empty: e.expected_empty.clone(),
        })
    }

    /// Judges the rows a batch's write took from its source against the
    /// rows its slice held: [`Error::GuardFailed`] for a source slice
    /// that is empty, or below the share, where the slice had rows.
    pub fn judge_written(
        &self,
        batch: &crate::plan::BatchId,
        before: u64,
        written: u64,
    ) -> Result<()> {
        let Guard::Emptiness {
            min_ratio,
            expected_empty,
        } = self
        else {
            return Ok(());
        };
        let least = ((before as f64) * min_ratio).ceil() as u64;
        let short = before > 0 && (written == 0 || written < least);
        if !short || expected_empty.contains(batch) {
            return Ok(());
        }
        Err(Error::GuardFailed {
            check: self.name(),
            observed: written as f64,
            expected: Some(before as f64),
            detail: format!(
                "batch {batch}: the source slice holds {written} row(s) where the target held \
                 {before}{}. A source that lost its history would empty the batch; if it is \
                 meant to, declare it under validation.emptiness.expected_empty",
                if *min_ratio > 0.0 {
                    format!(" (at least {least} expected, {:.0}%)", min_ratio * 100.0)
                } else {
                    String::new()
                }
            ),
            sample: Vec::new(),
        })
    }

    /// The limit the check is judged by.
    pub fn threshold(&self) -> Threshold {
        match self {
            Guard::Unique { .. } => Threshold::Absolute(0.0),
            Guard::RowCount { expect } => expect.judge(0, 0).1,
            Guard::Emptiness { min_ratio, .. } => Threshold::Percent(min_ratio * 100.0),
        }
    }

    /// Judges a key report of the slice after the write:
    /// [`Error::GuardFailed`] for a null or duplicate key.
    pub fn judge_keys(&self, r: &KeyReport) -> Result<()> {
        let bad = r.duplicate_keys + r.null_keys;
        if bad == 0 {
            return Ok(());
        }
        Err(Error::GuardFailed {
            check: self.name(),
            observed: bad as f64,
            expected: Some(0.0),
            detail: format!(
                "{} duplicate key(s), {} null key(s) in {} row(s)",
                r.duplicate_keys, r.null_keys, r.rows
            ),
            sample: r.sample.clone(),
        })
    }

    /// Judges the slice's rows after the write against before:
    /// [`Error::GuardFailed`] beyond the expected change.
    pub fn judge_count(&self, before: u64, after: u64) -> Result<()> {
        let Guard::RowCount { expect } = self else {
            return Ok(());
        };
        if expect.judge(before, after).0 {
            return Ok(());
        }
        Err(Error::GuardFailed {
            check: self.name(),
            observed: after as f64,
            expected: Some(before as f64),
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

/// What a slice write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Rows in the slice before the write (deleted, or matched by a merge).
    pub rows_before: u64,
    /// Rows written (inserted, or inserted plus updated by a merge).
    pub rows_written: u64,
    /// Rows copied into the pre-image.
    pub rows_snapshotted: u64,
    /// Whether the ledger was marked in the same transaction.
    pub ledger_marked: bool,
}

/// How to find the rows a batch wrote, so rollback can remove them.
#[derive(Clone, Copy, Debug)]
pub enum Footprint<'a> {
    /// The batch's slice of the table.
    Slice(&'a Predicate),
    /// The keys logged for the batch in a key-log table.
    Keys {
        /// Key columns.
        keys: &'a [Ident],
        /// The key-log table.
        key_log: &'a TableRef,
    },
}

/// Restore one batch from its pre-image, in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct Restore<'a> {
    /// The table restored.
    pub table: &'a TableRef,
    /// The pre-image table.
    pub snapshot: &'a TableRef,
    /// The batch.
    pub batch: &'a Batch,
    /// The rows to remove before re-inserting the pre-image.
    pub footprint: Footprint<'a>,
    /// Columns, in order.
    pub columns: &'a [Ident],
}

/// Key quality of a slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyReport {
    /// Rows in the slice.
    pub rows: u64,
    /// Rows with a NULL in any key column.
    pub null_keys: u64,
    /// Keys that occur more than once.
    pub duplicate_keys: u64,
    /// A bounded sample of duplicate keys, rendered as text.
    pub sample: Vec<String>,
}

/// An order-independent checksum of a table's rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// Row count.
    pub rows: u64,
    /// Order-independent hash of the rows.
    pub hash: String,
}

/// Checks that `schema` (of `table`) has every column in `cols`;
/// [`crate::Error::UnknownColumn`] names the first missing one.
pub fn check_columns<'a>(
    schema: &TableSchema,
    cols: impl IntoIterator<Item = &'a Ident>,
    table: &str,
) -> Result<()> {
    for col in cols {
        if schema.column(col).is_none() {
            return Err(Error::UnknownColumn {
                table: table.to_string(),
                column: col.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that a source has the columns a write needs
/// ([`crate::Error::SchemaMismatch`]) and its predicate reads
/// ([`crate::Error::UnknownColumn`]).
pub fn check_source(
    schema: &TableSchema,
    source: &Source,
    columns: &[Ident],
    predicate: &Predicate,
) -> Result<()> {
    for col in columns {
        if schema.column(col).is_none() {
            return Err(Error::SchemaMismatch(format!(
                "source ({}) has no column {col}",
                source.describe()
            )));
        }
    }
    check_columns(schema, predicate.columns(), &source.describe())
}

/// The adapter trait that every engine implements.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// A short engine name ("duckdb", "postgres", "fake").
    fn engine(&self) -> &str;

    /// The SQL dialect, or `None` for an in-memory engine.
    fn dialect(&self) -> Option<&dyn Dialect>;

    /// Why this engine cannot run `strategy`, if it cannot: preflight
    /// refuses such a run before anything is written. `None` (the
    /// default) when it can, as every engine with transactions can.
    fn refuses(&self, _strategy: &crate::StrategySpec) -> Option<String> {
        None
    }

    /// Whether a write given `mark` marks its batch in the ledger in the
    /// same transaction as the data: the ledger lives in this engine's
    /// database. Without it the runner marks the batch after the write,
    /// so a crash between the two repeats the batch on resume.
    fn marks_in_tx(&self, mark: &crate::ledger::TxMark) -> bool;

    /// The table's columns, or `None` when it does not exist.
    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>>;

    /// The name the engine resolves `table` to, qualified by its schema
    /// (an unqualified name resolves in the session's current schema), so
    /// that two spellings of one table are one table: target locks and
    /// the runs recorded on a target are keyed by it. An engine without
    /// schemas returns the name as given.
    async fn resolve(&self, table: &TableRef) -> Result<TableRef>;

    /// The columns a source yields (a query is described without running it
    /// in full). Unknown tables are [`crate::Error::UnknownTable`].
    async fn describe_source(&self, source: &Source) -> Result<TableSchema>;

    /// Rows of `table` matching `predicate`.
    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64>;

    /// Every `every`-th value of `column` in order, among rows matching
    /// `predicate`: the boundaries of keyset batches.
    async fn key_boundaries(
        &self,
        table: &TableRef,
        column: &Ident,
        predicate: &Predicate,
        every: u64,
    ) -> Result<Vec<Value>>;

    /// Null and duplicate keys among rows of `table` matching `predicate`.
    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport>;

    /// An order-independent checksum of the rows matching `predicate`.
    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum>;

    /// Up to `limit` rows matching `predicate`, ordered by `order_by`: for
    /// inspection and tests, never for moving data.
    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>>;

    /// Overwrites one batch's slice (see [`SliceWrite`]).
    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome>;

    /// Merges one batch's source slice on a key (see [`MergeWrite`]).
    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome>;

    /// The most consecutive batches this warehouse writes in one
    /// transaction with [`Warehouse::write_group`]: 1 (the default) for
    /// an engine that commits each batch on its own.
    fn max_group(&self) -> usize {
        1
    }

    /// Writes several batches in one transaction, a commit group: each
    /// batch's own protocol (guards, pre-image, write, ledger mark), in
    /// order, then one commit. All or nothing: when one write fails,
    /// nothing of the group stays and [`GroupFailure::index`] names it.
    /// A batch is still the unit that is observed, validated and rolled
    /// back; the group is what the engine pays a commit for.
    ///
    /// The default writes a group of one; a longer group than
    /// [`Warehouse::max_group`] is refused.
    async fn write_group(
        &self,
        writes: &[BatchWrite<'_>],
    ) -> std::result::Result<Vec<WriteOutcome>, GroupFailure> {
        match writes {
            [one] => {
                let r = match one {
                    BatchWrite::Overwrite(s) => self.overwrite_slice(s).await,
                    BatchWrite::Merge(m) => self.merge_slice(m).await,
                };
                r.map(|o| vec![o]).map_err(|e| GroupFailure::at(0, e))
            }
            _ => Err(GroupFailure::whole(Error::NotAllowed(format!(
                "{} writes one batch per transaction; a group of {} was asked",
                self.engine(),
                writes.len()
            )))),
        }
    }

    /// Restores one batch from its pre-image (see [`Restore`]); returns the
    /// rows restored, or `None` (touching nothing) when the batch has no
    /// marker, i.e. was never written. Idempotent.
    async fn restore_slice(&self, restore: &Restore<'_>) -> Result<Option<u64>>;

    /// Creates `to` with `from`'s columns, and its rows when `with_rows`.
    /// Does nothing if `to` exists.
    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()>;

    /// Creates a pre-image or key-log table: a text column
    /// [`BATCH_COLUMN`], a boolean [`MARKER_COLUMN`], then `columns` typed
    /// as in `like`, all nullable. Does nothing if it exists.
    async fn create_snapshot_table(
        &self,
        like: &TableRef,
        columns: &[Ident],
        snapshot: &TableRef,
    ) -> Result<()>;

    /// In one transaction: rename `target` to `keep_as` and `replacement`
    /// to `target`.
    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()>;

    /// Creates or replaces `view` as `SELECT * FROM table`.
    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()>;

    /// Defers the background maintenance that a run's many small commits
    /// would otherwise trigger one after another (DuckDB's automatic
    /// checkpoints), until [`Warehouse::resume_maintenance`]. Calls nest:
    /// maintenance resumes after the last resume. Nothing by default.
    async fn defer_maintenance(&self) -> Result<()> {
        Ok(())
    }

    /// Ends what [`Warehouse::defer_maintenance`] deferred: puts the
    /// engine's setting back to its default and runs the deferred
    /// maintenance once (DuckDB: one `CHECKPOINT`). A setting the user
    /// chose is never deferred, so never changed. Nothing by default.
    async fn resume_maintenance(&self) -> Result<()> {
        Ok(())
    }

    /// What a copy of `table` made by [`Warehouse::create_copy`] would not
    /// carry, so that [`Warehouse::swap`]ping the copy in for `table` would
    /// lose it: views that read `table` by identity, grants, triggers,
    /// foreign keys, constraints, sequences. One line each, naming it; none
    /// by default (an engine whose copies carry everything, or whose
    /// tables have none of these).
    async fn swap_hazards(&self, _table: &TableRef) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Drops a table if it exists; returns whether it existed.
    async fn drop_table(&self, table: &TableRef) -> Result<bool>;

    /// Materializes `source` restricted to `predicate` into a new table
    /// `into`, sorted by `order_by`, binding `bounds` into a bounded query.
    /// A bounded query that yields rows outside `predicate` fails with
    /// [`crate::Error::OutOfBounds`] and leaves no table. Does nothing if
    /// `into` exists. Returns the rows staged.
    async fn stage_source(
        &self,
        source: &Source,
        predicate: &Predicate,
        bounds: (Option<&Value>, Option<&Value>),
        order_by: &Ident,
        into: &TableRef,
    ) -> Result<u64>;

    /// Answers a read-only question (see [`crate::inspect`]): only
    /// aggregates and bounded samples come back. SQL engines answer with
    /// [`crate::engine::answer`]. Unknown tables and columns are
    /// typed errors.
    async fn inspect(&self, question: &Inspect) -> Result<Answer>;

    /// Runs statements the user wrote (a downstream refresh such as
    /// `REFRESH MATERIALIZED VIEW`), as they are.
    async fn execute(&self, sql: &str) -> Result<()>;
}

/// Implements [`Warehouse`] for a type by forwarding every method to a
/// warehouse it holds: `forward_warehouse!([generics] Type, |s| expr)`,
/// where `expr` gives the inner warehouse from `s: &Type`. Adapters wrap
/// [`crate::engine::SqlWarehouse`] this way, and `Arc<W>` is a warehouse
/// through it.
#[macro_export]
macro_rules! forward_warehouse {
    ([$($gen:tt)*] $ty:ty, |$s:ident| $inner:expr) => {
        #[$crate::__async_trait]
        impl<$($gen)*> $crate::Warehouse for $ty {
            fn engine(&self) -> &str {
                let $s = self;
                $crate::Warehouse::engine($inner)
            }
            fn dialect(&self) -> Option<&dyn $crate::sql::Dialect> {
                let $s = self;
                $crate::Warehouse::dialect($inner)
            }
            fn refuses(&self, strategy: &$crate::StrategySpec) -> Option<String> {
                let $s = self;
                $crate::Warehouse::refuses($inner, strategy)
            }
            fn marks_in_tx(&self, mark: &$crate::ledger::TxMark) -> bool {
                let $s = self;
                $crate::Warehouse::marks_in_tx($inner, mark)
            }
            async fn describe(
                &self,
                table: &$crate::TableRef,
            ) -> $crate::Result<Option<$crate::TableSchema>> {
                let $s = self;
                $crate::Warehouse::describe($inner, table).await
            }
            async fn resolve(
                &self,
                table: &$crate::TableRef,
            ) -> $crate::Result<$crate::TableRef> {
                let $s = self;
                $crate::Warehouse::resolve($inner, table).await
            }
            async fn describe_source(
                &self,
                source: &$crate::Source,
            ) -> $crate::Result<$crate::TableSchema> {
                let $s = self;
                $crate::Warehouse::describe_source($inner, source).await
            }
            async fn count(
                &self,
                table: &$crate::TableRef,
                predicate: &$crate::Predicate,
            ) -> $crate::Result<u64> {
                let $s = self;
                $crate::Warehouse::count($inner, table, predicate).await
            }
            async fn key_boundaries(
                &self,
                table: &$crate::TableRef,
                column: &$crate::Ident,
                predicate: &$crate::Predicate,
                every: u64,
            ) -> $crate::Result<Vec<$crate::Value>> {
                let $s = self;
                $crate::Warehouse::key_boundaries($inner, table, column, predicate, every).await
            }
            async fn key_report(
                &self,
                table: &$crate::TableRef,
                keys: &[$crate::Ident],
                predicate: &$crate::Predicate,
                sample: usize,
            ) -> $crate::Result<$crate::warehouse::KeyReport> {
                let $s = self;
                $crate::Warehouse::key_report($inner, table, keys, predicate, sample).await
            }
            async fn checksum(
                &self,
                table: &$crate::TableRef,
                predicate: &$crate::Predicate,
            ) -> $crate::Result<$crate::warehouse::Checksum> {
                let $s = self;
                $crate::Warehouse::checksum($inner, table, predicate).await
            }
            async fn sample_rows(
                &self,
                table: &$crate::TableRef,
                predicate: &$crate::Predicate,
                order_by: &[$crate::Ident],
                limit: usize,
            ) -> $crate::Result<Vec<Vec<$crate::Value>>> {
                let $s = self;
                $crate::Warehouse::sample_rows($inner, table, predicate, order_by, limit).await
            }
            async fn overwrite_slice(
                &self,
                write: &$crate::warehouse::SliceWrite<'_>,
            ) -> $crate::Result<$crate::warehouse::WriteOutcome> {
                let $s = self;
                $crate::Warehouse::overwrite_slice($inner, write).await
            }
            async fn merge_slice(
                &self,
                write: &$crate::warehouse::MergeWrite<'_>,
            ) -> $crate::Result<$crate::warehouse::WriteOutcome> {
                let $s = self;
                $crate::Warehouse::merge_slice($inner, write).await
            }
            fn max_group(&self) -> usize {
                let $s = self;
                $crate::Warehouse::max_group($inner)
            }
            async fn write_group(
                &self,
                writes: &[$crate::warehouse::BatchWrite<'_>],
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::warehouse::WriteOutcome>,
                $crate::warehouse::GroupFailure,
            > {
                let $s = self;
                $crate::Warehouse::write_group($inner, writes).await
            }
            async fn restore_slice(
                &self,
                restore: &$crate::warehouse::Restore<'_>,
            ) -> $crate::Result<Option<u64>> {
                let $s = self;
                $crate::Warehouse::restore_slice($inner, restore).await
            }
            async fn create_copy(
                &self,
                from: &$crate::TableRef,
                to: &$crate::TableRef,
                with_rows: bool,
            ) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::create_copy($inner, from, to, with_rows).await
            }
            async fn create_snapshot_table(
                &self,
                like: &$crate::TableRef,
                columns: &[$crate::Ident],
                snapshot: &$crate::TableRef,
            ) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::create_snapshot_table($inner, like, columns, snapshot).await
            }
            async fn swap(
                &self,
                target: &$crate::TableRef,
                replacement: &$crate::TableRef,
                keep_as: &$crate::TableRef,
            ) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::swap($inner, target, replacement, keep_as).await
            }
            async fn point_view(
                &self,
                view: &$crate::TableRef,
                table: &$crate::TableRef,
            ) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::point_view($inner, view, table).await
            }
            async fn defer_maintenance(&self) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::defer_maintenance($inner).await
            }
            async fn resume_maintenance(&self) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::resume_maintenance($inner).await
            }
            async fn swap_hazards(
                &self,
                table: &$crate::TableRef,
            ) -> $crate::Result<Vec<String>> {
                let $s = self;
                $crate::Warehouse::swap_hazards($inner, table).await
            }
            async fn drop_table(&self, table: &$crate::TableRef) -> $crate::Result<bool> {
                let $s = self;
                $crate::Warehouse::drop_table($inner, table).await
            }
            async fn stage_source(
                &self,
                source: &$crate::Source,
                predicate: &$crate::Predicate,
                bounds: (Option<&$crate::Value>, Option<&$crate::Value>),
                order_by: &$crate::Ident,
                into: &$crate::TableRef,
            ) -> $crate::Result<u64> {
                let $s = self;
                $crate::Warehouse::stage_source($inner, source, predicate, bounds, order_by, into)
                    .await
            }
            async fn inspect(
                &self,
                question: &$crate::inspect::Inspect,
            ) -> $crate::Result<$crate::inspect::Answer> {
                let $s = self;
                $crate::Warehouse::inspect($inner, question).await
            }
            async fn execute(&self, sql: &str) -> $crate::Result<()> {
                let $s = self;
                $crate::Warehouse::execute($inner, sql).await
            }
        }
    };
}

// Any shared warehouse is a warehouse.
forward_warehouse!([T: Warehouse + ?Sized] std::sync::Arc<T>, |s| &**s);
