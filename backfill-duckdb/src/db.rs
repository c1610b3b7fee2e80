//! The DuckDB executor: one connection shared by a warehouse and its
//! ledgers, statements run on tokio's blocking pool, parameter binding,
//! value decoding and error mapping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use backfill_core::engine::{Conn, Executor, Failure, Limits, LivenessModel};
use backfill_core::jiff::civil::{Date, DateTime};
use backfill_core::jiff::tz::TimeZone;
use backfill_core::jiff::Timestamp;
use backfill_core::sql::{stmt, Dialect, DuckDbDialect, Sql};
use backfill_core::{ColumnType, Error, Result, TableRef, Value};
use duckdb::types::{TimeUnit, Value as DValue, ValueRef};
use duckdb::{appender_params_from_iter, params_from_iter, Connection, Row};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The dialect every statement is rendered in.
pub(crate) static DIALECT: DuckDbDialect = DuckDbDialect;

/// The connection and whether a transaction is open on it.
struct Session {
    conn: Connection,
    open: bool,
}

impl Session {
    /// Rolls back a transaction an interrupted operation left open, so
    /// nothing is ever built on it.
    fn reset(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch(stmt::ROLLBACK);
            self.open = false;
        }
    }
}

/// The [`Executor`] on one DuckDB connection. DuckDB lets one connection
/// of a process write a database at a time, so every operation holds the
/// connection for its whole duration: a transaction is never interleaved
/// with another operation, and the dialect's row and advisory locks are
/// not needed. Statements run on tokio's blocking pool, so the async
/// runtime never blocks on DuckDB.
#[derive(Clone)]
pub struct DuckDb {
    session: Arc<Mutex<Session>>,
    id: String,
}

impl fmt::Debug for DuckDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuckDb").field("id", &self.id).finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process instance's id: engine, process id, a counter and the start
/// time, so a later process that reuses the pid is a different instance.
fn instance_id(engine: &str, n: u64) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{engine}:{}:{n}:{started}", std::process::id())
}

impl DuckDb {
    /// An executor on an open connection.
    pub fn new(conn: Connection) -> DuckDb {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        DuckDb {
            session: Arc::new(Mutex::new(Session { conn, open: false })),
            id: instance_id("duckdb", n),
        }
    }

    async fn lock(&self) -> OwnedMutexGuard<Session> {
        let mut guard = self.session.clone().lock_owned().await;
        guard.reset();
        guard
    }

    /// Runs `f` on the connection in a blocking task, holding it for the
    /// whole call.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let guard = self.lock().await;
        tokio::task::spawn_blocking(move || f(&guard.conn))
            .await
            .map_err(|e| Error::engine(format!("blocking DuckDB task failed: {e}")))?
    }
}

#[async_trait]
impl Executor for DuckDb {
    fn dialect(&self) -> &'static dyn Dialect {
        &DIALECT
    }

    fn engine(&self) -> &'static str {
        "duckdb"
    }

    fn id(&self) -> &str {
        &self.id
    }

    async fn connect(&self) -> Result<Box<dyn Conn>> {
        Ok(Box::new(DuckConn {
            guard: Some(self.lock().await),
        }))
    }

    async fn begin(&self, _limits: Option<Limits>) -> Result<Box<dyn Conn>> {
        let mut conn = DuckConn {
            guard: Some(self.lock().await),
        };
        conn.on(|s| {
            tracing::trace!("begin");
            s.conn.execute_batch(stmt::BEGIN).map_err(engine_error)?;
            s.open = true;
            Ok(())
        })
        .await?;
        Ok(Box::new(conn))
    }

    fn liveness(&self) -> LivenessModel {
        // One process writes a database file at a time, and this one holds
        // it: any other instance's lease is a dead process's.
        LivenessModel::SingleWriter
    }

    fn classify(&self, e: &Error) -> Failure {
        match e {
            // DuckDB names a view that reads itself only in its message.
            Error::Engine { message, .. } if message.contains("recursi") => Failure::ViewCycle,
            Error::Engine { message, .. } if message.to_ascii_lowercase().contains("conflict") => {
                Failure::Conflict
            }
            _ => Failure::Other,
        }
    }
}

