//! [`DuckDbWarehouse`]: the [`Warehouse`] trait on DuckDB, every operation
//! pushed down as SQL rendered by [`backfill_core::sql::stmt`].

use std::path::Path;
use std::sync::Arc;

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
    Column, Error, Ident, Predicate, Result, Source, TableRef, TableSchema, Value,
};
use duckdb::Connection;

use crate::db::{
    engine_error, exec, get_string, get_text, get_u64, get_value, in_tx, query, query_columns,
    query_count, query_values, Db, LedgerHome, DIALECT,
};
use crate::ledger::{self, DuckDbLedger, DEFAULT_SCHEMA};

/// A DuckDB database as a backfill [`Warehouse`].
///
/// Writes, checks and snapshots run as SQL inside DuckDB; only plans,
/// bounds, counts and bounded samples cross into Rust. The warehouse owns
/// one connection (clones share it); each operation holds it for its whole
/// duration on a blocking thread, so the async runtime never blocks and
/// one operation's transaction never interleaves with another's. A
/// [`DuckDbLedger`] made with [`DuckDbWarehouse::ledger`] lives in the same
/// database, and each batch write marks its ledger row in the same
/// transaction as the data.
///
/// How the contract maps onto DuckDB:
///
/// - a slice write first materializes the batch's source slice once into a
///   temporary table (a bounded query with the batch's bounds, then the
///   out-of-bounds guard; any other source with the batch predicate), so
///   the guard, the pre-image, the delete and the insert all see the same
///   rows, even when the source reads the table being written;
/// - merge is `UPDATE … FROM` plus `INSERT … WHERE NOT EXISTS`, which needs
///   no primary key or unique constraint on the target;
/// - `swap` renames both tables in one transaction; DuckDB binds views by
///   name when they are queried, so a view reading the target reads the
///   new table after the swap;
/// - `create_copy` keeps column types and `NOT NULL`, not primary keys,
///   unique or check constraints or defaults;
/// - temporal values are bound as ISO text and cast by the placeholders,
///   at DuckDB's microsecond precision;
/// - tables and columns are looked up in `information_schema` by their
///   names as written (DuckDB itself resolves names case-insensitively).
///
/// ```no_run
/// # async fn demo() -> backfill_core::Result<()> {
/// use backfill_duckdb::DuckDbWarehouse;
/// let warehouse = DuckDbWarehouse::open("analytics.duckdb")?;
/// let ledger = warehouse.ledger("backfill").await?;
/// # let _ = ledger; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DuckDbWarehouse {
    db: Db,
}

