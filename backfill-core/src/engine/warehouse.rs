//! [`SqlWarehouse`]: the [`Warehouse`] on any SQL engine, written once over
//! its [`Executor`]. The batch-write protocol lives here: check, stage the
//! slice, guard, marker-guarded pre-image, delete and insert (or merge),
//! and the ledger mark, all in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::checks::SAMPLE_LIMIT;
use crate::engine::exec::{
    self, execute_all, finish, in_tx, query_count, CatalogAnswer, Conn, Executor, Failure, Limits,
};
use crate::engine::ledger::{LedgerHome, SqlLedger};
use crate::engine::read::SqlRead;
use crate::error::{Error, Result};
use crate::inspect::{Answer, Inspect};
use crate::ledger::{Clock, SystemClock, TxMark, DEFAULT_SCHEMA};
use crate::plan::Batch;
use crate::sql::{stmt, Dialect, Sql};
use crate::warehouse::Guard;
use crate::warehouse::{
    check_columns, check_source, BatchWrite, Checksum, Footprint, GroupFailure, KeyReport,
    MergeWrite, Restore, SliceWrite, Warehouse, WriteOutcome, BATCH_COLUMN, MARKER_COLUMN,
};
use crate::{Column, ColumnType, Ident, Predicate, Source, TableRef, TableSchema, Value};

mod autocommit;

/// How writes run: session limits per transaction, and how a swap waits
/// for its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSettings {
    /// Limits of every write transaction (none: the engine's defaults).
    pub limits: Option<Limits>,
    /// The lock timeout of one swap attempt (none: the write limits).
    pub swap_lock_timeout: Option<Duration>,
    /// How many times a swap that could not take its lock is tried.
    pub swap_attempts: u32,
}

impl Default for WriteSettings {
    fn default() -> Self {
        WriteSettings {
            limits: None,
            swap_lock_timeout: None,
            swap_attempts: 1,
        }
    }
}

/// A SQL database as a backfill [`Warehouse`]: every operation pushed
/// down as SQL from the shared renderer through the engine's
/// [`Executor`]. Clones share the executor.
///
/// A [`SqlLedger`] made with [`SqlWarehouse::ledger`] lives in the same
/// database, and each batch write marks its ledger row in the same
/// transaction as the data, fenced by the claim's token.
///
/// How the contract is kept, on every engine:
///
/// - a slice write first materializes the batch's source slice once into a
///   temporary table (a bounded query with the batch's bounds, then the
///   out-of-bounds guard; any other source with the batch predicate), so
///   guard, pre-image, delete and insert all see the same rows, even when
///   the source reads the table being written; the run's own staged
///   snapshot is inserted from directly;
/// - pre-image rows are added only while the batch has no marker row, so a
///   repeated batch never replaces its pre-image with its own output;
/// - merge is `UPDATE … FROM` plus `INSERT … WHERE NOT EXISTS`, which needs
///   no unique constraint on the target, after null and duplicate source
///   keys are refused;
/// - where several sessions write at once, a write first takes an
///   advisory lock on (table, batch), and DDL that workers may race to run
///   (pre-image, stage and staged-source tables) one on the table;
/// - tables and columns are looked up in the engine's catalog by their
///   names as written.
pub struct SqlWarehouse<E: Executor> {
    exec: Arc<E>,
    ledgers: Arc<Mutex<HashMap<String, LedgerHome>>>,
    settings: WriteSettings,
    /// Runs deferring the engine's checkpoints now, and whether the first
    /// of them deferred the setting (it was at its default), so the last
    /// one resets it.
    deferred: Arc<tokio::sync::Mutex<(usize, bool)>>,
}

impl<E: Executor> Clone for SqlWarehouse<E> {
    fn clone(&self) -> Self {
        SqlWarehouse {
            exec: self.exec.clone(),
            ledgers: self.ledgers.clone(),
            settings: self.settings,
            deferred: self.deferred.clone(),
        }
    }
}

impl<E: Executor> std::fmt::Debug for SqlWarehouse<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlWarehouse")
            .field("exec", &self.exec)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<E: Executor> SqlWarehouse<E> {
    /// A warehouse on `exec` with default write settings.
    pub fn new(exec: E) -> Self {
        SqlWarehouse {
            exec: Arc::new(exec),
            ledgers: Arc::default(),
            settings: WriteSettings::default(),
            deferred: Arc::default(),
        }
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.exec
    }

    /// The write settings.
    pub fn settings(&self) -> WriteSettings {
        self.settings
    }

    /// Changes the write settings.
    pub fn with_settings(mut self, settings: WriteSettings) -> Self {
        self.settings = settings;
        self
    }

    fn d(&self) -> &'static dyn Dialect {
        self.exec.dialect()
    }

    fn ledgers(&self) -> MutexGuard<'_, HashMap<String, LedgerHome>> {
        self.ledgers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// system clock. See [`DEFAULT_SCHEMA`].
    pub async fn ledger(&self, schema: &str) -> Result<SqlLedger<E>> {
        self.ledger_with_clock(schema, Arc::new(SystemClock)).await
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// given clock. Leases are timed by this clock, not the server's.
    pub async fn ledger_with_clock(
        &self,
        schema: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<SqlLedger<E>> {
        let schema = Ident::new(schema)?;
        let id = format!("{}:{schema}", self.exec.id());
        let ledger = SqlLedger::create(self.exec.clone(), schema, clock, id.clone()).await?;
        self.ledgers().insert(id, ledger.home().clone());
        Ok(ledger)
    }

    /// A ledger in [`DEFAULT_SCHEMA`] on the system clock.
    pub async fn default_ledger(&self) -> Result<SqlLedger<E>> {
        self.ledger(DEFAULT_SCHEMA).await
    }

    /// The ledger a mark belongs to, when it was made on this warehouse.
    fn home_of(&self, mark: Option<&TxMark>) -> Option<(TxMark, LedgerHome)> {
        let m = mark?;
        let home = self.ledgers().get(&m.ledger).cloned()?;
        Some((m.clone(), home))
    }

    /// Runs trusted SQL written by the caller (setup, fixtures), statements
    /// separated by semicolons, without parameters.
    pub async fn execute_batch(&self, sql: impl AsRef<str>) -> Result<()> {
        let mut c = self.exec.connect().await?;
        c.script(sql.as_ref()).await
    }

    /// Creates a table from a schema (types as in [`stmt::sql_type`]).
    pub async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()> {
        let mut c = self.exec.connect().await?;
        c.execute(&stmt::create_table(self.d(), table, schema))
            .await
            .map(|_| ())
    }

    /// Inserts rows, each in the table's column order, in one transaction.
    pub async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()> {
        let mut tx = self.exec.begin(None).await?;
        let r = insert_rows(&mut *tx, self.d(), table, rows).await;
        finish(tx, r).await
    }

    /// Creates or replaces a view reading `table`.
    pub async fn create_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        self.point_view(view, table).await
    }
}

