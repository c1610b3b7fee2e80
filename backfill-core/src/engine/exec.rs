//! The executor seam: the little a SQL engine supplies so that the shared
//! ledger ([`crate::engine::SqlLedger`]) and the shared write protocol
//! ([`crate::engine::SqlWarehouse`]) run on it.
//!
//! An engine implements [`Executor`] (open a connection, open a
//! transaction, say what an error means) and [`Conn`] (run a rendered
//! statement, read rows as [`Value`]s, commit or roll back). Everything
//! else, the statements, the state machine, the fencing and the write
//! protocol, is written once in this crate.
//!
//! ```no_run
//! # async fn demo(exec: &dyn backfill_core::engine::Executor) -> backfill_core::Result<()> {
//! use backfill_core::engine::exec::finish;
//! use backfill_core::sql::stmt;
//! use backfill_core::{Predicate, TableRef};
//!
//! let t = TableRef::parse("analytics.revenue")?;
//! let mut tx = exec.begin(None).await?;
//! let r = tx.query(&stmt::count(exec.dialect(), &t, &Predicate::All)).await;
//! let rows = finish(tx, r).await?;               // commit on Ok, roll back on Err
//! # let _ = rows; Ok(()) }
//! ```

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::sql::{Dialect, Sql};
use crate::{ColumnType, Predicate, TableRef, Value};

/// Session limits for one transaction (`statement_timeout` and
/// `lock_timeout` on PostgreSQL); engines without them ignore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long one statement may run.
    pub statement_timeout: Duration,
    /// How long a statement may wait for a lock.
    pub lock_timeout: Duration,
}

/// What an engine error means to the code deciding what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A serialization failure or deadlock the engine rolled back: the
    /// whole transaction may be retried.
    Conflict,
    /// A lock could not be taken within the lock timeout.
    LockTimeout,
    /// A view would read itself.
    ViewCycle,
    /// `CREATE OR REPLACE VIEW` refused because the view's columns change.
    ViewShapeChanged,
    /// Anything else.
    Other,
}

/// One connection of an engine, inside or outside a transaction.
///
/// Rows come back as [`Value`]s decoded by their result type: integers as
/// [`Value::Int`], floats as [`Value::Float`], exact decimals as
/// [`Value::Text`], timestamps as [`Value::Timestamp`] or (where the engine
/// does not say whether they carry a zone) [`Value::DateTime`] in UTC.
#[async_trait]
pub trait Conn: Send {
    /// Executes a statement; returns the rows it changed.
    async fn execute(&mut self, sql: &Sql) -> Result<u64>;

    /// Runs a query and returns its rows.
    async fn query(&mut self, sql: &Sql) -> Result<Vec<Vec<Value>>>;

    /// The result columns of a query, `(name, type)`, without reading its
    /// rows.
    async fn columns(&mut self, sql: &Sql) -> Result<Vec<(String, ColumnType)>>;

    /// Runs trusted text as it is (statements the user wrote, savepoints),
    /// without parameters.
    async fn script(&mut self, text: &str) -> Result<()>;

    /// Appends `rows` (values of `columns`, in that order) to `table` by
    /// the engine's native bulk path, inside this connection's transaction
    /// if one is open. Returns `false`, having written nothing, where the
    /// engine has no such path (the default) or it does not take these
    /// values; the caller then inserts them by statements.
    async fn append(
        &mut self,
        _table: &TableRef,
        _columns: &[&str],
        _rows: &[Vec<Value>],
    ) -> Result<bool> {
        Ok(false)
    }

    /// The engine's own answer to what a relation is, where its catalog
    /// is read by a call rather than by SQL (Spark Connect's catalog
    /// calls). The default, [`CatalogAnswer::BySql`], has the shared code
    /// read it with the dialect's catalog statements.
    async fn relation(&mut self, _table: &TableRef) -> Result<CatalogAnswer> {
        Ok(CatalogAnswer::BySql)
    }

    /// Commits the transaction this connection was opened with.
    async fn commit(&mut self) -> Result<()>;

    /// Rolls the transaction back.
    async fn rollback(&mut self) -> Result<()>;
}