/// The connection, held for the life of one operation.
struct DuckConn {
    /// `None` only while a statement runs on the blocking pool (or after
    /// that task panicked, which released the connection).
    guard: Option<OwnedMutexGuard<Session>>,
}

impl DuckConn {
    async fn on<T, F>(&mut self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session) -> Result<T> + Send + 'static,
    {
        let mut guard = self
            .guard
            .take()
            .ok_or_else(|| Error::engine("the DuckDB connection was lost by an earlier failure"))?;
        let (guard, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut guard);
            (guard, out)
        })
        .await
        .map_err(|e| Error::engine(format!("blocking DuckDB task failed: {e}")))?;
        self.guard = Some(guard);
        out
    }
}

impl Drop for DuckConn {
    fn drop(&mut self) {
        // A transaction dropped open (an operation cancelled midway) is
        // rolled back before the connection is released.
        if let Some(g) = self.guard.as_mut() {
            g.reset();
        }
    }
}

#[async_trait]
impl Conn for DuckConn {
    async fn execute(&mut self, sql: &Sql) -> Result<u64> {
        let sql = sql.clone();
        self.on(move |s| exec(&s.conn, &sql)).await
    }

    async fn query(&mut self, sql: &Sql) -> Result<Vec<Vec<Value>>> {
        let sql = sql.clone();
        self.on(move |s| query_values(&s.conn, &sql)).await
    }

    async fn columns(&mut self, sql: &Sql) -> Result<Vec<(String, ColumnType)>> {
        let sql = sql.clone();
        self.on(move |s| query_columns(&s.conn, &sql)).await
    }

    async fn script(&mut self, text: &str) -> Result<()> {
        let text = text.to_string();
        self.on(move |s| s.conn.execute_batch(&text).map_err(engine_error))
            .await
    }

    async fn append(
        &mut self,
        table: &TableRef,
        columns: &[&str],
        rows: &[Vec<Value>],
    ) -> Result<bool> {
        // The appender casts text into any column, so values the dialect
        // would cast by their placeholder (dates and times) go by
        // statements instead.
        let plain = rows.iter().flatten().all(|v| {
            matches!(
                v,
                Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Text(_)
            )
        });
        if !plain {
            return Ok(false);
        }
        let schema = table
            .schema
            .as_ref()
            .map_or("main", |s| s.as_str())
            .to_string();
        let name = table.name.as_str().to_string();
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let rows = rows.to_vec();
        self.on(move |s| {
            tracing::trace!(table = %name, rows = rows.len(), "append");
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            let mut app = s
                .conn
                .appender_with_columns_to_db(&name, &schema, &columns)
                .map_err(engine_error)?;
            for row in &rows {
                app.append_row(appender_params_from_iter(row.iter().map(bind)))
                    .map_err(engine_error)?;
            }
            app.flush().map_err(engine_error)?;
            Ok(true)
        })
        .await
    }

    async fn commit(&mut self) -> Result<()> {
        self.on(|s| {
            tracing::trace!("commit");
            let r = s.conn.execute_batch(stmt::COMMIT).map_err(engine_error);
            if r.is_err() {
                // A failed commit leaves nothing behind either.
                let _ = s.conn.execute_batch(stmt::ROLLBACK);
            }
            s.open = false;
            r
        })
        .await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.on(|s| {
            tracing::trace!("rollback");
            s.open = false;
            // (DuckDB aborts a transaction on a failed statement; either
            // way nothing of it may stay.)
            s.conn.execute_batch(stmt::ROLLBACK).map_err(engine_error)
        })
        .await
    }
}

/// Maps a DuckDB error: a missing table is [`Error::UnknownTable`], a
/// transaction conflict is transient, anything else permanent.
pub(crate) fn engine_error(e: duckdb::Error) -> Error {
    let message = e.to_string();
    if let Some(name) = missing_table(&message) {
        return Error::UnknownTable(name);
    }
    let code = error_type(&message);
    // A write-write conflict between transactions aborts the later one.
    let transient = code.as_deref() == Some("TransactionContext")
        || message.to_ascii_lowercase().contains("conflict");
    Error::from_driver(message, transient, code, e)
}