async fn insert_rows(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    table: &TableRef,
    rows: &[Vec<Value>],
) -> Result<()> {
    let names = require_table(c, d, table).await?.names();
    // PostgreSQL binds at most 65535 parameters a statement.
    let per = (60_000 / names.len().max(1)).clamp(1, 500);
    for chunk in rows.chunks(per) {
        if let Some(bad) = chunk.iter().find(|r| r.len() != names.len()) {
            return Err(Error::SchemaMismatch(format!(
                "{table} has {} column(s), a row has {}",
                names.len(),
                bad.len()
            )));
        }
        c.execute(&stmt::insert_values(d, table, &names, chunk))
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Catalog helpers (inside or outside a transaction)
// ---------------------------------------------------------------------------

const TABLE: &str = "BASE TABLE";

/// `Some("BASE TABLE" | "VIEW" | …)`, or `None` when nothing has the name.
async fn kind(c: &mut dyn Conn, d: &dyn Dialect, t: &TableRef) -> Result<Option<String>> {
    match c.relation(t).await? {
        CatalogAnswer::BySql => {}
        CatalogAnswer::Missing => return Ok(None),
        CatalogAnswer::Found { view, .. } => {
            return Ok(Some(if view { "VIEW" } else { TABLE }.to_string()))
        }
    }
    let rows = c.query(&stmt::relation_kind(d, t)).await?;
    rows.first().map(|r| exec::string(r, 0)).transpose()
}

/// A relation's columns. `strict` refuses a column name that is not a
/// valid identifier (a target must be fully writable); otherwise such
/// columns are left out (a source only needs the columns it is asked for).
async fn describe(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    t: &TableRef,
    strict: bool,
) -> Result<Option<TableSchema>> {
    let listed = match c.relation(t).await? {
        CatalogAnswer::Missing => return Ok(None),
        CatalogAnswer::Found { columns, .. } => columns,
        CatalogAnswer::BySql => {
            let rows = c.query(&stmt::describe(d, t)).await?;
            let mut listed = Vec::with_capacity(rows.len());
            for r in &rows {
                let (name, ty, nullable) =
                    (exec::string(r, 0)?, exec::string(r, 1)?, exec::text(r, 2)?);
                listed.push((
                    name,
                    stmt::column_type(&ty),
                    nullable.as_deref() != Some("NO"),
                ));
            }
            listed
        }
    };
    if listed.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    for (name, ty, nullable) in listed {
        let name = match Ident::new(name) {
            Ok(n) => n,
            Err(e) if strict => return Err(e),
            Err(_) => continue,
        };
        columns.push(Column { name, ty, nullable });
    }
    Ok(Some(TableSchema { columns }))
}

/// A table or view, or [`Error::UnknownTable`].
async fn require_relation(c: &mut dyn Conn, d: &dyn Dialect, t: &TableRef) -> Result<TableSchema> {
    describe(c, d, t, true)
        .await?
        .ok_or_else(|| Error::UnknownTable(t.to_string()))
}

/// A base table (writes never go to a view), or [`Error::UnknownTable`].
async fn require_table(c: &mut dyn Conn, d: &dyn Dialect, t: &TableRef) -> Result<TableSchema> {
    if kind(c, d, t).await?.as_deref() != Some(TABLE) {
        return Err(Error::UnknownTable(t.to_string()));
    }
    require_relation(c, d, t).await
}

/// The columns a source yields.
async fn source_schema(c: &mut dyn Conn, d: &dyn Dialect, source: &Source) -> Result<TableSchema> {
    match source {
        Source::Table(t) => describe(c, d, t, false)
            .await?
            .ok_or_else(|| Error::UnknownTable(t.to_string())),
        Source::Query(_) => {
            let cols = c.columns(&stmt::source_columns(d, source)).await?;
            Ok(TableSchema {
                columns: cols
                    .into_iter()
                    .filter_map(|(name, ty)| Ident::new(name).ok().map(|n| Column::new(n, ty)))
                    .collect(),
            })
        }
    }
}

/// A pre-image or key-log table's data columns, after checking it has the
/// batch and marker columns.
async fn snapshot_columns(c: &mut dyn Conn, d: &dyn Dialect, t: &TableRef) -> Result<Vec<Ident>> {
    Ok(snapshot_layout(c, d, t).await?.1)
}

/// A pre-image or key-log table's columns, all of them in order, and its
/// data columns, after checking it has the batch and marker columns.
async fn snapshot_layout(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    t: &TableRef,
) -> Result<(TableSchema, Vec<Ident>)> {
    let schema = require_table(c, d, t).await?;
    for name in [BATCH_COLUMN, MARKER_COLUMN] {
        if !schema.columns.iter().any(|c| c.name.as_str() == name) {
            return Err(Error::UnknownColumn {
                table: t.to_string(),
                column: name.to_string(),
            });
        }
    }
    let data = schema
        .columns
        .iter()
        .filter(|c| c.name.as_str() != BATCH_COLUMN && c.name.as_str() != MARKER_COLUMN)
        .map(|c| c.name.clone())
        .collect();
    Ok((schema, data))
}

/// The session's temporary table holding a batch's source slice, in the
/// temporary schema so a user table of the same name is never read or
/// dropped.
fn slice_table(d: &dyn Dialect) -> TableRef {
    scratch(d, "__bf_slice")
}

/// The scratch relation `name`, in the dialect's temporary schema if it
/// names one.
fn scratch(d: &dyn Dialect, name: &str) -> TableRef {
    let name = Ident::new(name).expect("a valid identifier");
    match d.temp_schema() {
        Some(s) => TableRef::qualified(Ident::new(s).expect("a valid identifier"), name),
        None => TableRef::new(name),
    }
}

fn qualified_name(t: &TableRef) -> String {
    match &t.schema {
        Some(_) => t.to_string(),
        None => format!("(current schema).{}", t.name),
    }
}

/// Takes the dialect's advisory lock on the DDL of a table (pre-image,
/// stage, staged source) that several workers may race to run.
async fn lock_table_ddl(c: &mut dyn Conn, d: &dyn Dialect, t: &TableRef) -> Result<()> {
    lock(c, d, &format!("backfill:table:{}", qualified_name(t))).await
}

/// Takes the dialect's advisory lock on one batch's write to a table, so
/// two workers never interleave the same batch.
async fn lock_batch_write(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    t: &TableRef,
    batch: &str,
) -> Result<()> {
    lock(
        c,
        d,
        &format!("backfill:write:{}:{batch}", qualified_name(t)),
    )
    .await
}

async fn lock(c: &mut dyn Conn, d: &dyn Dialect, key: &str) -> Result<()> {
    if let Some(q) = d.advisory_lock(key) {
        c.query(&q).await?;
    }
    Ok(())
}

/// Materializes a batch's source slice once into [`slice_table`] (a
/// bounded query gets the batch's bounds and is guarded; any other source
/// gets the batch predicate).
async fn stage_slice(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    source: &Source,
    batch: &Batch,
) -> Result<TableRef> {
    let tmp = slice_table(d);
    c.execute(&stmt::drop_scratch(d, &tmp)).await?;
    let bounded = source.is_bounded();
    let filter = (!bounded).then_some(&batch.predicate);
    c.execute(&stmt::materialize(
        d,
        &tmp,
        true,
        source,
        (batch.start.as_ref(), batch.end.as_ref()),
        filter,
        None,
    ))
    .await?;
    if bounded {
        let outside = query_count(c, &stmt::outside(d, &tmp, &batch.predicate)).await?;
        if outside > 0 {
            return Err(Error::OutOfBounds {
                batch: batch.id.to_string(),
                rows: outside,
            });
        }
    }
    Ok(tmp)
}

/// The rows of `table` in each of `slices` (disjoint), in one scan of
/// their `union`.
async fn slice_counts(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    table: &TableRef,
    slices: &[&Predicate],
    union: &Predicate,
) -> Result<Vec<u64>> {
    let mut counts = vec![0; slices.len()];
    for r in c
        .query(&stmt::slice_counts(d, table, slices, union))
        .await?
    {
        let i = exec::int(&r, 0)?.and_then(|i| usize::try_from(i).ok());
        match i.and_then(|i| counts.get_mut(i)) {
            Some(n) => *n = exec::count(&r, 1)?,
            None => {
                return Err(Error::engine(format!(
                    "rows of {table} in a group's union but in none of its batches"
                )))
            }
        }
    }
    Ok(counts)
}

async fn has_marker(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    t: &TableRef,
    batch_id: &str,
) -> Result<bool> {
    Ok(query_count(c, &stmt::marker_count(d, t, batch_id)).await? > 0)
}

// ---------------------------------------------------------------------------
// The batch-write protocol
// ---------------------------------------------------------------------------

/// Refuses a batch whose source rows (in `rel`, among those matching
/// `predicate`) hold NaN or infinity in one of the target's float columns
/// being written, before anything of it is written.
async fn check_finite(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    w: &SliceWrite<'_>,
    floats: &[Ident],
    rel: &TableRef,
    predicate: &Predicate,
) -> Result<()> {
    for column in floats {
        let rows = query_count(c, &stmt::non_finite_count(d, rel, column, predicate)).await?;
        if rows > 0 {
            return Err(Error::NonFinite {
                batch: w.batch.id.to_string(),
                column: column.to_string(),
                rows,
            });
        }
    }
    Ok(())
}

/// Checks, before any write, that the target is a table with the columns
/// written, `keys` and the batch predicate's, and that the pre-image (if
/// any) has the batch layout and target columns. Returns what the write
/// needs from that one catalog lookup.
async fn check_write(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    w: &SliceWrite<'_>,
    keys: &[Ident],
) -> Result<Checked> {
    let target = require_table(c, d, w.table).await?;
    let floats = w
        .columns
        .iter()
        .filter(|n| {
            target
                .column(n)
                .is_some_and(|col| col.ty == ColumnType::Float)
        })
        .cloned()
        .collect();
    let tname = w.table.to_string();
    check_columns(
        &target,
        w.columns
            .iter()
            .chain(keys)
            .chain(w.batch.predicate.columns()),
        &tname,
    )?;
    let (snapshot, snapshot_layout) = match w.snapshot {
        Some(s) => {
            let (layout, cols) = snapshot_layout(c, d, s).await?;
            check_columns(&target, &cols, &tname)?;
            (Some(cols), Some(layout))
        }
        None => (None, None),
    };
    Ok(Checked {
        snapshot,
        floats,
        target,
        snapshot_layout,
    })
}

/// The first column of each row of `query`, as text.
async fn texts(c: &mut dyn Conn, query: &Sql) -> Result<Vec<String>> {
    c.query(query)
        .await?
        .iter()
        .map(|r| Ok(exec::text(r, 0)?.unwrap_or_default()))
        .collect()
}

/// Null and duplicate keys of `table`'s rows matching `predicate`, on
/// connection `c` (inside its transaction, if one is open).
async fn key_report(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    table: &TableRef,
    keys: &[Ident],
    predicate: &Predicate,
    sample: usize,
) -> Result<KeyReport> {
    let (stats, samples) = stmt::key_report(d, table, keys, predicate, sample);
    let (rows, null_keys, duplicate_keys) = match c.query(&stats).await?.first() {
        Some(r) => (exec::count(r, 0)?, exec::count(r, 1)?, exec::count(r, 2)?),
        None => (0, 0, 0),
    };
    let sample = if duplicate_keys > 0 && sample > 0 {
        texts(c, &samples).await?
    } else {
        Vec::new()
    };
    Ok(KeyReport {
        rows,
        null_keys,
        duplicate_keys,
        sample,
    })
}

/// The target of a restore, after checking that it, the pre-image and the
/// key log have the columns the restore needs.
async fn check_restore(c: &mut dyn Conn, d: &dyn Dialect, r: &Restore<'_>) -> Result<TableSchema> {
    let target = require_table(c, d, r.table).await?;
    let tname = r.table.to_string();
    check_columns(&target, r.columns, &tname)?;
    let snap_cols = snapshot_columns(c, d, r.snapshot).await?;
    for col in r.columns {
        if !snap_cols.contains(col) {
            return Err(Error::UnknownColumn {
                table: r.snapshot.to_string(),
                column: col.to_string(),
            });
        }
    }
    match r.footprint {
        Footprint::Slice(p) => check_columns(&target, p.columns(), &tname)?,
        Footprint::Keys { keys, key_log } => {
            let logged = snapshot_columns(c, d, key_log).await?;
            if let Some(k) = keys.iter().find(|k| !logged.contains(k)) {
                return Err(Error::UnknownColumn {
                    table: key_log.to_string(),
                    column: k.to_string(),
                });
            }
            check_columns(&target, keys, &tname)?;
        }
    }
    Ok(target)
}

/// The key log of a merge, if it keeps one (all its columns in order, and
/// its data columns), after checking that the merge has keys and that its
/// source has the columns written, the keys and the logged ones.
async fn check_merge_source(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    m: &MergeWrite<'_>,
) -> Result<Option<(TableSchema, Vec<Ident>)>> {
    if m.keys.is_empty() {
        return Err(Error::InvalidPlan(
            "merge needs at least one key column".into(),
        ));
    }
    let w = &m.slice;
    let log = match m.key_log {
        Some(l) => Some(snapshot_layout(c, d, l).await?),
        None => None,
    };
    let src = source_schema(c, d, w.source).await?;
    let mut needed = w.columns.to_vec();
    needed.extend(m.keys.iter().cloned());
    needed.extend(log.iter().flat_map(|(_, cols)| cols.iter().cloned()));
    check_source(&src, w.source, &needed, &w.batch.predicate)?;
    Ok(log)
}

/// Refuses a merge's batch before any write when its source `slice`
/// holds a null or duplicate key, a key whose target row lies outside
/// the run's scope, or a key an earlier batch of the run logged.
async fn refuse_merge_keys(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    m: &MergeWrite<'_>,
    slice: &TableRef,
) -> Result<()> {
    let (table, keys) = (m.slice.table, m.keys);
    let id = m.slice.batch.id.to_string();
    let (stats, sample) = stmt::key_report(d, slice, keys, &Predicate::All, SAMPLE_LIMIT);
    let (nulls, dups) = match c.query(&stats).await?.first() {
        Some(r) => (exec::count(r, 1)?, exec::count(r, 2)?),
        None => (0, 0),
    };
    if nulls > 0 {
        return Err(Error::NullKeys {
            batch: id,
            rows: nulls,
        });
    }
    if dups > 0 {
        let sample = texts(c, &sample).await?;
        return Err(Error::DuplicateKeys {
            batch: id,
            groups: dups,
            sample,
        });
    }
    execute_all(c, &d.analyze(slice)).await?;
    if let Some(scope) = m.scope {
        // Target rows outside the scope are not the run's to rewrite.
        let (count, sample) = stmt::keys_outside(d, table, keys, slice, scope, SAMPLE_LIMIT);
        let rows = query_count(c, &count).await?;
        if rows > 0 {
            let sample = texts(c, &sample).await?;
            return Err(Error::KeysOutsideScope {
                batch: id,
                rows,
                sample,
            });
        }
    }
    if let Some(log) = m.key_log {
        // A key an earlier batch of the run wrote is not upserted again.
        let (count, sample) = stmt::keys_logged_elsewhere(d, log, keys, slice, &id, SAMPLE_LIMIT);
        let duplicates = query_count(c, &count).await?;
        if duplicates > 0 {
            return Err(Error::SourceKeysNotUnique {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                duplicates,
                sample: texts(c, &sample).await?,
            });
        }
    }
    Ok(())
}

/// The columns a merge sets on a matched row: those written that are
/// not keys (the keys themselves when there are no others).
fn merge_set(columns: &[Ident], keys: &[Ident]) -> Vec<Ident> {
    let set: Vec<Ident> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .cloned()
        .collect();
    match set.is_empty() {
        true => keys.to_vec(),
        false => set,
    }
}

/// Runs a write's guards on connection `c`: after the write and before
/// its commit, on the written slice (a failure is returned and the
/// caller's transaction rolls the write back); or, where there is no
/// transaction, before the write, on the rows the slice is about to hold
/// (the rows of `slice` matching its predicate), so a failure leaves
/// nothing written.
async fn run_guards(
    c: &mut dyn Conn,
    d: &dyn Dialect,
    w: &SliceWrite<'_>,
    (rows_before, rows_written): (u64, u64),
    (slice, predicate): (&TableRef, &Predicate),
) -> Result<()> {
    let batch = w.batch;
    for g in w.guards {
        match g {
            Guard::Emptiness { .. } => g.judge_written(&batch.id, rows_before, rows_written)?,
            Guard::Unique { keys } => {
                let r = key_report(c, d, slice, keys, predicate, SAMPLE_LIMIT).await?;
                g.judge_keys(&r)?;
            }
            Guard::RowCount { .. } => {
                let after = query_count(c, &stmt::count(d, slice, predicate)).await?;
                g.judge_count(rows_before, after)?;
            }
        }
    }
    Ok(())
}

/// What [`check_write`] found.
#[derive(Clone)]
struct Checked {
    /// The pre-image's data columns, if the write keeps one.
    snapshot: Option<Vec<Ident>>,
    /// The float columns among those written (checked for NaN and
    /// infinity before the write).
    floats: Vec<Ident>,
    /// The target's columns, in order.
    target: TableSchema,
    /// The pre-image's columns, in order, if the write keeps one.
    snapshot_layout: Option<TableSchema>,
}

/// What the writes of one transaction found in the catalog, keyed by what
/// they asked: the later batches of a commit group write the same table
/// with the same columns, and inside one transaction the catalog cannot
/// change under its writes (DDL waits for their locks, or conflicts at
/// their commit), so it is looked up once a group.
#[derive(Default)]
struct CatalogCache(Option<(String, Checked)>);

/// What the writes of one transaction share: the catalog they looked up,
/// and, in a commit group, the ledger marks held back to be made in one
/// statement after the last write.
#[derive(Default)]
struct TxState {
    catalog: CatalogCache,
    /// `Some` in a group: the marks to make before the commit.
    marks: Option<Vec<(TxMark, LedgerHome, u64, u64)>>,
}

impl TxState {
    /// The state of a commit group's transaction.
    fn group() -> Self {
        TxState {
            catalog: CatalogCache::default(),
            marks: Some(Vec::new()),
        }
    }
}

impl CatalogCache {
    /// [`check_write`], or what it found for the same question earlier in
    /// this transaction.
    async fn check(
        &mut self,
        c: &mut dyn Conn,
        d: &dyn Dialect,
        w: &SliceWrite<'_>,
        keys: &[Ident],
    ) -> Result<Checked> {
        let asked = format!(
            "{:?}|{:?}|{:?}|{keys:?}|{:?}",
            w.table,
            w.snapshot,
            w.columns,
            w.batch.predicate.columns()
        );
        if let Some((k, found)) = &self.0 {
            if *k == asked {
                return Ok(found.clone());
            }
        }
        let found = check_write(c, d, w, keys).await?;
        self.0 = Some((asked, found.clone()));
        Ok(found)
    }
}

impl<E: Executor> SqlWarehouse<E> {
    /// Overwrites one batch's slice inside the open transaction `c`.
    async fn overwrite_in(
        &self,
        c: &mut dyn Conn,
        w: &SliceWrite<'_>,
        tx: &mut TxState,
    ) -> Result<WriteOutcome> {
        let d = self.d();
        let (table, batch) = (w.table, w.batch);
        let id = batch.id.to_string();
        lock_batch_write(c, d, table, &id).await?;
        let Checked {
            snapshot: snap_cols,
            floats,
            ..
        } = tx.catalog.check(c, d, w, &[]).await?;
        // The run's staged snapshot was checked when the run made it.
        let direct = w.straight_from_source();
        if !direct {
            let src = source_schema(c, d, w.source).await?;
            check_source(&src, w.source, w.columns, &batch.predicate)?;
        }
        // A batch that is exactly one partition swaps a new partition in,
        // where the engine can; anything else deletes and inserts.
        let native = match self.exec.partitions() {
            Some(p) => p
                .exact_partition(c, table, &batch.predicate)
                .await?
                .map(|part| (p, part)),
            None => None,
        };
        // Anything but the run's own snapshot may read the target, so its
        // slice is copied aside before the delete.
        let slice = match direct && native.is_none() {
            true => None,
            false => Some(stage_slice(c, d, w.source, batch).await?),
        };
        if !floats.is_empty() {
            match (&slice, w.source) {
                (Some(s), _) => check_finite(c, d, w, &floats, s, &Predicate::All).await?,
                (None, Source::Table(t)) => {
                    check_finite(c, d, w, &floats, t, &batch.predicate).await?
                }
                // Without a staged slice the write reads the run's staged
                // snapshot, which is a table: a query never gets here.
                (None, Source::Query(_)) => {}
            }
        }
        let mut snapshotted = 0;
        if let (Some(snap), Some(cols)) = (w.snapshot, &snap_cols) {
            if !has_marker(c, d, snap, &id).await? {
                snapshotted = c
                    .execute(&stmt::snapshot_slice(
                        d,
                        snap,
                        cols,
                        table,
                        &batch.predicate,
                        &id,
                    ))
                    .await?;
                c.execute(&stmt::insert_marker(d, snap, &id)).await?;
            }
        }
        let (before, written) = match (native, &slice) {
            (Some((p, part)), Some(slice)) => {
                p.swap_partition(c, table, &part, slice, w.columns).await?
            }
            _ => {
                let before = c
                    .execute(&stmt::delete_slice(d, table, &batch.predicate))
                    .await?;
                let from = slice
                    .clone()
                    .map_or_else(|| w.source.clone(), Source::Table);
                let written = c
                    .execute(&stmt::insert_slice(d, table, w.columns, &from, batch))
                    .await?;
                (before, written)
            }
        };
        if let Some(slice) = &slice {
            c.execute(&stmt::drop_scratch(d, slice)).await?;
        }
        self.settle(
            c,
            w,
            tx,
            WriteOutcome {
                rows_before: before,
                rows_written: written,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            },
        )
        .await
    }

    /// The overwrites of a group that can be written as one: each inserts
    /// straight from the same staged snapshot into the same table with
    /// the same columns, pre-image and guards, and the engine has no
    /// native partition path to prefer.
    fn fusable<'w, 'a>(&self, writes: &'w [BatchWrite<'a>]) -> Option<Vec<&'w SliceWrite<'a>>> {
        if writes.len() < 2 || self.exec.partitions().is_some() {
            return None;
        }
        let slices: Vec<&SliceWrite<'a>> = writes
            .iter()
            .map(|w| match w {
                BatchWrite::Overwrite(s) => Some(s),
                BatchWrite::Merge(_) => None,
            })
            .collect::<Option<_>>()?;
        let first = slices[0];
        let same = |w: &SliceWrite<'_>| {
            w.straight_from_source()
                && matches!(w.source, Source::Table(_))
                && w.source == first.source
                && w.table == first.table
                && w.columns == first.columns
                && w.snapshot == first.snapshot
                && w.guards == first.guards
                && w.run_id == first.run_id
        };
        slices.iter().all(|w| same(w)).then_some(slices)
    }

    /// Writes a group of overwrites as one: each batch's pre-image and
    /// row counts as its own (one scan for the counts of all), then one
    /// delete and one insert over the union of their slices, then each
    /// batch's guards and ledger mark. The batches of a plan are disjoint,
    /// so this is the same table, and the same per-batch record, as
    /// writing them one after another in the transaction.
    async fn overwrite_fused(
        &self,
        c: &mut dyn Conn,
        ws: &[&SliceWrite<'_>],
        tx: &mut TxState,
    ) -> std::result::Result<Vec<WriteOutcome>, GroupFailure> {
        let d = self.d();
        let first = ws[0];
        let table = first.table;
        for (i, w) in ws.iter().enumerate() {
            lock_batch_write(c, d, table, w.batch.id.0.as_str())
                .await
                .map_err(|e| GroupFailure::at(i, e))?;
        }
        let checked = tx
            .catalog
            .check(c, d, first, &[])
            .await
            .map_err(|e| GroupFailure::at(0, e))?;
        let slices: Vec<&Predicate> = ws.iter().map(|w| &w.batch.predicate).collect();
        let owned: Vec<Predicate> = slices.iter().map(|p| (*p).clone()).collect();
        let union = Predicate::union(&owned);
        let whole = GroupFailure::whole;
        let Source::Table(src) = first.source else {
            return Err(whole(Error::engine("a fused group reads a staged table")));
        };
        // A non-finite value is found batch by batch when the group is
        // written again one batch at a time.
        check_finite(c, d, first, &checked.floats, src, &union)
            .await
            .map_err(whole)?;
        let mut snapshotted = vec![0; ws.len()];
        if let (Some(snap), Some(cols)) = (first.snapshot, &checked.snapshot) {
            for (i, w) in ws.iter().enumerate() {
                let id = w.batch.id.0.as_str();
                let at = |e| GroupFailure::at(i, e);
                if !has_marker(c, d, snap, id).await.map_err(at)? {
                    snapshotted[i] = c
                        .execute(&stmt::snapshot_slice(
                            d,
                            snap,
                            cols,
                            table,
                            &w.batch.predicate,
                            id,
                        ))
                        .await
                        .map_err(at)?;
                    c.execute(&stmt::insert_marker(d, snap, id))
                        .await
                        .map_err(at)?;
                }
            }
        }
        let before = slice_counts(c, d, table, &slices, &union)
            .await
            .map_err(whole)?;
        let written = slice_counts(c, d, src, &slices, &union)
            .await
            .map_err(whole)?;
        let deleted = c
            .execute(&stmt::delete_slice(d, table, &union))
            .await
            .map_err(whole)?;
        let group = Batch {
            id: crate::plan::BatchId("group".into()),
            seq: first.batch.seq,
            predicate: union,
            start: None,
            end: None,
        };
        let inserted = c
            .execute(&stmt::insert_slice(
                d,
                table,
                first.columns,
                first.source,
                &group,
            ))
            .await
            .map_err(whole)?;
        if deleted != before.iter().sum::<u64>() || inserted != written.iter().sum::<u64>() {
            return Err(whole(Error::engine(format!(
                "a commit group of {} batches deleted {deleted} and inserted {inserted} rows, \
                 where its batches' counts say {} and {}",
                ws.len(),
                before.iter().sum::<u64>(),
                written.iter().sum::<u64>()
            ))));
        }
        let mut outs = Vec::with_capacity(ws.len());
        for (i, w) in ws.iter().enumerate() {
            let out = WriteOutcome {
                rows_before: before[i],
                rows_written: written[i],
                rows_snapshotted: snapshotted[i],
                ledger_marked: false,
            };
            outs.push(
                self.settle(c, w, tx, out)
                    .await
                    .map_err(|e| GroupFailure::at(i, e))?,
            );
        }
        Ok(outs)
    }

    /// Runs the write's guards, then marks the batch written in the same
    /// transaction, when its ledger lives in this database.
    async fn settle(
        &self,
        c: &mut dyn Conn,
        w: &SliceWrite<'_>,
        tx: &mut TxState,
        mut out: WriteOutcome,
    ) -> Result<WriteOutcome> {
        run_guards(
            c,
            self.d(),
            w,
            (out.rows_before, out.rows_written),
            (w.table, &w.batch.predicate),
        )
        .await?;
        if let Some((mark, home)) = self.home_of(w.mark) {
            let rows = (out.rows_before, out.rows_written);
            match &mut tx.marks {
                Some(held) => held.push((mark, home, rows.0, rows.1)),
                None => {
                    crate::engine::ledger::mark_written(c, &home, &mark, rows.0, rows.1).await?
                }
            }
            out.ledger_marked = true;
        }
        Ok(out)
    }

    /// Merges one batch's source slice on its keys inside the open
    /// transaction `c`.
    async fn merge_in(
        &self,
        c: &mut dyn Conn,
        m: &MergeWrite<'_>,
        tx: &mut TxState,
    ) -> Result<WriteOutcome> {
        let d = self.d();
        let w = &m.slice;
        let (table, batch, keys) = (w.table, w.batch, m.keys);
        let id = batch.id.to_string();
        lock_batch_write(c, d, table, &id).await?;
        let Checked {
            snapshot: snap_cols,
            floats,
            ..
        } = tx.catalog.check(c, d, w, keys).await?;
        let log_cols = check_merge_source(c, d, m).await?.map(|(_, cols)| cols);
        let slice = stage_slice(c, d, w.source, batch).await?;
        check_finite(c, d, w, &floats, &slice, &Predicate::All).await?;
        refuse_merge_keys(c, d, m, &slice).await?;
        // Pre-image and key log: every key this write touches that the
        // batch has not logged yet (a batch written again from a source
        // that gained keys logs those too); with no key log, once.
        let marker_table = w.snapshot.or(m.key_log);
        let first_time = match marker_table {
            Some(t) => !has_marker(c, d, t, &id).await?,
            None => false,
        };
        let mut snapshotted = 0;
        if let (Some(snap), Some(cols)) = (w.snapshot, &snap_cols) {
            if first_time || m.key_log.is_some() {
                snapshotted = c
                    .execute(&stmt::snapshot_keys(
                        d,
                        snap,
                        cols,
                        table,
                        keys,
                        (&slice, m.key_log),
                        &id,
                    ))
                    .await?;
            }
        }
        if let (Some(log), Some(cols)) = (m.key_log, &log_cols) {
            c.execute(&stmt::log_keys(d, log, cols, &slice, &id))
                .await?;
        }
        if first_time {
            if let Some(t) = marker_table {
                c.execute(&stmt::insert_marker(d, t, &id)).await?;
            }
        }
        let set = merge_set(w.columns, keys);
        let updated = c
            .execute(&stmt::merge_update(d, table, &set, keys, &slice))
            .await?;
        let inserted = c
            .execute(&stmt::merge_insert(d, table, w.columns, keys, &slice))
            .await?;
        c.execute(&stmt::drop_table(d, &slice)).await?;
        self.settle(
            c,
            w,
            tx,
            WriteOutcome {
                rows_before: updated,
                rows_written: updated + inserted,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            },
        )
        .await
    }

    /// Restores one batch from its pre-image inside the open transaction
    /// `c`.
    async fn restore_in(&self, c: &mut dyn Conn, r: &Restore<'_>) -> Result<Option<u64>> {
        let d = self.d();
        let id = r.batch.id.to_string();
        lock_batch_write(c, d, r.table, &id).await?;
        check_restore(c, d, r).await?;
        if !has_marker(c, d, r.snapshot, &id).await? {
            return Ok(None);
        }
        match r.footprint {
            Footprint::Slice(p) => c.execute(&stmt::delete_slice(d, r.table, p)).await?,
            Footprint::Keys { keys, key_log } => {
                c.execute(&stmt::delete_logged_keys(d, r.table, keys, key_log, &id))
                    .await?
            }
        };
        let n = c
            .execute(&stmt::restore_rows(d, r.table, r.columns, r.snapshot, &id))
            .await?;
        Ok(Some(n))
    }

    /// Renames `target` to `keep_as` and `replacement` to `target` in one
    /// transaction; `Failure::LockTimeout` is worth another attempt.
    async fn swap_once(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        let d = self.d();
        let limits = match (self.settings.limits, self.settings.swap_lock_timeout) {
            (Some(l), Some(t)) => Some(Limits {
                lock_timeout: t,
                ..l
            }),
            (l, _) => l,
        };
        let mut tx = self.exec.begin(limits).await?;
        let c = &mut *tx;
        let r = async {
            // Checked again under the transaction: another process may have
            // swapped meanwhile.
            require_table(c, d, replacement).await?;
            if kind(c, d, keep_as).await?.is_some() {
                return Err(Error::NotAllowed(format!(
                    "cannot keep {target} as {keep_as}: it already exists"
                )));
            }
            c.execute(&stmt::rename(d, target, &keep_as.name)).await?;
            c.execute(&stmt::rename(d, replacement, &target.name))
                .await?;
            Ok(())
        }
        .await;
        finish(tx, r).await
    }
}

#[async_trait]
impl<E: Executor> Warehouse for SqlWarehouse<E> {
    fn engine(&self) -> &str {
        self.exec.engine()
    }

    fn dialect(&self) -> Option<&dyn Dialect> {
        Some(self.d())
    }

    fn marks_in_tx(&self, mark: &TxMark) -> bool {
        self.home_of(Some(mark)).is_some()
    }

    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>> {
        let mut c = self.exec.connect().await?;
        describe(&mut *c, self.d(), table, true).await
    }

    async fn resolve(&self, table: &TableRef) -> Result<TableRef> {
        if table.schema.is_some() {
            return Ok(table.clone());
        }
        let mut c = self.exec.connect().await?;
        let rows = c.query(&stmt::current_schema(self.d())).await?;
        let schema = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| match v {
                Value::Text(s) => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| Error::engine("the session has no current schema"))?;
        Ok(TableRef {
            schema: Some(Ident::new(&schema)?),
            name: table.name.clone(),
        })
    }

    async fn describe_source(&self, source: &Source) -> Result<TableSchema> {
        let mut c = self.exec.connect().await?;
        source_schema(&mut *c, self.d(), source).await
    }

    async fn defer_maintenance(&self) -> Result<()> {
        let Some(cp) = self.d().deferred_checkpoints() else {
            return Ok(());
        };
        let mut deferred = self.deferred.lock().await;
        if deferred.0 == 0 {
            // Only the engine's default is deferred: a value the user set
            // is theirs, and could not be put back exactly (the engine
            // reports it rounded).
            let mut c = self.exec.connect().await?;
            let now = texts(&mut *c, &stmt::current_setting(self.d(), cp.setting)).await?;
            deferred.1 = now.first().map(String::as_str) == Some(cp.default);
            if deferred.1 {
                c.script(&stmt::set_setting(cp.setting, cp.deferred))
                    .await?;
            }
        }
        deferred.0 += 1;
        Ok(())
    }

    async fn resume_maintenance(&self) -> Result<()> {
        let Some(cp) = self.d().deferred_checkpoints() else {
            return Ok(());
        };
        let mut deferred = self.deferred.lock().await;
        deferred.0 = deferred.0.saturating_sub(1);
        if deferred.0 > 0 {
            return Ok(());
        }
        if !std::mem::take(&mut deferred.1) {
            return Ok(());
        }
        let mut c = self.exec.connect().await?;
        c.script(&format!("RESET {}", cp.setting)).await?;
        c.script(cp.checkpoint).await
    }

    async fn swap_hazards(&self, table: &TableRef) -> Result<Vec<String>> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        texts(&mut *c, &d.swap_hazards(table)).await
    }

    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        let schema = require_relation(&mut *c, d, table).await?;
        check_columns(&schema, predicate.columns(), &table.to_string())?;
        query_count(&mut *c, &stmt::count(d, table, predicate)).await
    }

    async fn key_boundaries(
        &self,
        table: &TableRef,
        column: &Ident,
        predicate: &Predicate,
        every: u64,
    ) -> Result<Vec<Value>> {
        if every == 0 {
            return Err(Error::InvalidPlan("key boundaries every 0 rows".into()));
        }
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        let schema = require_relation(&mut *c, d, table).await?;
        check_columns(
            &schema,
            std::iter::once(column).chain(predicate.columns()),
            &table.to_string(),
        )?;
        let ty = schema
            .column(column)
            .map(|c| c.ty)
            .unwrap_or(ColumnType::Other);
        let rows = c
            .query(&stmt::key_boundaries(d, table, column, predicate, every))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| exec::coerce(r.into_iter().next().unwrap_or(Value::Null), ty))
            .collect())
    }

    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        let schema = require_relation(&mut *c, d, table).await?;
        check_columns(
            &schema,
            keys.iter().chain(predicate.columns()),
            &table.to_string(),
        )?;
        if keys.is_empty() {
            return Err(Error::InvalidPlan(
                "a key report needs at least one key column".into(),
            ));
        }
        key_report(&mut *c, d, table, keys, predicate, sample).await
    }

    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        let schema = require_relation(&mut *c, d, table).await?;
        check_columns(&schema, predicate.columns(), &table.to_string())?;
        let rows = c.query(&stmt::checksum(d, table, predicate)).await?;
        let r = rows
            .first()
            .ok_or_else(|| Error::engine("checksum returned no row"))?;
        Ok(Checksum {
            rows: exec::count(r, 0)?,
            hash: exec::string(r, 1)?,
        })
    }

    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        let schema = require_relation(&mut *c, d, table).await?;
        check_columns(
            &schema,
            predicate.columns().into_iter().chain(order_by),
            &table.to_string(),
        )?;
        let cols = schema.columns;
        let rows = c
            .query(&stmt::sample_rows(
                d, table, &cols, predicate, order_by, limit,
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .zip(&cols)
                    .map(|(v, col)| exec::coerce(v, col.ty))
                    .collect()
            })
            .collect())
    }

    fn refuses(&self, strategy: &crate::StrategySpec) -> Option<String> {
        match self.exec.transactions() {
            true => None,
            false => self.refuses_alone(strategy),
        }
    }

    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome> {
        if !self.exec.transactions() {
            return self.overwrite_alone(write).await;
        }
        let mut tx = self.exec.begin(self.settings.limits).await?;
        let r = self
            .overwrite_in(&mut *tx, write, &mut TxState::default())
            .await;
        finish(tx, r).await
    }

    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome> {
        if !self.exec.transactions() {
            return self.merge_alone(write).await;
        }
        let mut tx = self.exec.begin(self.settings.limits).await?;
        let r = self
            .merge_in(&mut *tx, write, &mut TxState::default())
            .await;
        finish(tx, r).await
    }

    fn max_group(&self) -> usize {
        match self.exec.transactions() {
            true => usize::MAX,
            // Each batch is its own commit.
            false => 1,
        }
    }

    async fn write_group(
        &self,
        writes: &[BatchWrite<'_>],
    ) -> std::result::Result<Vec<WriteOutcome>, GroupFailure> {
        if !self.exec.transactions() {
            return match writes {
                [BatchWrite::Overwrite(s)] => self
                    .overwrite_slice(s)
                    .await
                    .map(|o| vec![o])
                    .map_err(|e| GroupFailure::at(0, e)),
                [BatchWrite::Merge(m)] => self
                    .merge_slice(m)
                    .await
                    .map(|o| vec![o])
                    .map_err(|e| GroupFailure::at(0, e)),
                _ => Err(GroupFailure::whole(Error::NotAllowed(format!(
                    "{} commits each batch on its own: a group of {} batches cannot be one commit",
                    self.exec.engine(),
                    writes.len()
                )))),
            };
        }
        let mut tx = self
            .exec
            .begin(self.settings.limits)
            .await
            .map_err(GroupFailure::whole)?;
        let mut outs = Vec::with_capacity(writes.len());
        let mut state = TxState::group();
        if let Some(slices) = self.fusable(writes) {
            match self.overwrite_fused(&mut *tx, &slices, &mut state).await {
                Ok(o) => outs = o,
                Err(f) => {
                    let _ = tx.rollback().await;
                    return Err(f);
                }
            }
        }
        for (i, w) in writes.iter().enumerate().skip(outs.len()) {
            let r = match w {
                BatchWrite::Overwrite(s) => self.overwrite_in(&mut *tx, s, &mut state).await,
                BatchWrite::Merge(m) => self.merge_in(&mut *tx, m, &mut state).await,
            };
            match r {
                Ok(o) => outs.push(o),
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(GroupFailure::at(i, e));
                }
            }
        }
        // The group's ledger marks, in one statement before the commit;
        // one no longer held fails the group as a whole, and the batches
        // written again one by one say which.
        let held = state.marks.take().unwrap_or_default();
        if let Some((_, home, _, _)) = held.first() {
            let home = home.clone();
            let marks: Vec<_> = held.into_iter().map(|(m, _, b, w)| (m, b, w)).collect();
            if let Err(e) = crate::engine::ledger::mark_written_many(&mut *tx, &home, &marks).await
            {
                let _ = tx.rollback().await;
                return Err(GroupFailure::whole(e));
            }
        }
        tx.commit().await.map_err(GroupFailure::whole)?;
        Ok(outs)
    }

    async fn restore_slice(&self, restore: &Restore<'_>) -> Result<Option<u64>> {
        if !self.exec.transactions() {
            return self.restore_alone(restore).await;
        }
        let mut tx = self.exec.begin(self.settings.limits).await?;
        let r = self.restore_in(&mut *tx, restore).await;
        finish(tx, r).await
    }

    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()> {
        let d = self.d();
        in_tx!(self.exec, self.settings.limits, |c| {
            {
                lock_table_ddl(c, d, to).await?;
                if kind(c, d, to).await?.is_some() {
                    return Ok(());
                }
                let schema = require_relation(c, d, from).await?;
                if with_rows && !self.exec.transactions() {
                    // One statement, so that a copy is never left half
                    // made: one that exists is complete.
                    c.execute(&stmt::create_table_as_copy(d, to, from)).await?;
                    return Ok(());
                }
                execute_all(c, &d.copy_shape(to, from, &schema)).await?;
                if with_rows {
                    c.execute(&stmt::copy_rows(d, to, from, &schema.names()))
                        .await?;
                }
                Ok(())
            }
        })
    }

    async fn create_snapshot_table(
        &self,
        like: &TableRef,
        columns: &[Ident],
        snapshot: &TableRef,
    ) -> Result<()> {
        let d = self.d();
        in_tx!(self.exec, self.settings.limits, |c| {
            {
                lock_table_ddl(c, d, snapshot).await?;
                if kind(c, d, snapshot).await?.is_some() {
                    return Ok(());
                }
                let schema = require_relation(c, d, like).await?;
                check_columns(&schema, columns, &like.to_string())?;
                c.execute(&stmt::create_snapshot_table(d, snapshot, like, columns))
                    .await?;
                if let Some(index) = d.index_snapshot(snapshot) {
                    c.execute(&index).await?;
                }
                Ok(())
            }
        })
    }

    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        {
            let (d, mut c) = (self.d(), self.exec.connect().await?);
            let c = &mut *c;
            require_table(c, d, target).await?;
            require_table(c, d, replacement).await?;
            if target == replacement {
                return Err(Error::NotAllowed(format!(
                    "cannot swap {target} with itself"
                )));
            }
            if kind(c, d, keep_as).await?.is_some() {
                return Err(Error::NotAllowed(format!(
                    "cannot keep {target} as {keep_as}: it already exists"
                )));
            }
            if replacement.schema != target.schema || keep_as.schema != target.schema {
                return Err(Error::NotAllowed(format!(
                    "swap renames within one schema: {target}, {replacement} and {keep_as} must share it"
                )));
            }
        }
        let attempts = self.settings.swap_attempts.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            match self.swap_once(target, replacement, keep_as).await {
                Err(e) if self.exec.classify(&e) == Failure::LockTimeout => {
                    tracing::warn!(table = %target, attempt, "swap could not lock the table; retrying");
                    last = Some(e);
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
                other => return other,
            }
        }
        Err(Error::transient(format!(
            "swap of {target}: could not take its lock within the lock timeout of {:?} in {attempts} attempt(s) \
             (other sessions are using the table); nothing was swapped, retry later ({})",
            self.settings.swap_lock_timeout.unwrap_or_default(),
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        let (d, exec) = (self.d(), &*self.exec);
        in_tx!(self.exec, self.settings.limits, |c| {
            {
                if kind(c, d, view).await?.as_deref() == Some(TABLE) {
                    return Err(Error::NotAllowed(format!("{view} is a table, not a view")));
                }
                match kind(c, d, table).await?.as_deref() {
                    None => return Err(Error::UnknownTable(table.to_string())),
                    Some(TABLE) => {}
                    Some(_) if !d.finds_view_cycles() => {
                        return Err(Error::NotAllowed(format!(
                            "{table} is a view, and {} cannot tell whether {view} would then \
                             read itself: point {view} at a table",
                            exec.engine()
                        )))
                    }
                    Some(_) => {}
                }
                let cycle = |e: Error| match exec.classify(&e) {
                    Failure::ViewCycle => {
                        Error::NotAllowed(format!("view {view} would read itself"))
                    }
                    _ => e,
                };
                let replace = stmt::create_or_replace_view(d, view, table);
                if d.replace_view_keeps_columns() {
                    c.script("SAVEPOINT __bf_view").await?;
                    match c.execute(&replace).await {
                        Ok(_) => {}
                        Err(e) if exec.classify(&e) == Failure::ViewShapeChanged => {
                            // CREATE OR REPLACE cannot drop, rename or
                            // retype a view's columns: drop and create, in
                            // this same transaction.
                            tracing::debug!(view = %view, error = %e, "view columns changed; recreating it");
                            c.script("ROLLBACK TO SAVEPOINT __bf_view").await?;
                            c.execute(&stmt::drop_view(d, view)).await?;
                            c.execute(&replace).await.map_err(cycle)?;
                        }
                        Err(e) => return Err(cycle(e)),
                    }
                } else {
                    c.execute(&replace).await.map_err(cycle)?;
                }
                // Engines find a cycle only when the view is read: read it
                // now, so a cycle is refused, not committed.
                c.query(&stmt::probe(d, view)).await.map_err(cycle)?;
                Ok(())
            }
        })
    }

    async fn drop_table(&self, table: &TableRef) -> Result<bool> {
        let (d, mut c) = (self.d(), self.exec.connect().await?);
        if kind(&mut *c, d, table).await?.as_deref() != Some(TABLE) {
            return Ok(false);
        }
        c.execute(&stmt::drop_table(d, table)).await?;
        Ok(true)
    }

    async fn stage_source(
        &self,
        source: &Source,
        predicate: &Predicate,
        bounds: (Option<&Value>, Option<&Value>),
        order_by: &Ident,
        into: &TableRef,
    ) -> Result<u64> {
        let d = self.d();
        in_tx!(self.exec, self.settings.limits, |c| {
            {
                lock_table_ddl(c, d, into).await?;
                if kind(c, d, into).await?.is_some() {
                    if source.is_bounded() && !self.exec.transactions() {
                        // Without a transaction the table may have been
                        // made by a run that died before its bounds were
                        // checked: check them again.
                        let outside = query_count(c, &stmt::outside(d, into, predicate)).await?;
                        if outside > 0 {
                            c.execute(&stmt::drop_table(d, into)).await?;
                            return Err(Error::OutOfBounds {
                                batch: format!("stage {into}"),
                                rows: outside,
                            });
                        }
                    }
                    return query_count(c, &stmt::count(d, into, &Predicate::All)).await;
                }
                let src = source_schema(c, d, source).await?;
                check_source(&src, source, std::slice::from_ref(order_by), predicate)?;
                let bounded = source.is_bounded();
                let filter = (!bounded).then_some(predicate);
                c.execute(&stmt::materialize(
                    d,
                    into,
                    false,
                    source,
                    bounds,
                    filter,
                    Some(order_by),
                ))
                .await?;
                if bounded {
                    let outside = query_count(c, &stmt::outside(d, into, predicate)).await?;
                    if outside > 0 {
                        if !self.exec.transactions() {
                            // No transaction to roll the table back with.
                            c.execute(&stmt::drop_table(d, into)).await?;
                        }
                        return Err(Error::OutOfBounds {
                            batch: format!("stage {into}"),
                            rows: outside,
                        });
                    }
                }
                execute_all(c, &d.index_staged(into, order_by)).await?;
                query_count(c, &stmt::count(d, into, &Predicate::All)).await
            }
        })
    }

    async fn inspect(&self, question: &Inspect) -> Result<Answer> {
        crate::engine::read::answer(self, question).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.execute_batch(sql).await
    }
}

#[async_trait]
impl<E: Executor> SqlRead for SqlWarehouse<E> {
    async fn read(&self, stmts: Vec<Sql>) -> Result<Vec<Vec<Vec<Value>>>> {
        let mut tx = if self.exec.transactions() {
            self.exec.begin(None).await?
        } else {
            // One session, which is what makes a temporary view seen by
            // the next statement.
            self.exec.connect().await?
        };
        let c = &mut *tx;
        let r = async {
            let mut out = Vec::with_capacity(stmts.len());
            for s in &stmts {
                out.push(c.query(s).await?);
            }
            Ok(out)
        }
        .await;
        finish(tx, r).await
    }
}