/// What an engine's own catalog says of a relation ([`Conn::relation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogAnswer {
    /// The engine has no such call: read the catalog by SQL.
    BySql,
    /// Nothing has the name.
    Missing,
    /// A table or a view, with its columns.
    Found {
        /// Whether it is a view.
        view: bool,
        /// Its columns in order, `(name, type, nullable)`, names as the
        /// engine gives them (the shared code validates them).
        columns: Vec<(String, ColumnType, bool)>,
    },
}

/// A SQL engine: connections, transactions and the meaning of its errors.
///
/// A connection dropped with its transaction still open must leave
/// nothing of it behind (roll back, or discard the connection).
#[async_trait]
pub trait Executor: Send + Sync + Debug + 'static {
    /// The dialect statements are rendered in.
    fn dialect(&self) -> &'static dyn Dialect;

    /// A short engine name ("duckdb", "postgres").
    fn engine(&self) -> &'static str;

    /// Identifies this handle on the database (process and instance), so a
    /// ledger mark made here is recognised as this engine's own.
    fn id(&self) -> &str;

    /// A connection in autocommit mode.
    async fn connect(&self) -> Result<Box<dyn Conn>>;

    /// A connection with an open transaction, under `limits` if given.
    /// An engine without transactions refuses with
    /// [`Error::Unsupported`], so nothing that needs one (a batch's write,
    /// a ledger in the engine) runs on it.
    async fn begin(&self, limits: Option<Limits>) -> Result<Box<dyn Conn>>;

    /// Whether the engine has transactions (see [`Executor::begin`]).
    /// Reads that would run in one for a consistent view run on one
    /// session without.
    fn transactions(&self) -> bool {
        true
    }

    /// Whether one statement replaces the rows of a table's slice with a
    /// query's, atomically (`INSERT INTO t REPLACE WHERE p SELECT …` on
    /// Delta tables). On an engine without transactions, this is what
    /// makes a batch's overwrite, its pre-image and its restore each one
    /// commit; without it, such an engine writes nothing.
    fn replaces_slices(&self) -> bool {
        false
    }

    /// What an error of this engine means.
    fn classify(&self, _error: &Error) -> Failure {
        Failure::Other
    }

    /// The engine's native partition path, if it has one.
    fn partitions(&self) -> Option<&dyn NativePartitions> {
        None
    }

    /// How a ledger on this engine tells a dead lease holder from a live
    /// one.
    fn liveness(&self) -> LivenessModel {
        LivenessModel::LeaseOnly
    }

    /// This process instance's id on the engine, recorded with every
    /// lease its workers take. With [`LivenessModel::SessionLock`] the
    /// first call takes the instance's session lock and the executor keeps
    /// it for as long as it lives.
    async fn instance(&self) -> Result<String> {
        Ok(self.id().to_string())
    }
}

/// How a ledger tells that a lease's holder died, so its batch is taken
/// back at once instead of when the lease expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessModel {
    /// One process writes the database at a time (DuckDB): while this
    /// instance holds it, a lease of any other instance is a dead
    /// process's.
    SingleWriter,
    /// Every instance holds a session lock for its lifetime (a
    /// PostgreSQL advisory lock); a holder whose lock is free is dead. The
    /// dialect renders the lock and the check.
    SessionLock,
    /// No way to tell: a lease stands until it expires.
    LeaseOnly,
}

/// A partition whose bounds are exactly a batch's range, and the table its
/// replacement is built in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partition.
    pub table: TableRef,
    /// Its bound clause as the engine prints it.
    pub bound: String,
    /// Where the new partition is built before the swap.
    pub fresh: TableRef,
}

/// A native partition swap (PostgreSQL `DETACH`/`ATTACH PARTITION`): a
/// batch that is exactly one partition builds the new one beside it and
/// swaps it in, inside the batch's transaction.
#[async_trait]
pub trait NativePartitions: Send + Sync {
    /// The partition of `table` whose bounds are exactly `predicate`'s
    /// range, if the table is partitioned that way and nothing depends on
    /// the partition itself.
    async fn exact_partition(
        &self,
        c: &mut dyn Conn,
        table: &TableRef,
        predicate: &Predicate,
    ) -> Result<Option<Partition>>;

    /// Replaces the partition's rows with `slice`'s columns; returns
    /// `(rows before, rows written)`.
    async fn swap_partition(
        &self,
        c: &mut dyn Conn,
        parent: &TableRef,
        part: &Partition,
        slice: &TableRef,
        columns: &[crate::Ident],
    ) -> Result<(u64, u64)>;
}

