//! [`PgWarehouse`]: the [`Warehouse`] trait on PostgreSQL, every operation
//! pushed down as SQL rendered by [`backfill_core::sql::stmt`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backfill_core::inspect::{Answer, Inspect};
use backfill_core::ledger::{Clock, SystemClock, TxMark};
use backfill_core::plan::Batch;
use backfill_core::sql::inspect::SqlRead;
use backfill_core::sql::{self, stmt, Dialect, Sql};
use backfill_core::validate::SAMPLE_LIMIT;
use backfill_core::warehouse::{check_columns, check_source};
use backfill_core::warehouse::{
    Checksum, Footprint, KeyReport, MergeWrite, Restore, SliceWrite, Warehouse, WriteOutcome,
    BATCH_COLUMN, MARKER_COLUMN,
};
use backfill_core::{
    Column, ColumnType, Error, Ident, Predicate, Result, Source, TableRef, TableSchema, Value,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{GenericClient, NoTls, Transaction};

use crate::db::{
    advisory_lock, exec, exec_all, get_string, get_text, get_u64, get_value, pg_error, query,
    query_columns, query_count, query_values, Db, LedgerHome, Limits, TxFuture, DIALECT,
};
use crate::ledger::{self, PgLedger, DEFAULT_SCHEMA};
use crate::partition;
use crate::signal::{ActivitySignal, ProbeSignal, ReplicationLagSignal, Thresholds};

/// Connections a pool made by [`PgWarehouse::connect`] holds at most.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// A PostgreSQL database as a backfill [`Warehouse`].
///
/// Writes, checks and snapshots run as SQL inside PostgreSQL; only plans,
/// bounds, counts and bounded samples cross into Rust. Connections come
/// from a `deadpool-postgres` pool (clones of the warehouse share it), and
/// every value is a bound parameter. A [`PgLedger`] made with
/// [`PgWarehouse::ledger`] lives in the same database, so each batch's
/// write marks its ledger row in the same transaction as the data, fenced
/// by the claim's token: a worker whose lease was taken over cannot
/// commit. Several processes, each with its own warehouse and ledger on
/// the same database and schema, share one run.
///
/// How the contract maps onto PostgreSQL:
///
/// - each batch write is one transaction with `SET LOCAL
///   statement_timeout` and `SET LOCAL lock_timeout` (see
///   [`PgWarehouse::with_statement_timeout`],
///   [`PgWarehouse::with_lock_timeout`]); a timeout is a transient error
///   the runner retries;
/// - the write first takes a transaction-scoped advisory lock on (table,
///   batch), so two workers never interleave the same batch, then
///   materializes the batch's source slice once into a temporary table
///   (`pg_temp.__bf_slice`; a bounded query with the batch's bounds, then
///   the out-of-bounds guard; any other source with the batch predicate),
///   so guard, pre-image, delete and insert all see the same rows, even
///   when the source reads the table being written;
/// - merge is `UPDATE … FROM` plus `INSERT … WHERE NOT EXISTS`, which
///   needs no unique constraint on the target (the slice is analyzed
///   first so the join is planned on real numbers);
/// - `swap` renames both tables in one transaction under a short
///   `lock_timeout`, retried a few times ([`PgWarehouse::with_swap_lock`]);
///   PostgreSQL views bind tables by identity, not name, so a view over
///   the target keeps reading the old table after a swap;
/// - `create_copy` uses `CREATE TABLE … (LIKE … INCLUDING DEFAULTS
///   INCLUDING CONSTRAINTS INCLUDING INDEXES …)`, so a staged table keeps
///   `NOT NULL`, checks, primary keys and indexes (not foreign keys,
///   triggers, grants or identity);
/// - `point_view` replaces the view, or drops and recreates it in one
///   transaction when its columns change;
/// - DDL the runner may reach from several workers at once (pre-image,
///   stage and staged-source tables) is serialized with advisory locks;
/// - temporal values are bound as ISO text and cast by the placeholders;
///   `numeric` values are read back as text (or floats for float columns);
/// - tables and views are looked up in `information_schema` (materialized
///   views are not found there), unqualified names in `current_schema()`.
///
/// ```no_run
/// # async fn demo() -> backfill_core::Result<()> {
/// use backfill_postgres::PgWarehouse;
/// let warehouse = PgWarehouse::connect("host=localhost user=postgres dbname=analytics").await?;
/// let ledger = warehouse.ledger("backfill").await?;
/// # let _ = ledger; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgWarehouse {
    db: Db,
    limits: Limits,
    swap_lock_timeout: Duration,
    swap_attempts: u32,
}

impl PgWarehouse {
    /// Connects with a libpq-style connection string (`host=… user=…
    /// dbname=…` or a `postgresql://` URL), with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections, without TLS. Fails if no
    /// connection can be made.
    pub async fn connect(config: &str) -> Result<Self> {
        Self::connect_with_pool_size(config, DEFAULT_POOL_SIZE).await
    }