/// DuckDB's error type, which its messages start with (`Catalog Error:
/// …`, `TransactionContext Error: …`, `Binder Error: …`).
fn error_type(message: &str) -> Option<String> {
    let (kind, _) = message.split_once(" Error: ")?;
    (!kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric())).then(|| kind.to_string())
}

fn missing_table(message: &str) -> Option<String> {
    let rest = message.split("Table with name ").nth(1)?;
    let (name, tail) = rest.split_once(' ')?;
    tail.starts_with("does not exist").then(|| name.to_string())
}

fn bind(v: &Value) -> DValue {
    match v {
        Value::Null => DValue::Null,
        Value::Bool(b) => DValue::Boolean(*b),
        Value::Int(i) => DValue::BigInt(*i),
        Value::Float(f) => DValue::Double(*f),
        Value::Text(s) => DValue::Text(s.clone()),
        // The dialect's placeholders cast these from ISO text.
        Value::Date(d) => DValue::Text(d.to_string()),
        Value::DateTime(d) => DValue::Text(d.to_string()),
        Value::Timestamp(t) => DValue::Text(t.to_string()),
    }
}

fn params(sql: &Sql) -> impl duckdb::Params + '_ {
    params_from_iter(sql.params.iter().map(bind))
}

/// Executes a statement; returns the rows it changed.
pub(crate) fn exec(conn: &Connection, sql: &Sql) -> Result<u64> {
    tracing::trace!(sql = %sql.display(), "execute");
    with_statement(conn, sql, |st| {
        let n = st.execute(params(sql)).map_err(engine_error)?;
        Ok(n as u64)
    })
}

/// How many parsed and planned statements a connection keeps.
pub(crate) const STATEMENT_CACHE: usize = 64;

/// Runs `f` on the prepared statement. Statements with parameters (the
/// ledger's, and every write bounded by a batch) repeat with new values,
/// so they are kept prepared: parsing and planning them again would cost
/// more than running them. DuckDB prepares a kept statement again by
/// itself when a table it reads has changed.
fn with_statement<T>(
    conn: &Connection,
    sql: &Sql,
    f: impl FnOnce(&mut duckdb::Statement<'_>) -> Result<T>,
) -> Result<T> {
    if sql.params.is_empty() {
        f(&mut conn.prepare(&sql.text).map_err(engine_error)?)
    } else {
        let mut st = conn.prepare_cached(&sql.text).map_err(engine_error)?;
        f(&mut st)
    }
}

/// Runs a statement and returns its rows as values, each decoded by its
/// result type (exact decimals as text).
pub(crate) fn query_values(conn: &Connection, sql: &Sql) -> Result<Vec<Vec<Value>>> {
    tracing::trace!(sql = %sql.display(), "query");
    with_statement(conn, sql, |st| {
        let mut rows = st.query(params(sql)).map_err(engine_error)?;
        let width = rows.as_ref().map_or(0, |s| s.column_count());
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(engine_error)? {
            out.push(
                (0..width)
                    .map(|i| get_value(r, i, ColumnType::Other))
                    .collect::<Result<_>>()?,
            );
        }
        Ok(out)
    })
}

fn get_ref<'a>(row: &'a Row<'_>, i: usize) -> Result<ValueRef<'a>> {
    row.get_ref(i).map_err(engine_error)
}

fn int_of(v: ValueRef<'_>) -> Option<i128> {
    Some(match v {
        ValueRef::TinyInt(n) => n.into(),
        ValueRef::SmallInt(n) => n.into(),
        ValueRef::Int(n) => n.into(),
        ValueRef::BigInt(n) => n.into(),
        ValueRef::HugeInt(n) => n,
        ValueRef::UTinyInt(n) => n.into(),
        ValueRef::USmallInt(n) => n.into(),
        ValueRef::UInt(n) => n.into(),
        ValueRef::UBigInt(n) => n.into(),
        ValueRef::UHugeInt(n) => i128::try_from(n).ok()?,
        _ => return None,
    })
}

fn nanos(unit: TimeUnit, v: i64) -> i128 {
    let v = i128::from(v);
    match unit {
        TimeUnit::Second => v * 1_000_000_000,
        TimeUnit::Millisecond => v * 1_000_000,
        TimeUnit::Microsecond => v * 1_000,
        TimeUnit::Nanosecond => v,
    }
}

fn render(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Decimal(d) => d.to_string(),
        ValueRef::Double(f) => f.to_string(),
        ValueRef::Float(f) => f.to_string(),
        ValueRef::Boolean(b) => b.to_string(),
        v => match int_of(v) {
            Some(n) => n.to_string(),
            None => format!("{v:?}"),
        },
    }
}