impl DuckDbWarehouse {
    /// Opens (or creates) a database file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Connection::open(path)
            .map(Self::from_connection)
            .map_err(engine_error)
    }

    /// A new in-memory database.
    pub fn in_memory() -> Result<Self> {
        Connection::open_in_memory()
            .map(Self::from_connection)
            .map_err(engine_error)
    }

    /// Wraps an open connection.
    pub fn from_connection(conn: Connection) -> Self {
        DuckDbWarehouse { db: Db::new(conn) }
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// system clock. See [`DEFAULT_SCHEMA`].
    pub async fn ledger(&self, schema: &str) -> Result<DuckDbLedger> {
        self.ledger_with_clock(schema, Arc::new(SystemClock)).await
    }

    /// A ledger in `schema` of this database (created if missing), on the
    /// given clock.
    pub async fn ledger_with_clock(
        &self,
        schema: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<DuckDbLedger> {
        DuckDbLedger::create(self.db.clone(), Ident::new(schema)?, clock).await
    }

    /// A ledger in [`DEFAULT_SCHEMA`] on the system clock.
    pub async fn default_ledger(&self) -> Result<DuckDbLedger> {
        self.ledger(DEFAULT_SCHEMA).await
    }

    /// Runs trusted SQL written by the caller (setup, fixtures), statements
    /// separated by semicolons, without parameters.
    pub async fn execute_batch(&self, sql: impl Into<String>) -> Result<()> {
        let sql = sql.into();
        self.db
            .run(move |c| c.execute_batch(&sql).map_err(engine_error))
            .await
    }

    /// Runs `f` with the shared connection on a blocking thread: an escape
    /// hatch for what this API does not cover.
    pub async fn with_connection<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> duckdb::Result<T> + Send + 'static,
    {
        self.db.run(move |c| f(c).map_err(engine_error)).await
    }

    /// Creates a table from a schema (types as in
    /// [`stmt::sql_type`]).
    pub async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<()> {
        let sql = stmt::create_table(&DIALECT, table, schema);
        self.db.run(move |c| exec(c, &sql).map(|_| ())).await
    }

    /// Inserts rows, each in the table's column order, in one transaction.
    pub async fn insert_rows(&self, table: &TableRef, rows: &[Vec<Value>]) -> Result<()> {
        let table = table.clone();
        let rows = rows.to_vec();
        self.db
            .run(move |c| {
                let names = require_table(c, &table)?.names();
                in_tx(c, |c| {
                    for chunk in rows.chunks(500) {
                        if let Some(bad) = chunk.iter().find(|r| r.len() != names.len()) {
                            return Err(Error::SchemaMismatch(format!(
                                "{table} has {} column(s), a row has {}",
                                names.len(),
                                bad.len()
                            )));
                        }
                        exec(c, &stmt::insert_values(&DIALECT, &table, &names, chunk))?;
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
}

// ---------------------------------------------------------------------------
// Catalog helpers (run on the connection, inside or outside a transaction)
// ---------------------------------------------------------------------------

const TABLE: &str = "BASE TABLE";

/// `Some("BASE TABLE" | "VIEW" | …)`, or `None` when nothing has the name.
fn kind(c: &Connection, t: &TableRef) -> Result<Option<String>> {
    Ok(
        query(c, &stmt::relation_kind(&DIALECT, t), |r| get_string(r, 0))?
            .into_iter()
            .next(),
    )
}

/// A relation's columns. `strict` refuses a column name that is not a
/// valid identifier (a target must be fully writable); otherwise such
/// columns are left out (a source only needs the columns it is asked for).
fn describe(c: &Connection, t: &TableRef, strict: bool) -> Result<Option<TableSchema>> {
    let rows = query(c, &stmt::describe(&DIALECT, t), |r| {
        Ok((get_string(r, 0)?, get_string(r, 1)?, get_text(r, 2)?))
    })?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    for (name, ty, nullable) in rows {
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

/// A table or view, or [`Error::UnknownTable`].
fn require_relation(c: &Connection, t: &TableRef) -> Result<TableSchema> {
    describe(c, t, true)?.ok_or_else(|| Error::UnknownTable(t.to_string()))
}

/// A base table (writes never go to a view), or [`Error::UnknownTable`].
fn require_table(c: &Connection, t: &TableRef) -> Result<TableSchema> {
    if kind(c, t)?.as_deref() != Some(TABLE) {
        return Err(Error::UnknownTable(t.to_string()));
    }
    require_relation(c, t)
}

/// The columns a source yields.
fn source_schema(c: &Connection, source: &Source) -> Result<TableSchema> {
    match source {
        Source::Table(t) => {
            describe(c, t, false)?.ok_or_else(|| Error::UnknownTable(t.to_string()))
        }
        Source::Query(_) => {
            let cols = query_columns(c, &stmt::source_columns(&DIALECT, source))?;
            Ok(TableSchema {
                columns: cols
                    .into_iter()
                    .filter_map(|(name, ty)| Ident::new(name).ok().map(|n| Column::new(n, ty)))
                    .collect(),
            })
        }
    }
}

/// The data columns of a pre-image or key-log table.
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

/// The per-connection temporary table holding a batch's source slice,
/// qualified by DuckDB's `temp` catalog so a user table of the same name
/// is never read or dropped.
fn slice_table() -> TableRef {
    TableRef::qualified(
        Ident::new("temp").expect("a valid identifier"),
        Ident::new("__bf_slice").expect("a valid identifier"),
    )
}

/// Materializes a batch's source slice once into [`slice_table`] (a
/// bounded query gets the batch's bounds and is guarded; any other source
/// gets the batch predicate), so every later statement of the write reads
/// the same rows, even when the source reads the table being written.
fn stage_slice(c: &Connection, source: &Source, batch: &Batch) -> Result<TableRef> {
    let d = &DIALECT;
    let tmp = slice_table();
    exec(c, &stmt::drop_table(d, &tmp))?;
    let bounded = source.is_bounded();
    let filter = if bounded {
        None
    } else {
        Some(&batch.predicate)
    };
    exec(
        c,
        &stmt::materialize(
            d,
            &tmp,
            true,
            source,
            (batch.start.as_ref(), batch.end.as_ref()),
            filter,
            None,
        ),
    )?;
    if bounded {
        let outside = query_count(c, &stmt::outside(d, &tmp, &batch.predicate))?;
        if outside > 0 {
            return Err(Error::OutOfBounds {
                batch: batch.id.to_string(),
                rows: outside,
            });
        }
    }
    Ok(tmp)
}

fn has_marker(c: &Connection, snapshot: &TableRef, batch_id: &str) -> Result<bool> {
    Ok(query_count(c, &stmt::marker_count(&DIALECT, snapshot, batch_id))? > 0)
}

// ---------------------------------------------------------------------------
// Owned copies of the borrowed write descriptions (blocking tasks are
// 'static)
// ---------------------------------------------------------------------------

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

impl DuckDbWarehouse {
    fn slice_job(&self, w: &SliceWrite<'_>) -> SliceJob {
        SliceJob {
            batch: w.batch.clone(),
            table: w.table.clone(),
            source: w.source.clone(),
            direct: w.straight_from_source(),
            columns: w.columns.to_vec(),
            snapshot: w.snapshot.cloned(),
            mark: w
                .mark
                .and_then(|m| self.db.ledger_home(&m.ledger).map(|home| (m.clone(), home))),
        }
    }
}

fn overwrite(c: &Connection, j: &SliceJob) -> Result<WriteOutcome> {
    let d = &DIALECT;
    let id = j.batch.id.to_string();
    let target = require_table(c, &j.table)?;
    let tname = j.table.to_string();
    check_columns(
        &target,
        j.columns.iter().chain(j.batch.predicate.columns()),
        &tname,
    )?;
    let snap_cols = match &j.snapshot {
        Some(s) => {
            let schema = require_table(c, s)?;
            check_snapshot_layout(&schema, s)?;
            let cols = data_columns(&schema);
            check_columns(&target, &cols, &tname)?;
            Some(cols)
        }
        None => None,
    };
    // The run's staged snapshot was checked when the run made it.
    if !j.direct {
        let src = source_schema(c, &j.source)?;
        check_source(&src, &j.source, &j.columns, &j.batch.predicate)?;
    }

    in_tx(c, |c| {
        // Anything but the run's own snapshot may read the target, so its
        // slice is copied aside before the delete.
        let slice = match j.direct {
            true => None,
            false => Some(stage_slice(c, &j.source, &j.batch)?),
        };
        let mut snapshotted = 0;
        if let (Some(snap), Some(cols)) = (&j.snapshot, &snap_cols) {
            if !has_marker(c, snap, &id)? {
                snapshotted = exec(
                    c,
                    &stmt::snapshot_slice(d, snap, cols, &j.table, &j.batch.predicate, &id),
                )?;
                exec(c, &stmt::insert_marker(d, snap, &id))?;
            }
        }
        let before = exec(c, &stmt::delete_slice(d, &j.table, &j.batch.predicate))?;
        let from = slice
            .clone()
            .map_or_else(|| j.source.clone(), Source::Table);
        let written = exec(
            c,
            &stmt::insert_slice(d, &j.table, &j.columns, &from, &j.batch),
        )?;
        if let Some(slice) = &slice {
            exec(c, &stmt::drop_table(d, slice))?;
        }
        let mut out = WriteOutcome {
            rows_before: before,
            rows_written: written,
            rows_snapshotted: snapshotted,
            ledger_marked: false,
        };
        if let Some((mark, home)) = &j.mark {
            ledger::mark_written(c, home, mark, before, written)?;
            out.ledger_marked = true;
        }
        Ok(out)
    })
}

fn merge(
    c: &Connection,
    j: &SliceJob,
    keys: &[Ident],
    key_log: Option<&TableRef>,
) -> Result<WriteOutcome> {
    let d = &DIALECT;
    let id = j.batch.id.to_string();
    if keys.is_empty() {
        return Err(Error::InvalidPlan(
            "merge needs at least one key column".into(),
        ));
    }
    let target = require_table(c, &j.table)?;
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
            let schema = require_table(c, s)?;
            check_snapshot_layout(&schema, s)?;
            let cols = data_columns(&schema);
            check_columns(&target, &cols, &tname)?;
            Some(cols)
        }
        None => None,
    };
    let log_cols = match key_log {
        Some(l) => {
            let schema = require_table(c, l)?;
            check_snapshot_layout(&schema, l)?;
            Some(data_columns(&schema))
        }
        None => None,
    };
    let src = source_schema(c, &j.source)?;
    let mut needed = j.columns.clone();
    needed.extend(keys.iter().cloned());
    needed.extend(log_cols.iter().flatten().cloned());
    check_source(&src, &j.source, &needed, &j.batch.predicate)?;

    in_tx(c, |c| {
        let slice = stage_slice(c, &j.source, &j.batch)?;
        // Refuse null and duplicate source keys before any write.
        let (stats, sample) = stmt::key_report(d, &slice, keys, &Predicate::All, SAMPLE_LIMIT);
        let (_, nulls, dups) = query(c, &stats, |r| {
            Ok((get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?))
        })?
        .into_iter()
        .next()
        .unwrap_or_default();
        if nulls > 0 {
            return Err(Error::NullKeys {
                batch: id,
                rows: nulls,
            });
        }
        if dups > 0 {
            let sample = query(c, &sample, |r| Ok(get_text(r, 0)?.unwrap_or_default()))?;
            return Err(Error::DuplicateKeys {
                batch: id,
                groups: dups,
                sample,
            });
        }
        // Pre-image and key log, only while the batch has no marker.
        let first_time = match (&j.snapshot, key_log) {
            (Some(snap), _) => !has_marker(c, snap, &id)?,
            (None, Some(log)) => !has_marker(c, log, &id)?,
            (None, None) => false,
        };
        let mut snapshotted = 0;
        if first_time {
            if let (Some(snap), Some(cols)) = (&j.snapshot, &snap_cols) {
                snapshotted = exec(
                    c,
                    &stmt::snapshot_keys(d, snap, cols, &j.table, keys, &slice, &id),
                )?;
            }
            if let (Some(log), Some(cols)) = (key_log, &log_cols) {
                exec(c, &stmt::log_keys(d, log, cols, &slice, &id))?;
            }
            match (&j.snapshot, key_log) {
                (Some(snap), _) => exec(c, &stmt::insert_marker(d, snap, &id))?,
                (None, Some(log)) => exec(c, &stmt::insert_marker(d, log, &id))?,
                (None, None) => 0,
            };
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
        let updated = exec(c, &stmt::merge_update(d, &j.table, &set, keys, &slice))?;
        let inserted = exec(
            c,
            &stmt::merge_insert(d, &j.table, &j.columns, keys, &slice),
        )?;
        exec(c, &stmt::drop_table(d, &slice))?;
        let written = updated + inserted;
        let mut out = WriteOutcome {
            rows_before: updated,
            rows_written: written,
            rows_snapshotted: snapshotted,
            ledger_marked: false,
        };
        if let Some((mark, home)) = &j.mark {
            ledger::mark_written(c, home, mark, updated, written)?;
            out.ledger_marked = true;
        }
        Ok(out)
    })
}

enum OwnedFootprint {
    Slice(Predicate),
    Keys { keys: Vec<Ident>, key_log: TableRef },
}

fn restore(
    c: &Connection,
    table: &TableRef,
    snapshot: &TableRef,
    batch: &Batch,
    footprint: &OwnedFootprint,
    columns: &[Ident],
) -> Result<Option<u64>> {
    let d = &DIALECT;
    let id = batch.id.to_string();
    let target = require_table(c, table)?;
    let tname = table.to_string();
    check_columns(&target, columns, &tname)?;
    let snap = require_table(c, snapshot)?;
    check_snapshot_layout(&snap, snapshot)?;
    check_columns(&snap, columns, &snapshot.to_string())?;
    match footprint {
        OwnedFootprint::Slice(p) => check_columns(&target, p.columns(), &tname)?,
        OwnedFootprint::Keys { keys, key_log } => {
            let log = require_table(c, key_log)?;
            check_snapshot_layout(&log, key_log)?;
            check_columns(&log, keys, &key_log.to_string())?;
            check_columns(&target, keys, &tname)?;
        }
    }
    in_tx(c, |c| {
        if !has_marker(c, snapshot, &id)? {
            return Ok(None);
        }
        match footprint {
            OwnedFootprint::Slice(p) => exec(c, &stmt::delete_slice(d, table, p))?,
            OwnedFootprint::Keys { keys, key_log } => {
                exec(c, &stmt::delete_logged_keys(d, table, keys, key_log, &id))?
            }
        };
        let n = exec(c, &stmt::restore_rows(d, table, columns, snapshot, &id))?;
        Ok(Some(n))
    })
}

#[async_trait]
impl Warehouse for DuckDbWarehouse {
    fn engine(&self) -> &str {
        "duckdb"
    }

    fn dialect(&self) -> Option<&dyn Dialect> {
        Some(&DIALECT)
    }

    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>> {
        let t = table.clone();
        self.db.run(move |c| describe(c, &t, true)).await
    }

    async fn describe_source(&self, source: &Source) -> Result<TableSchema> {
        let s = source.clone();
        self.db.run(move |c| source_schema(c, &s)).await
    }

    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64> {
        let (t, p) = (table.clone(), predicate.clone());
        self.db
            .run(move |c| {
                let schema = require_relation(c, &t)?;
                check_columns(&schema, p.columns(), &t.to_string())?;
                query_count(c, &stmt::count(&DIALECT, &t, &p))
            })
            .await
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
        let (t, col, p) = (table.clone(), column.clone(), predicate.clone());
        self.db
            .run(move |c| {
                let schema = require_relation(c, &t)?;
                check_columns(
                    &schema,
                    std::iter::once(&col).chain(p.columns()),
                    &t.to_string(),
                )?;
                let ty = schema
                    .column(&col)
                    .map(|c| c.ty)
                    .unwrap_or(backfill_core::ColumnType::Other);
                query(
                    c,
                    &stmt::key_boundaries(&DIALECT, &t, &col, &p, every),
                    |r| get_value(r, 0, ty),
                )
            })
            .await
    }

    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport> {
        let (t, k, p) = (table.clone(), keys.to_vec(), predicate.clone());
        self.db
            .run(move |c| {
                let schema = require_relation(c, &t)?;
                check_columns(&schema, k.iter().chain(p.columns()), &t.to_string())?;
                if k.is_empty() {
                    return Err(Error::InvalidPlan(
                        "a key report needs at least one key column".into(),
                    ));
                }
                let (stats, samples) = stmt::key_report(&DIALECT, &t, &k, &p, sample);
                let (rows, null_keys, duplicate_keys) = query(c, &stats, |r| {
                    Ok((get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?))
                })?
                .into_iter()
                .next()
                .unwrap_or_default();
                let sample = if duplicate_keys > 0 && sample > 0 {
                    query(c, &samples, |r| Ok(get_text(r, 0)?.unwrap_or_default()))?
                } else {
                    Vec::new()
                };
                Ok(KeyReport {
                    rows,
                    null_keys,
                    duplicate_keys,
                    sample,
                })
            })
            .await
    }

    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum> {
        let (t, p) = (table.clone(), predicate.clone());
        self.db
            .run(move |c| {
                let schema = require_relation(c, &t)?;
                check_columns(&schema, p.columns(), &t.to_string())?;
                query(c, &stmt::checksum(&DIALECT, &t, &p), |r| {
                    Ok(Checksum {
                        rows: get_u64(r, 0)?,
                        hash: get_string(r, 1)?,
                    })
                })?
                .into_iter()
                .next()
                .ok_or_else(|| Error::engine("checksum returned no row"))
            })
            .await
    }

    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>> {
        let (t, p, o) = (table.clone(), predicate.clone(), order_by.to_vec());
        self.db
            .run(move |c| {
                let schema = require_relation(c, &t)?;
                check_columns(&schema, p.columns().into_iter().chain(&o), &t.to_string())?;
                let cols = schema.columns;
                query(
                    c,
                    &stmt::sample_rows(&DIALECT, &t, &cols, &p, &o, limit),
                    |r| {
                        cols.iter()
                            .enumerate()
                            .map(|(i, col)| get_value(r, i, col.ty))
                            .collect()
                    },
                )
            })
            .await
    }

    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome> {
        let job = self.slice_job(write);
        self.db.run(move |c| overwrite(c, &job)).await
    }

    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome> {
        let job = self.slice_job(&write.slice);
        let keys = write.keys.to_vec();
        let log = write.key_log.cloned();
        self.db
            .run(move |c| merge(c, &job, &keys, log.as_ref()))
            .await
    }

    async fn restore_slice(&self, r: &Restore<'_>) -> Result<Option<u64>> {
        let (table, snapshot, batch, columns) = (
            r.table.clone(),
            r.snapshot.clone(),
            r.batch.clone(),
            r.columns.to_vec(),
        );
        let footprint = match r.footprint {
            Footprint::Slice(p) => OwnedFootprint::Slice(p.clone()),
            Footprint::Keys { keys, key_log } => OwnedFootprint::Keys {
                keys: keys.to_vec(),
                key_log: key_log.clone(),
            },
        };
        self.db
            .run(move |c| restore(c, &table, &snapshot, &batch, &footprint, &columns))
            .await
    }

    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.db
            .run(move |c| {
                if kind(c, &to)?.is_some() {
                    return Ok(());
                }
                let schema = require_relation(c, &from)?;
                let d = &DIALECT;
                in_tx(c, |c| {
                    exec(c, &stmt::create_table_like(d, &to, &from))?;
                    for col in schema.columns.iter().filter(|c| !c.nullable) {
                        exec(c, &stmt::set_not_null(d, &to, &col.name))?;
                    }
                    if with_rows {
                        exec(c, &stmt::copy_rows(d, &to, &from, &schema.names()))?;
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
            .run(move |c| {
                if kind(c, &snap)?.is_some() {
                    return Ok(());
                }
                let schema = require_relation(c, &like)?;
                check_columns(&schema, &cols, &like.to_string())?;
                exec(
                    c,
                    &stmt::create_snapshot_table(&DIALECT, &snap, &like, &cols),
                )
                .map(|_| ())
            })
            .await
    }

    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        let (target, replacement, keep_as) = (target.clone(), replacement.clone(), keep_as.clone());
        self.db
            .run(move |c| {
                require_table(c, &target)?;
                require_table(c, &replacement)?;
                if target == replacement {
                    return Err(Error::NotAllowed(format!("cannot swap {target} with itself")));
                }
                if kind(c, &keep_as)?.is_some() {
                    return Err(Error::NotAllowed(format!(
                        "cannot keep {target} as {keep_as}: it already exists"
                    )));
                }
                if replacement.schema != target.schema || keep_as.schema != target.schema {
                    return Err(Error::NotAllowed(format!(
                        "swap renames within one schema: {target}, {replacement} and {keep_as} must share it"
                    )));
                }
                let d = &DIALECT;
                in_tx(c, |c| {
                    exec(c, &stmt::rename(d, &target, &keep_as.name))?;
                    exec(c, &stmt::rename(d, &replacement, &target.name))?;
                    Ok(())
                })
            })
            .await
    }

    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        let (view, table) = (view.clone(), table.clone());
        self.db
            .run(move |c| {
                if kind(c, &view)?.as_deref() == Some(TABLE) {
                    return Err(Error::NotAllowed(format!("{view} is a table, not a view")));
                }
                if kind(c, &table)?.is_none() {
                    return Err(Error::UnknownTable(table.to_string()));
                }
                let d = &DIALECT;
                in_tx(c, |c| {
                    exec(c, &stmt::create_or_replace_view(d, &view, &table))?;
                    // DuckDB binds views lazily: bind it now, so a cycle is
                    // refused instead of committed.
                    match query(c, &stmt::probe(d, &view), |_| Ok(())) {
                        Err(Error::Engine { message, .. }) if message.contains("recursi") => {
                            Err(Error::NotAllowed(format!("view {view} would read itself")))
                        }
                        other => other.map(|_| ()),
                    }
                })
            })
            .await
    }

    async fn drop_table(&self, table: &TableRef) -> Result<bool> {
        let t = table.clone();
        self.db
            .run(move |c| {
                if kind(c, &t)?.as_deref() != Some(TABLE) {
                    return Ok(false);
                }
                exec(c, &stmt::drop_table(&DIALECT, &t))?;
                Ok(true)
            })
            .await
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
            .run(move |c| {
                let d = &DIALECT;
                if kind(c, &into)?.is_some() {
                    return query_count(c, &stmt::count(d, &into, &Predicate::All));
                }
                let src = source_schema(c, &source)?;
                check_source(&src, &source, std::slice::from_ref(&order_by), &p)?;
                let bounded = source.is_bounded();
                in_tx(c, |c| {
                    let filter = if bounded { None } else { Some(&p) };
                    exec(
                        c,
                        &stmt::materialize(
                            d,
                            &into,
                            false,
                            &source,
                            (lo.as_ref(), hi.as_ref()),
                            filter,
                            Some(&order_by),
                        ),
                    )?;
                    if bounded {
                        let outside = query_count(c, &stmt::outside(d, &into, &p))?;
                        if outside > 0 {
                            return Err(Error::OutOfBounds {
                                batch: format!("stage {into}"),
                                rows: outside,
                            });
                        }
                    }
                    query_count(c, &stmt::count(d, &into, &Predicate::All))
                })
            })
            .await
    }

    async fn inspect(&self, question: &Inspect) -> Result<Answer> {
        sql::inspect::answer(self, question).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.execute_batch(sql.to_string()).await
    }
}

#[async_trait]
impl SqlRead for DuckDbWarehouse {
    async fn read(&self, stmts: Vec<Sql>) -> Result<Vec<Vec<Vec<Value>>>> {
        self.db
            .run(move |c| in_tx(c, |c| stmts.iter().map(|s| query_values(c, s)).collect()))
            .await
    }
}