/// Runs `$body` with `$c` bound to a connection in a new transaction of
/// `$exec` (under `$limits`), and ends the transaction by its result: the
/// body is an expression of type `Result<T>` that may use `?`.
macro_rules! in_tx {
    ($exec:expr, $limits:expr, |$c:ident| $body:expr) => {{
        // Without transactions, the statements run on one session, each
        // its own commit.
        let mut tx = if $exec.transactions() {
            $exec.begin($limits).await?
        } else {
            $exec.connect().await?
        };
        let r = {
            let $c: &mut dyn $crate::engine::exec::Conn = &mut *tx;
            async { $body }.await
        };
        $crate::engine::exec::finish(tx, r).await
    }};
}
pub(crate) use in_tx;

/// Ends a transaction by its result: commits on `Ok` (a failed commit is
/// the error), rolls back on `Err`.
pub async fn finish<T>(mut tx: Box<dyn Conn>, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Runs `stmts` in order and fails on the first error.
pub async fn execute_all(c: &mut dyn Conn, stmts: &[Sql]) -> Result<()> {
    for s in stmts {
        c.execute(s).await?;
    }
    Ok(())
}

/// The first row's first value as a count (a query of one count).
pub async fn query_count(c: &mut dyn Conn, sql: &Sql) -> Result<u64> {
    let rows = c.query(sql).await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::engine("a count query returned no row"))?;
    count(row, 0)
}

/// Decoding of result cells.
fn cell(row: &[Value], i: usize) -> Result<&Value> {
    row.get(i)
        .ok_or_else(|| Error::engine(format!("result has no column {i}")))
}

/// Column `i` as text (NULL as `None`); other values are rendered.
pub fn text(row: &[Value], i: usize) -> Result<Option<String>> {
    Ok(match cell(row, i)? {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        v => Some(v.to_string()),
    })
}

/// Column `i` as text, NULL refused.
pub fn string(row: &[Value], i: usize) -> Result<String> {
    text(row, i)?.ok_or_else(|| Error::engine(format!("unexpected NULL in column {i}")))
}

/// Column `i` as an integer (NULL as `None`); exact decimals must be whole.
pub fn int(row: &[Value], i: usize) -> Result<Option<i64>> {
    match cell(row, i)? {
        Value::Null => Ok(None),
        Value::Int(n) => Ok(Some(*n)),
        Value::Text(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::engine(format!("expected an integer in column {i}, got {s}"))),
        v => Err(Error::engine(format!(
            "expected an integer in column {i}, got {v:?}"
        ))),
    }
}

/// Column `i` as a non-negative count (NULL as 0).
pub fn count(row: &[Value], i: usize) -> Result<u64> {
    Ok(u64::try_from(int(row, i)?.unwrap_or(0)).unwrap_or(0))
}

/// Column `i` as an instant (NULL as `None`); a timestamp without zone is
/// read as UTC.
pub fn timestamp(row: &[Value], i: usize) -> Result<Option<Timestamp>> {
    match cell(row, i)? {
        Value::Null => Ok(None),
        Value::Timestamp(t) => Ok(Some(*t)),
        Value::DateTime(d) => TimeZone::UTC
            .to_timestamp(*d)
            .map(Some)
            .map_err(|e| Error::engine(format!("timestamp out of range: {e}"))),
        v => Err(Error::engine(format!(
            "expected a timestamp in column {i}, got {v:?}"
        ))),
    }
}

/// A value read for a column of logical type `ty`: exact decimals become
/// floats for float columns, and timestamps without zone become instants
/// (UTC) for zone-aware columns, where the engine's result type could not
/// tell.
pub fn coerce(v: Value, ty: ColumnType) -> Value {
    match (v, ty) {
        (Value::Text(s), ColumnType::Float) => Value::Float(s.parse().unwrap_or(f64::NAN)),
        (Value::DateTime(d), ColumnType::Timestamp) => match TimeZone::UTC.to_timestamp(d) {
            Ok(t) => Value::Timestamp(t),
            Err(_) => Value::DateTime(d),
        },
        (v, _) => v,
    }
}