/// Decodes column `i` as a [`Value`], reading temporal values by the
/// column's logical type (a `TIMESTAMP` and a `TIMESTAMPTZ` arrive alike).
pub(crate) fn get_value(row: &Row<'_>, i: usize, ty: ColumnType) -> Result<Value> {
    let v = get_ref(row, i)?;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Boolean(b) => Value::Bool(b),
        ValueRef::Float(f) => Value::Float(f.into()),
        ValueRef::Double(f) => Value::Float(f),
        ValueRef::Decimal(d) if ty == ColumnType::Float => {
            Value::Float(d.to_string().parse().unwrap_or(f64::NAN))
        }
        ValueRef::Decimal(d) => Value::Text(d.to_string()),
        ValueRef::Text(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Date32(days) => match date_of(days) {
            Some(d) => Value::Date(d),
            None => Value::Text(format!("date {days}")),
        },
        ValueRef::Timestamp(unit, t) => match Timestamp::from_nanosecond(nanos(unit, t)) {
            Ok(ts) if ty == ColumnType::Timestamp => Value::Timestamp(ts),
            Ok(ts) => Value::DateTime(civil(ts)),
            Err(_) => Value::Text(format!("timestamp {t}")),
        },
        v => match int_of(v) {
            Some(n) => match i64::try_from(n) {
                Ok(n) => Value::Int(n),
                Err(_) => Value::Text(n.to_string()),
            },
            None => Value::Text(render(v)),
        },
    })
}

fn date_of(days: i32) -> Option<Date> {
    let ts = Timestamp::from_second(i64::from(days) * 86_400).ok()?;
    Some(ts.to_zoned_datetime(TimeZone::UTC).date())
}

fn civil(ts: Timestamp) -> DateTime {
    ts.to_zoned_datetime(TimeZone::UTC).datetime()
}

/// Runs a query for its result columns only: `(name, type)` of each, the
/// type mapped from the engine's result type.
pub(crate) fn query_columns(conn: &Connection, sql: &Sql) -> Result<Vec<(String, ColumnType)>> {
    use duckdb::arrow::datatypes::DataType as A;
    tracing::trace!(sql = %sql.display(), "describe query");
    let mut st = conn.prepare(&sql.text).map_err(engine_error)?;
    let rows = st.query(params(sql)).map_err(engine_error)?;
    let Some(st) = rows.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for i in 0..st.column_count() {
        let name = st.column_name(i).map_err(engine_error)?.clone();
        let ty = match st.column_type(i) {
            A::Boolean => ColumnType::Bool,
            A::Int8
            | A::Int16
            | A::Int32
            | A::Int64
            | A::UInt8
            | A::UInt16
            | A::UInt32
            | A::UInt64 => ColumnType::Int,
            A::Float16 | A::Float32 | A::Float64 => ColumnType::Float,
            A::Decimal128(_, 0) | A::Decimal256(_, 0) => ColumnType::Int,
            A::Decimal128(..) | A::Decimal256(..) => ColumnType::Decimal,
            A::Utf8 | A::LargeUtf8 | A::Utf8View => ColumnType::Text,
            A::Date32 | A::Date64 => ColumnType::Date,
            A::Timestamp(_, None) => ColumnType::DateTime,
            A::Timestamp(_, Some(_)) => ColumnType::Timestamp,
            _ => ColumnType::Other,
        };
        out.push((name, ty));
    }
    Ok(out)
}
