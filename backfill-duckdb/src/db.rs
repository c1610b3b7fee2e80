//! The shared connection: blocking calls off the async runtime, parameter
//! binding, value decoding, error mapping and transactions.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use backfill_core::jiff::civil::{Date, DateTime};
use backfill_core::jiff::tz::TimeZone;
use backfill_core::jiff::Timestamp;
use backfill_core::ledger::Clock;
use backfill_core::sql::{stmt, DuckDbDialect, Sql};
use backfill_core::{ColumnType, Error, Ident, Result, Value};
use duckdb::types::{TimeUnit, Value as DValue, ValueRef};
use duckdb::{params_from_iter, Connection, Row};

/// The dialect every statement is rendered in.
pub(crate) static DIALECT: DuckDbDialect = DuckDbDialect;

/// A ledger living in this database: where its tables are and its clock
/// (used to stamp in-transaction ledger marks).
#[derive(Clone)]
pub(crate) struct LedgerHome {
    pub(crate) schema: Ident,
    pub(crate) clock: Arc<dyn Clock>,
}

struct Inner {
    conn: Mutex<Connection>,
    id: String,
    ledgers: Mutex<HashMap<String, LedgerHome>>,
}

/// One DuckDB connection shared by a warehouse and its ledgers. Every
/// operation holds the connection for its whole duration, so a
/// transaction is never interleaved with another operation.
#[derive(Clone)]
pub(crate) struct Db {
    inner: Arc<Inner>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("id", &self.inner.id).finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Db {
    pub(crate) fn new(conn: Connection) -> Db {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Db {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                id: format!("duckdb:{}:{n}", std::process::id()),
                ledgers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Identifies this database handle (prefix of its ledgers' ids).
    pub(crate) fn id(&self) -> &str {
        &self.inner.id
    }

    fn ledgers(&self) -> MutexGuard<'_, HashMap<String, LedgerHome>> {
        self.inner.ledgers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a ledger so in-transaction marks can find it.
    pub(crate) fn register_ledger(&self, ledger_id: &str, home: LedgerHome) {
        self.ledgers().insert(ledger_id.to_string(), home);
    }

    /// The ledger with this id, if it lives in this database.
    pub(crate) fn ledger_home(&self, ledger_id: &str) -> Option<LedgerHome> {
        self.ledgers().get(ledger_id).cloned()
    }

    /// Runs `f` on the connection in a blocking task.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.conn.lock().unwrap_or_else(|poisoned| {
                // A panic mid-operation may have left a transaction open:
                // never build on it.
                let conn = poisoned.into_inner();
                let _ = conn.execute_batch(stmt::ROLLBACK);
                conn
            });
            f(&conn)
        })
        .await
        .map_err(|e| Error::engine(format!("blocking DuckDB task failed: {e}")))?
    }
}

/// Maps a DuckDB error: a missing table is [`Error::UnknownTable`], a
/// transaction conflict is transient, anything else permanent.
pub(crate) fn engine_error(e: duckdb::Error) -> Error {
    let message = e.to_string();
    if let Some(name) = missing_table(&message) {
        return Error::UnknownTable(name);
    }
    let transient = message.to_ascii_lowercase().contains("conflict")
        || message.contains("TransactionContext Error");
    Error::Engine { message, transient }
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

/// Executes statements without parameters, in order.
pub(crate) fn exec_all(conn: &Connection, sqls: &[Sql]) -> Result<()> {
    for s in sqls {
        exec(conn, s)?;
    }
    Ok(())
}

/// Runs a query and maps every row.
pub(crate) fn query<T>(
    conn: &Connection,
    sql: &Sql,
    mut f: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    tracing::trace!(sql = %sql.display(), "query");
    with_statement(conn, sql, |st| {
        let mut rows = st.query(params(sql)).map_err(engine_error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(engine_error)? {
            out.push(f(r)?);
        }
        Ok(out)
    })
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

/// Runs a query returning one row of one count.
pub(crate) fn query_count(conn: &Connection, sql: &Sql) -> Result<u64> {
    let v = query(conn, sql, |r| get_u64(r, 0))?;
    v.into_iter()
        .next()
        .ok_or_else(|| Error::engine("a count query returned no row"))
}

/// Runs `f` in one transaction: committed when it returns `Ok`, rolled
/// back on any error (including a failed commit).
pub(crate) fn in_tx<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    tracing::trace!("begin");
    conn.execute_batch(stmt::BEGIN).map_err(engine_error)?;
    match f(conn) {
        Ok(v) => match conn.execute_batch(stmt::COMMIT) {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = conn.execute_batch(stmt::ROLLBACK);
                Err(engine_error(e))
            }
        },
        Err(e) => {
            // (DuckDB aborts a transaction on a failed statement; either way
            // nothing of it may stay.)
            let _ = conn.execute_batch(stmt::ROLLBACK);
            Err(e)
        }
    }
}

fn get_ref<'a>(row: &'a Row<'_>, i: usize) -> Result<ValueRef<'a>> {
    row.get_ref(i).map_err(engine_error)
}

/// Column `i` as text (NULL as `None`).
pub(crate) fn get_text(row: &Row<'_>, i: usize) -> Result<Option<String>> {
    match get_ref(row, i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        other => Ok(Some(render(other))),
    }
}

/// Column `i` as text, NULL refused.
pub(crate) fn get_string(row: &Row<'_>, i: usize) -> Result<String> {
    get_text(row, i)?.ok_or_else(|| Error::engine(format!("unexpected NULL in column {i}")))
}

/// Column `i` as an integer (NULL as `None`).
pub(crate) fn get_i64(row: &Row<'_>, i: usize) -> Result<Option<i64>> {
    match get_ref(row, i)? {
        ValueRef::Null => Ok(None),
        v => match int_of(v) {
            Some(n) => i64::try_from(n)
                .map(Some)
                .map_err(|_| Error::engine(format!("integer {n} out of range"))),
            None => Err(Error::engine(format!(
                "expected an integer in column {i}, got {v:?}"
            ))),
        },
    }
}

/// Column `i` as a non-negative count.
pub(crate) fn get_u64(row: &Row<'_>, i: usize) -> Result<u64> {
    let n = get_i64(row, i)?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Column `i` as an instant (NULL as `None`).
pub(crate) fn get_timestamp(row: &Row<'_>, i: usize) -> Result<Option<Timestamp>> {
    match get_ref(row, i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Timestamp(unit, v) => Timestamp::from_nanosecond(nanos(unit, v))
            .map(Some)
            .map_err(|e| Error::engine(format!("timestamp out of range: {e}"))),
        other => Err(Error::engine(format!(
            "expected a timestamp in column {i}, got {other:?}"
        ))),
    }
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