    /// [`PgWarehouse::connect`] with a pool of at most `size` connections
    /// (a runner needs one per batch in flight, plus one for its ledger).
    pub async fn connect_with_pool_size(config: &str, size: usize) -> Result<Self> {
        let cfg = tokio_postgres::Config::from_str(config)
            .map_err(|e| Error::engine(format!("invalid PostgreSQL connection string: {e}")))?;
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .map_err(|e| Error::engine(format!("cannot build the connection pool: {e}")))?;
        let w = Self::from_pool(pool);
        // Fail early on a bad address or credentials.
        let _ = w.db.client().await?;
        Ok(w)
    }

    /// Wraps an existing pool (configure TLS, sizes and timeouts there).
    pub fn from_pool(pool: Pool) -> Self {
        PgWarehouse {
            db: Db::new(pool),
            limits: Limits {
                statement_timeout: Duration::from_secs(600),
                lock_timeout: Duration::from_secs(10),
            },
            swap_lock_timeout: Duration::from_secs(2),
            swap_attempts: 5,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        self.db.pool()
    }

    /// How long one statement of a write may run (`SET LOCAL
    /// statement_timeout`; 10 minutes by default). Past it the statement
    /// is cancelled, the batch rolled back, and the error is transient.
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.limits.statement_timeout = timeout;
        self
    }

    /// How long a write waits for a lock another session holds (`SET
    /// LOCAL lock_timeout`; 10 seconds by default). Past it the batch is
    /// rolled back and the error is transient.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.limits.lock_timeout = timeout;
        self
    }

    /// The lock timeout of each swap attempt (2 seconds by default) and
    /// how many attempts are made (5 by default, at least 1) before
    /// `swap` gives up with a transient error naming the table.
    pub fn with_swap_lock(mut self, timeout: Duration, attempts: u32) -> Self {
        self.swap_lock_timeout = timeout;
        self.swap_attempts = attempts.max(1);
        self
    }

    /// The statement and lock timeouts of writes.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.limits.statement_timeout, self.limits.lock_timeout)
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// system clock. See [`DEFAULT_SCHEMA`].
    pub async fn ledger(&self, schema: &str) -> Result<PgLedger> {
        self.ledger_with_clock(schema, Arc::new(SystemClock)).await
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// given clock. Leases are timed by this clock, not the server's.
    pub async fn ledger_with_clock(&self, schema: &str, clock: Arc<dyn Clock>) -> Result<PgLedger> {
        PgLedger::create(self.db.clone(), Ident::new(schema)?, clock).await
    }

    /// A ledger in [`DEFAULT_SCHEMA`] on the system clock.
    pub async fn default_ledger(&self) -> Result<PgLedger> {
        self.ledger(DEFAULT_SCHEMA).await
    }

    /// A load signal on `pg_stat_activity` of this database (see
    /// [`ActivitySignal`]).
    pub fn activity_signal(&self, active: Thresholds, lock_waiters: Thresholds) -> ActivitySignal {
        ActivitySignal::new(self.pool().clone(), active, lock_waiters)
    }

    /// A load signal on replica lag from `pg_stat_replication` (see
    /// [`ReplicationLagSignal`]).
    pub fn replication_lag_signal(
        &self,
        throttle: Duration,
        critical: Duration,
    ) -> ReplicationLagSignal {
        ReplicationLagSignal::new(self.pool().clone(), throttle, critical)
    }

    /// A load signal from a scalar query of yours (see [`ProbeSignal`]).
    pub fn probe_signal(
        &self,
        name: impl Into<String>,
        sql: impl Into<String>,
        thresholds: Thresholds,
    ) -> ProbeSignal {
        ProbeSignal::new(self.pool().clone(), name, sql, thresholds)
    }

    /// Runs trusted SQL written by the caller (setup, fixtures), statements
    /// separated by semicolons, without parameters.
    pub async fn execute_batch(&self, sql: impl AsRef<str>) -> Result<()> {
        let c = self.db.client().await?;
        c.batch_execute(sql.as_ref()).await.map_err(pg_error)
    }

    /// A pooled connection: an escape hatch for what this API does not
    /// cover.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.db.client().await
    }

    /// Creates a table from a schema (types as in [`stmt::sql_type`]).
    pub async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()> {
        let c = self.db.client().await?;
        exec(&**c, &stmt::create_table(&DIALECT, table, schema))
            .await
            .map(|_| ())
    }

    /// Inserts rows, each in the table's column order, in one transaction.
    pub async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()> {
        let table = table.clone();
        let rows = rows.to_vec();
        self.db
            .in_tx(None, move |tx| {
                Box::pin(async move {
                    let names = require_table(tx, &table).await?.names();
                    // PostgreSQL binds at most 65535 parameters a statement.
                    let per = (60_000 / names.len().max(1)).clamp(1, 1000);
                    for chunk in rows.chunks(per) {
                        if let Some(bad) = chunk.iter().find(|r| r.len() != names.len()) {
                            return Err(Error::SchemaMismatch(format!(
                                "{table} has {} column(s), a row has {}",
                                names.len(),
                                bad.len()
                            )));
                        }
                        exec(tx, &stmt::insert_values(&DIALECT, &table, &names, chunk)).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Creates or replaces a view reading `table`.
    pub async fn create_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        self.point_view(view, table).await
    }

    fn write_limits(&self) -> Option<Limits> {
        Some(self.limits)
    }

    /// The ledger a mark belongs to, when it was made on this warehouse.
    fn home_of(&self, mark: Option<&TxMark>) -> Option<(TxMark, LedgerHome)> {
        mark.and_then(|m| self.db.ledger_home(&m.ledger).map(|h| (m.clone(), h)))
    }
}

// ---------------------------------------------------------------------------
// Catalog helpers (inside or outside a transaction)
// ---------------------------------------------------------------------------

const TABLE: &str = "BASE TABLE";

/// `Some("BASE TABLE" | "VIEW" | …)`, or `None` when nothing has the name.
async fn kind<C: GenericClient + Sync>(c: &C, t: &TableRef) -> Result<Option<String>> {
    let rows = query(c, &stmt::relation_kind(&DIALECT, t)).await?;
    rows.first().map(|r| get_string(r, 0)).transpose()
}

/// A relation's columns. `strict` refuses a column name that is not a
/// valid identifier (a target must be fully writable); otherwise such
/// columns are left out.
async fn describe<C: GenericClient + Sync>(
    c: &C,
    t: &TableRef,
    strict: bool,
) -> Result<Option<TableSchema>> {
    let rows = query(c, &stmt::describe(&DIALECT, t)).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    for r in &rows {
        let (name, ty, nullable) = (get_string(r, 0)?, get_string(r, 1)?, get_text(r, 2)?);
        let name = match Ident::new(name) {
            Ok(n) => n,
            Err(e) if strict => return Err(e),
            Err(_) => continue,
        };
        columns.push(Column {
            name,
            ty: stmt::column_type(&ty),
            nullable: nullable.as_deref() != Some("NO"),
        });
    }
    Ok(Some(TableSchema { columns }))
}

async fn require_relation<C: GenericClient + Sync>(c: &C, t: &TableRef) -> Result<TableSchema> {
    describe(c, t, true)
        .await?
        .ok_or_else(|| Error::UnknownTable(t.to_string()))
}

/// A base table (writes never go to a view), or [`Error::UnknownTable`].
async fn require_table<C: GenericClient + Sync>(c: &C, t: &TableRef) -> Result<TableSchema> {
    if kind(c, t).await?.as_deref() != Some(TABLE) {
        return Err(Error::UnknownTable(t.to_string()));
    }
    require_relation(c, t).await
}

/// The columns a source yields.
async fn source_schema<C: GenericClient + Sync>(c: &C, source: &Source) -> Result<TableSchema> {
    match source {
        Source::Table(t) => describe(c, t, false)
            .await?
            .ok_or_else(|| Error::UnknownTable(t.to_string())),
        Source::Query(_) => {
            let cols = query_columns(c, &stmt::source_columns(&DIALECT, source)).await?;
            Ok(TableSchema {
                columns: cols
                    .into_iter()
                    .filter_map(|(name, ty)| Ident::new(name).ok().map(|n| Column::new(n, ty)))
                    .collect(),
            })
        }
    }
}

fn data_columns(schema: &TableSchema) -> Vec<Ident> {
    schema
        .columns
        .iter()
        .filter(|c| c.name.as_str() != BATCH_COLUMN && c.name.as_str() != MARKER_COLUMN)
        .map(|c| c.name.clone())
        .collect()
}

fn check_snapshot_layout(schema: &TableSchema, table: &TableRef) -> Result<()> {
    for name in [BATCH_COLUMN, MARKER_COLUMN] {
        if !schema.columns.iter().any(|c| c.name.as_str() == name) {
            return Err(Error::UnknownColumn {
                table: table.to_string(),
                column: name.to_string(),
            });
        }
    }
    Ok(())
}

/// The session's temporary table holding a batch's source slice, in
/// `pg_temp` so a user table of the same name is never read or dropped.
fn slice_table() -> TableRef {
    TableRef::qualified(
        Ident::new("pg_temp").expect("a valid identifier"),
        Ident::new("__bf_slice").expect("a valid identifier"),
    )
}

/// The advisory-lock key of a table (DDL that several workers may race
/// to run: pre-image, stage, staged source).
fn table_key(t: &TableRef) -> String {
    format!("backfill:table:{}", qualified_name(t))
}

/// The advisory-lock key of one batch's write to a table.
fn batch_key(t: &TableRef, batch: &str) -> String {
    format!("backfill:write:{}:{batch}", qualified_name(t))
}

fn qualified_name(t: &TableRef) -> String {
    match &t.schema {
        Some(_) => t.to_string(),
        None => format!("(current schema).{}", t.name),
    }
}

/// Materializes a batch's source slice once into [`slice_table`] (a
/// bounded query gets the batch's bounds and is guarded; any other source
/// gets the batch predicate).
async fn stage_slice(tx: &Transaction<'_>, source: &Source, batch: &Batch) -> Result<TableRef> {
    let d = &DIALECT;
    let tmp = slice_table();
    exec(tx, &stmt::drop_table(d, &tmp)).await?;
    let bounded = source.is_bounded();
    let filter = if bounded {
        None
    } else {
        Some(&batch.predicate)
    };
    exec(
        tx,
        &stmt::materialize(
            d,
            &tmp,
            true,
            source,
            (batch.start.as_ref(), batch.end.as_ref()),
            filter,
            None,
        ),
    )
    .await?;
    if bounded {
        let outside = query_count(tx, &stmt::outside(d, &tmp, &batch.predicate)).await?;
        if outside > 0 {
            return Err(Error::OutOfBounds {
                batch: batch.id.to_string(),
                rows: outside,
            });
        }
    }
    Ok(tmp)
}

async fn has_marker(tx: &Transaction<'_>, snapshot: &TableRef, batch_id: &str) -> Result<bool> {
    Ok(query_count(tx, &stmt::marker_count(&DIALECT, snapshot, batch_id)).await? > 0)
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

/// Owned copy of a slice write (transaction closures own their data).
#[derive(Clone)]
struct SliceJob {
    batch: Batch,
    table: TableRef,
    source: Source,
    /// The source is the run's staged snapshot: written straight from.
    direct: bool,
    columns: Vec<Ident>,
    snapshot: Option<TableRef>,
    mark: Option<(TxMark, LedgerHome)>,
}

impl PgWarehouse {
    fn slice_job(&self, w: &SliceWrite<'_>) -> SliceJob {
        SliceJob {
            batch: w.batch.clone(),
            table: w.table.clone(),
            source: w.source.clone(),
            direct: w.straight_from_source(),
            columns: w.columns.to_vec(),
            snapshot: w.snapshot.cloned(),
            mark: self.home_of(w.mark),
        }
    }
}

/// Checks, before any write, what an overwrite needs; returns the
/// pre-image's data columns.
async fn check_overwrite<C: GenericClient + Sync>(
    c: &C,
    j: &SliceJob,
) -> Result<Option<Vec<Ident>>> {
    let target = require_table(c, &j.table).await?;
    let tname = j.table.to_string();
    check_columns(
        &target,
        j.columns.iter().chain(j.batch.predicate.columns()),
        &tname,
    )?;
    let snap_cols = match &j.snapshot {
        Some(s) => {
            let schema = require_table(c, s).await?;
            check_snapshot_layout(&schema, s)?;
            let cols = data_columns(&schema);
            check_columns(&target, &cols, &tname)?;
            Some(cols)
        }
        None => None,
    };
    // The run's staged snapshot was checked when the run made it.
    if !j.direct {
        let src = source_schema(c, &j.source).await?;
        check_source(&src, &j.source, &j.columns, &j.batch.predicate)?;
    }
    Ok(snap_cols)
}

fn overwrite(
    j: SliceJob,
) -> impl for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, WriteOutcome> + Send {
    move |tx| {
        Box::pin(async move {
            let d = &DIALECT;
            let id = j.batch.id.to_string();
            advisory_lock(tx, &batch_key(&j.table, &id)).await?;
            let snap_cols = check_overwrite(tx, &j).await?;
            // A batch that is exactly one partition swaps a new partition
            // in; anything else deletes and inserts.
            let native = match partition::exact_partition(tx, &j.table, &j.batch.predicate).await? {
                Some(part) => partition::new_partition_table(&part).map(|fresh| (part, fresh)),
                None => None,
            };
            // Anything but the run's own snapshot may read the target, so
            // its slice is copied aside before the delete.
            let slice = match j.direct && native.is_none() {
                true => None,
                false => Some(stage_slice(tx, &j.source, &j.batch).await?),
            };
            let mut snapshotted = 0;
            if let (Some(snap), Some(cols)) = (&j.snapshot, &snap_cols) {
                if !has_marker(tx, snap, &id).await? {
                    snapshotted = exec(
                        tx,
                        &stmt::snapshot_slice(d, snap, cols, &j.table, &j.batch.predicate, &id),
                    )
                    .await?;
                    exec(tx, &stmt::insert_marker(d, snap, &id)).await?;
                }
            }
            let (before, written) = match (native, &slice) {
                (Some((part, fresh)), Some(slice)) => {
                    partition::swap_partition(tx, &j.table, &part, &fresh, slice, &j.columns)
                        .await?
                }
                _ => {
                    let before =
                        exec(tx, &stmt::delete_slice(d, &j.table, &j.batch.predicate)).await?;
                    let from = slice
                        .clone()
                        .map_or_else(|| j.source.clone(), Source::Table);
                    let written = exec(
                        tx,
                        &stmt::insert_slice(d, &j.table, &j.columns, &from, &j.batch),
                    )
                    .await?;
                    (before, written)
                }
            };
            if let Some(slice) = &slice {
                exec(tx, &stmt::drop_table(d, slice)).await?;
            }
            let mut out = WriteOutcome {
                rows_before: before,
                rows_written: written,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            };
            if let Some((mark, home)) = &j.mark {
                ledger::mark_written(tx, home, mark, before, written).await?;
                out.ledger_marked = true;
            }
            Ok(out)
        })
    }
}

#[derive(Clone)]
struct MergeJob {
    slice: SliceJob,
    keys: Vec<Ident>,
    key_log: Option<TableRef>,
}

fn merge(
    m: MergeJob,
) -> impl for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, WriteOutcome> + Send {
    move |tx| {
        Box::pin(async move {
            let d = &DIALECT;
            let j = &m.slice;
            let keys = &m.keys;
            let id = j.batch.id.to_string();
            if keys.is_empty() {
                return Err(Error::InvalidPlan(
                    "merge needs at least one key column".into(),
                ));
            }
            advisory_lock(tx, &batch_key(&j.table, &id)).await?;
            let target = require_table(tx, &j.table).await?;
            let tname = j.table.to_string();
            check_columns(
                &target,
                j.columns
                    .iter()
                    .chain(keys)
                    .chain(j.batch.predicate.columns()),
                &tname,
            )?;
            let snap_cols = match &j.snapshot {
                Some(s) => {
                    let schema = require_table(tx, s).await?;
                    check_snapshot_layout(&schema, s)?;
                    let cols = data_columns(&schema);
                    check_columns(&target, &cols, &tname)?;
                    Some(cols)
                }
                None => None,
            };
            let log_cols = match &m.key_log {
                Some(l) => {
                    let schema = require_table(tx, l).await?;
                    check_snapshot_layout(&schema, l)?;
                    Some(data_columns(&schema))
                }
                None => None,
            };
            let src = source_schema(tx, &j.source).await?;
            let mut needed = j.columns.clone();
            needed.extend(keys.iter().cloned());
            needed.extend(log_cols.iter().flatten().cloned());
            check_source(&src, &j.source, &needed, &j.batch.predicate)?;

            let slice = stage_slice(tx, &j.source, &j.batch).await?;
            // Refuse null and duplicate source keys before any write.
            let (stats, sample) = stmt::key_report(d, &slice, keys, &Predicate::All, SAMPLE_LIMIT);
            let rows = query(tx, &stats).await?;
            let (nulls, dups) = match rows.first() {
                Some(r) => (get_u64(r, 1)?, get_u64(r, 2)?),
                None => (0, 0),
            };
            if nulls > 0 {
                return Err(Error::NullKeys {
                    batch: id,
                    rows: nulls,
                });
            }
            if dups > 0 {
                let sample = query(tx, &sample)
                    .await?
                    .iter()
                    .map(|r| Ok(get_text(r, 0)?.unwrap_or_default()))
                    .collect::<Result<Vec<_>>>()?;
                return Err(Error::DuplicateKeys {
                    batch: id,
                    groups: dups,
                    sample,
                });
            }
            exec(tx, &stmt::analyze(d, &slice)).await?;
            // Pre-image and key log, only while the batch has no marker.
            let marker_table = j.snapshot.as_ref().or(m.key_log.as_ref());
            let first_time = match marker_table {
                Some(t) => !has_marker(tx, t, &id).await?,
                None => false,
            };
            let mut snapshotted = 0;
            if first_time {
                if let (Some(snap), Some(cols)) = (&j.snapshot, &snap_cols) {
                    snapshotted = exec(
                        tx,
                        &stmt::snapshot_keys(d, snap, cols, &j.table, keys, &slice, &id),
                    )
                    .await?;
                }
                if let (Some(log), Some(cols)) = (&m.key_log, &log_cols) {
                    exec(tx, &stmt::log_keys(d, log, cols, &slice, &id)).await?;
                }
                if let Some(t) = marker_table {
                    exec(tx, &stmt::insert_marker(d, t, &id)).await?;
                }
            }
            let mut set: Vec<Ident> = j
                .columns
                .iter()
                .filter(|c| !keys.contains(c))
                .cloned()
                .collect();
            if set.is_empty() {
                set = keys.to_vec();
            }
            let updated = exec(tx, &stmt::merge_update(d, &j.table, &set, keys, &slice)).await?;
            let inserted = exec(
                tx,
                &stmt::merge_insert(d, &j.table, &j.columns, keys, &slice),
            )
            .await?;
            exec(tx, &stmt::drop_table(d, &slice)).await?;
            let written = updated + inserted;
            let mut out = WriteOutcome {
                rows_before: updated,
                rows_written: written,
                rows_snapshotted: snapshotted,
                ledger_marked: false,
            };
            if let Some((mark, home)) = &j.mark {
                ledger::mark_written(tx, home, mark, updated, written).await?;
                out.ledger_marked = true;
            }
            Ok(out)
        })
    }
}

#[derive(Clone)]
enum OwnedFootprint {
    Slice(Predicate),
    Keys { keys: Vec<Ident>, key_log: TableRef },
}

#[derive(Clone)]
struct RestoreJob {
    table: TableRef,
    snapshot: TableRef,
    batch: Batch,
    footprint: OwnedFootprint,
    columns: Vec<Ident>,
}

async fn restore(tx: &Transaction<'_>, r: &RestoreJob) -> Result<Option<u64>> {
    let d = &DIALECT;
    let id = r.batch.id.to_string();
    advisory_lock(tx, &batch_key(&r.table, &id)).await?;
    let target = require_table(tx, &r.table).await?;
    let tname = r.table.to_string();
    check_columns(&target, &r.columns, &tname)?;
    let snap = require_table(tx, &r.snapshot).await?;
    check_snapshot_layout(&snap, &r.snapshot)?;
    check_columns(&snap, &r.columns, &r.snapshot.to_string())?;
    match &r.footprint {
        OwnedFootprint::Slice(p) => check_columns(&target, p.columns(), &tname)?,
        OwnedFootprint::Keys { keys, key_log } => {
            let log = require_table(tx, key_log).await?;
            check_snapshot_layout(&log, key_log)?;
            check_columns(&log, keys, &key_log.to_string())?;
            check_columns(&target, keys, &tname)?;
        }
    }
    if !has_marker(tx, &r.snapshot, &id).await? {
        return Ok(None);
    }
    match &r.footprint {
        OwnedFootprint::Slice(p) => exec(tx, &stmt::delete_slice(d, &r.table, p)).await?,
        OwnedFootprint::Keys { keys, key_log } => {
            exec(
                tx,
                &stmt::delete_logged_keys(d, &r.table, keys, key_log, &id),
            )
            .await?
        }
    };
    let n = exec(
        tx,
        &stmt::restore_rows(d, &r.table, &r.columns, &r.snapshot, &id),
    )
    .await?;
    Ok(Some(n))
}

/// Whether an engine error carries this SQLSTATE class (two characters).
fn is_class(e: &Error, class: &str) -> bool {
    matches!(e, Error::Engine { message, .. } if message.split(' ').nth(1).is_some_and(|c| c.starts_with(class)))
}

/// Whether an engine error carries this SQLSTATE.
fn is_state(e: &Error, code: &str) -> bool {
    matches!(e, Error::Engine { message, .. } if message.split(' ').nth(1) == Some(&format!("{code}:")))
}

#[async_trait]
impl Warehouse for PgWarehouse {
    fn engine(&self) -> &str {
        "postgres"
    }

    fn dialect(&self) -> Option<&dyn Dialect> {
        Some(&DIALECT)
    }

    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>> {
        let c = self.db.client().await?;
        describe(&**c, table, true).await
    }

    async fn describe_source(&self, source: &Source) -> Result<TableSchema> {
        let c = self.db.client().await?;
        source_schema(&**c, source).await
    }

    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64> {
        let c = self.db.client().await?;
        let schema = require_relation(&**c, table).await?;
        check_columns(&schema, predicate.columns(), &table.to_string())?;
        query_count(&**c, &stmt::count(&DIALECT, table, predicate)).await
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
        let c = self.db.client().await?;
        let schema = require_relation(&**c, table).await?;
        check_columns(
            &schema,
            std::iter::once(column).chain(predicate.columns()),
            &table.to_string(),
        )?;
        let ty = schema
            .column(column)
            .map(|c| c.ty)
            .unwrap_or(ColumnType::Other);
        let rows = query(
            &**c,
            &stmt::key_boundaries(&DIALECT, table, column, predicate, every),
        )
        .await?;
        rows.iter().map(|r| get_value(r, 0, ty)).collect()
    }

    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport> {
        let c = self.db.client().await?;
        let schema = require_relation(&**c, table).await?;
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
        let (stats, samples) = stmt::key_report(&DIALECT, table, keys, predicate, sample);
        let rows = query(&**c, &stats).await?;
        let (rows, null_keys, duplicate_keys) = match rows.first() {
            Some(r) => (get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?),
            None => (0, 0, 0),
        };
        let sample = if duplicate_keys > 0 && sample > 0 {
            query(&**c, &samples)
                .await?
                .iter()
                .map(|r| Ok(get_text(r, 0)?.unwrap_or_default()))
                .collect::<Result<Vec<_>>>()?
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

    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum> {
        let c = self.db.client().await?;
        let schema = require_relation(&**c, table).await?;
        check_columns(&schema, predicate.columns(), &table.to_string())?;
        let rows = query(&**c, &stmt::checksum(&DIALECT, table, predicate)).await?;
        let r = rows
            .first()
            .ok_or_else(|| Error::engine("checksum returned no row"))?;
        Ok(Checksum {
            rows: get_u64(r, 0)?,
            hash: get_string(r, 1)?,
        })
    }

    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>> {
        let c = self.db.client().await?;
        let schema = require_relation(&**c, table).await?;
        check_columns(
            &schema,
            predicate.columns().into_iter().chain(order_by),
            &table.to_string(),
        )?;
        let cols = schema.columns;
        let rows = query(
            &**c,
            &stmt::sample_rows(&DIALECT, table, &cols, predicate, order_by, limit),
        )
        .await?;
        rows.iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, col)| get_value(r, i, col.ty))
                    .collect()
            })
            .collect()
    }

    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome> {
        let job = self.slice_job(write);
        self.db.in_tx(self.write_limits(), overwrite(job)).await
    }

    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome> {
        let job = MergeJob {
            slice: self.slice_job(&write.slice),
            keys: write.keys.to_vec(),
            key_log: write.key_log.cloned(),
        };
        self.db.in_tx(self.write_limits(), merge(job)).await
    }

    async fn restore_slice(&self, r: &Restore<'_>) -> Result<Option<u64>> {
        let job = RestoreJob {
            table: r.table.clone(),
            snapshot: r.snapshot.clone(),
            batch: r.batch.clone(),
            footprint: match r.footprint {
                Footprint::Slice(p) => OwnedFootprint::Slice(p.clone()),
                Footprint::Keys { keys, key_log } => OwnedFootprint::Keys {
                    keys: keys.to_vec(),
                    key_log: key_log.clone(),
                },
            },
            columns: r.columns.to_vec(),
        };
        self.db
            .in_tx(self.write_limits(), move |tx| {
                Box::pin(async move { restore(tx, &job).await })
            })
            .await
    }

    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.db
            .in_tx(self.write_limits(), move |tx| {
                Box::pin(async move {
                    advisory_lock(tx, &table_key(&to)).await?;
                    if kind(tx, &to).await?.is_some() {
                        return Ok(());
                    }
                    let schema = require_relation(tx, &from).await?;
                    let d = &DIALECT;
                    exec(tx, &stmt::create_table_like_including(d, &to, &from)).await?;
                    if with_rows {
                        exec(tx, &stmt::copy_rows(d, &to, &from, &schema.names())).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn create_snapshot_table(
        &self,
        like: &TableRef,
        columns: &[Ident],
        snapshot: &TableRef,
    ) -> Result<()> {
        let (like, cols, snap) = (like.clone(), columns.to_vec(), snapshot.clone());
        self.db
            .in_tx(self.write_limits(), move |tx| {
                Box::pin(async move {
                    advisory_lock(tx, &table_key(&snap)).await?;
                    if kind(tx, &snap).await?.is_some() {
                        return Ok(());
                    }
                    let schema = require_relation(tx, &like).await?;
                    check_columns(&schema, &cols, &like.to_string())?;
                    exec(
                        tx,
                        &stmt::create_snapshot_table(&DIALECT, &snap, &like, &cols),
                    )
                    .await
                    .map(|_| ())
                })
            })
            .await
    }

    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        {
            let c = self.db.client().await?;
            let c = &**c;
            require_table(c, target).await?;
            require_table(c, replacement).await?;
            if target == replacement {
                return Err(Error::NotAllowed(format!(
                    "cannot swap {target} with itself"
                )));
            }
            if kind(c, keep_as).await?.is_some() {
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
        let limits = Limits {
            statement_timeout: self.limits.statement_timeout,
            lock_timeout: self.swap_lock_timeout,
        };
        let mut last = None;
        for attempt in 1..=self.swap_attempts {
            let (t, r, k) = (target.clone(), replacement.clone(), keep_as.clone());
            let res = self
                .db
                .in_tx(Some(limits), move |tx| {
                    Box::pin(async move {
                        // Checked again under the transaction: another
                        // process may have swapped meanwhile.
                        require_table(tx, &r).await?;
                        if kind(tx, &k).await?.is_some() {
                            return Err(Error::NotAllowed(format!(
                                "cannot keep {t} as {k}: it already exists"
                            )));
                        }
                        exec(tx, &stmt::rename(&DIALECT, &t, &k.name)).await?;
                        exec(tx, &stmt::rename(&DIALECT, &r, &t.name)).await?;
                        Ok(())
                    })
                })
                .await;
            match res {
                Err(e) if is_state(&e, "55P03") => {
                    tracing::warn!(table = %target, attempt, "swap could not lock the table; retrying");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
        Err(Error::transient(format!(
            "swap of {target}: could not take its lock within the lock timeout of {:?} in {} attempt(s) \
             (other sessions are using the table); nothing was swapped, retry later ({})",
            self.swap_lock_timeout,
            self.swap_attempts,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        let (view, table) = (view.clone(), table.clone());
        self.db
            .in_tx(self.write_limits(), move |tx| {
                Box::pin(async move {
                    if kind(tx, &view).await?.as_deref() == Some(TABLE) {
                        return Err(Error::NotAllowed(format!("{view} is a table, not a view")));
                    }
                    let Some(_) = kind(tx, &table).await? else {
                        return Err(Error::UnknownTable(table.to_string()));
                    };
                    let d = &DIALECT;
                    let cycle = |e: Error| {
                        if is_state(&e, "42P17") {
                            Error::NotAllowed(format!("view {view} would read itself"))
                        } else {
                            e
                        }
                    };
                    let replace = stmt::create_or_replace_view(d, &view, &table);
                    // PostgreSQL finds a cycle only when the view is read:
                    // read it now, so a cycle is refused, not committed.
                    let probe = stmt::probe(d, &view);
                    tx.batch_execute("SAVEPOINT __bf_view").await.map_err(pg_error)?;
                    let replaced = match exec(tx, &replace).await {
                        Ok(_) => Ok(()),
                        Err(e) if is_state(&e, "42P17") => Err(cycle(e)),
                        Err(e) if is_class(&e, "42") => {
                            // CREATE OR REPLACE cannot drop, rename or
                            // retype a view's columns: drop and create, in
                            // this same transaction.
                            tracing::debug!(view = %view, error = %e, "view columns changed; recreating it");
                            tx.batch_execute("ROLLBACK TO SAVEPOINT __bf_view")
                                .await
                                .map_err(pg_error)?;
                            exec(tx, &stmt::drop_view(d, &view)).await?;
                            exec(tx, &replace).await.map_err(cycle)?;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    replaced?;
                    query(tx, &probe).await.map_err(cycle)?;
                    Ok(())
                })
            })
            .await
    }

    async fn drop_table(&self, table: &TableRef) -> Result<bool> {
        let c = self.db.client().await?;
        if kind(&**c, table).await?.as_deref() != Some(TABLE) {
            return Ok(false);
        }
        exec(&**c, &stmt::drop_table(&DIALECT, table)).await?;
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
        let (source, p, lo, hi, order_by, into) = (
            source.clone(),
            predicate.clone(),
            bounds.0.cloned(),
            bounds.1.cloned(),
            order_by.clone(),
            into.clone(),
        );
        self.db
            .in_tx(self.write_limits(), move |tx| {
                Box::pin(async move {
                    let d = &DIALECT;
                    advisory_lock(tx, &table_key(&into)).await?;
                    if kind(tx, &into).await?.is_some() {
                        return query_count(tx, &stmt::count(d, &into, &Predicate::All)).await;
                    }
                    let src = source_schema(tx, &source).await?;
                    check_source(&src, &source, std::slice::from_ref(&order_by), &p)?;
                    let bounded = source.is_bounded();
                    let filter = if bounded { None } else { Some(&p) };
                    exec(
                        tx,
                        &stmt::materialize(
                            d,
                            &into,
                            false,
                            &source,
                            (lo.as_ref(), hi.as_ref()),
                            filter,
                            Some(&order_by),
                        ),
                    )
                    .await?;
                    if bounded {
                        let outside = query_count(tx, &stmt::outside(d, &into, &p)).await?;
                        if outside > 0 {
                            return Err(Error::OutOfBounds {
                                batch: format!("stage {into}"),
                                rows: outside,
                            });
                        }
                    }
                    exec_all(tx, &stmt::index_and_analyze(d, &into, &order_by)).await?;
                    query_count(tx, &stmt::count(d, &into, &Predicate::All)).await
                })
            })
            .await
    }

    async fn inspect(&self, question: &Inspect) -> Result<Answer> {
        sql::inspect::answer(self, question).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.execute_batch(sql).await
    }
}

#[async_trait]
impl SqlRead for PgWarehouse {
    async fn read(&self, stmts: Vec<Sql>) -> Result<Vec<Vec<Vec<Value>>>> {
        self.db
            .in_tx(None, move |tx| {
                Box::pin(async move {
                    let mut out = Vec::with_capacity(stmts.len());
                    for s in &stmts {
                        out.push(query_values(tx, s).await?);
                    }
                    Ok(out)
                })
            })
            .await
    }
}
