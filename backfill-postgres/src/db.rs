//! The PostgreSQL executor: pooled connections, transactions with
//! session limits, parameter binding, value decoding and error mapping.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backfill_core::engine::{Conn, Executor, Failure, Limits, LivenessModel, NativePartitions};
use backfill_core::jiff::civil::{Date, DateTime};
use backfill_core::jiff::tz::TimeZone;
use backfill_core::jiff::Timestamp;
use backfill_core::sql::{stmt, Dialect, PostgresDialect, Sql};
use backfill_core::{ColumnType, Error, Result, Value};
use bytes::BytesMut;
use deadpool_postgres::{Object, Pool, PoolError};
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use crate::partition::PgPartitions;

/// The dialect every statement is rendered in.
pub(crate) static DIALECT: PostgresDialect = PostgresDialect;

/// The [`Executor`] on a `deadpool-postgres` pool: each operation takes a
/// pooled connection; a transaction sets its limits with `SET LOCAL`.
/// Several processes, each with its own executor, share one database:
/// the dialect's row locks, `SKIP LOCKED` claims and advisory locks keep
/// them apart.
#[derive(Clone)]
pub struct PgExecutor {
    pool: Pool,
    id: String,
    /// The session holding this instance's lock while the executor lives.
    instance: Arc<OnceCell<deadpool_postgres::ClientWrapper>>,
}

impl fmt::Debug for PgExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgExecutor")
            .field("id", &self.id)
            .field("pool", &self.pool.status())
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl PgExecutor {
    /// An executor on `pool`.
    pub fn new(pool: Pool) -> PgExecutor {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        PgExecutor {
            pool,
            // The start time tells apart a later process reusing the pid.
            id: format!("postgres:{}:{n}:{started}", std::process::id()),
            instance: Arc::default(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Executor for PgExecutor {
    fn dialect(&self) -> &'static dyn Dialect {
        &DIALECT
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn id(&self) -> &str {
        &self.id
    }

    async fn connect(&self) -> Result<Box<dyn Conn>> {
        Ok(Box::new(PgConn {
            client: Some(self.client().await?),
            open: false,
        }))
    }

    async fn begin(&self, limits: Option<Limits>) -> Result<Box<dyn Conn>> {
        let mut c = PgConn {
            client: Some(self.client().await?),
            open: false,
        };
        tracing::trace!("begin");
        c.script(stmt::BEGIN).await?;
        c.open = true;
        if let Some(l) = limits {
            // Both limits in one statement: one round trip a transaction.
            let ms = |d: Duration| format!("{}", d.as_millis().max(1));
            let (statement, lock) = (ms(l.statement_timeout), ms(l.lock_timeout));
            c.query(&stmt::set_local(
                &DIALECT,
                &[
                    ("statement_timeout", statement.as_str()),
                    ("lock_timeout", lock.as_str()),
                ],
            ))
            .await?;
        }
        Ok(Box::new(c))
    }

    fn liveness(&self) -> LivenessModel {
        LivenessModel::SessionLock
    }

    async fn instance(&self) -> Result<String> {
        self.instance
            .get_or_try_init(|| async {
                // A connection of its own, outside the pool, holds the
                // instance's lock for as long as this executor lives; when
                // the process dies the server frees it.
                let client = Object::take(self.client().await?);
                let lock = DIALECT
                    .instance_lock(&self.id)
                    .ok_or_else(|| Error::engine("no instance lock in the dialect"))?;
                query(&*client, &lock).await?;
                Ok::<_, Error>(client)
            })
            .await?;
        Ok(self.id.clone())
    }

    fn classify(&self, e: &Error) -> Failure {
        match e.code() {
            Some(c) if c == SqlState::T_R_SERIALIZATION_FAILURE.code() => Failure::Conflict,
            Some(c) if c == SqlState::T_R_DEADLOCK_DETECTED.code() => Failure::Conflict,
            Some(c) if c == SqlState::LOCK_NOT_AVAILABLE.code() => Failure::LockTimeout,
            // (A view reading itself is reported as an invalid definition.)
            Some(c) if c == SqlState::INVALID_OBJECT_DEFINITION.code() => Failure::ViewCycle,
            Some(c) if c.starts_with("42") => Failure::ViewShapeChanged,
            _ => Failure::Other,
        }
    }

    fn partitions(&self) -> Option<&dyn NativePartitions> {
        Some(&PgPartitions)
    }
}

/// A pooled connection for one operation.
struct PgConn {
    client: Option<Object>,
    open: bool,
}

impl PgConn {
    fn client(&self) -> Result<&Object> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::engine("the PostgreSQL connection is closed"))
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // A transaction dropped open (an operation cancelled midway) must
        // not return to the pool: the connection is closed instead, and
        // the server rolls the transaction back.
        if self.open {
            if let Some(obj) = self.client.take() {
                drop(Object::take(obj));
            }
        }
    }
}

/// Whether a statement is worth a named statement of its connection: a
/// change of rows (`INSERT`, `UPDATE`, `DELETE` without `RETURNING`),
/// which a run repeats batch after batch with other values and which
/// returns no rows whose type could change. DDL and queries are prepared
/// unnamed, each time.
fn repeats(sql: &Sql) -> bool {
    let head = sql.text.trim_start();
    let dml = ["INSERT ", "UPDATE ", "DELETE "]
        .iter()
        .any(|k| head.len() >= k.len() && head[..k.len()].eq_ignore_ascii_case(k));
    dml && !sql.text.contains("RETURNING")
}

impl PgConn {
    /// `sql` as a named statement of this connection, prepared the first
    /// time the connection runs its text: each later run binds and
    /// executes it in one round trip instead of two. Only statements that
    /// return no rows are cached ([`repeats`]), so a cached plan never
    /// meets a changed result type.
    async fn prepared(&self, sql: &Sql) -> Result<tokio_postgres::Statement> {
        let c = self.client()?;
        c.prepare_cached(&sql.text).await.map_err(pg_error)
    }
}

#[async_trait]
impl Conn for PgConn {
    async fn execute(&mut self, sql: &Sql) -> Result<u64> {
        tracing::trace!(sql = %sql.display(), "execute");
        let ps = params(sql);
        if !repeats(sql) {
            let r = self.client()?.execute(sql.text.as_str(), &refs(&ps)).await;
            return r.map_err(pg_error);
        }
        let st = self.prepared(sql).await?;
        let r = self.client()?.execute(&st, &refs(&ps)).await;
        r.map_err(pg_error)
    }

    async fn query(&mut self, sql: &Sql) -> Result<Vec<Vec<Value>>> {
        // Not cached: a query's result type follows the relations it
        // reads, which a run may see altered (a view moved, a source
        // retyped), and a cached plan would then refuse to run.
        rows_values(&query(&***self.client()?, sql).await?)
    }

    async fn columns(&mut self, sql: &Sql) -> Result<Vec<(String, ColumnType)>> {
        query_columns(&***self.client()?, sql).await
    }

    async fn script(&mut self, text: &str) -> Result<()> {
        self.client()?.batch_execute(text).await.map_err(pg_error)
    }

    async fn commit(&mut self) -> Result<()> {
        tracing::trace!("commit");
        let r = self.script(stmt::COMMIT).await;
        if r.is_ok() {
            self.open = false;
        }
        r
    }

    async fn rollback(&mut self) -> Result<()> {
        tracing::trace!("rollback");
        let r = self.script(stmt::ROLLBACK).await;
        if r.is_ok() {
            self.open = false;
        }
        r
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// SQLSTATEs worth retrying: serialization failure, deadlock, lock not
/// available (lock_timeout), query canceled (statement_timeout), too many
/// connections, and the server shutting down.
fn transient_state(code: &SqlState) -> bool {
    let c = code.code();
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || c.starts_with("08")
}

/// Maps a driver error: an undefined table is [`Error::UnknownTable`];
/// the SQLSTATEs of [`transient_state`] and lost connections are
/// transient; anything else is permanent. The message carries the
/// SQLSTATE.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNDEFINED_TABLE {
            if let Some(name) = quoted(db.message()) {
                return Error::UnknownTable(name);
            }
        }
        let mut message = format!("{} {}: {}", db.severity(), code.code(), db.message());
        if let Some(d) = db.detail() {
            message.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            message.push_str(&format!(" (hint: {h})"));
        }
        let transient = transient_state(code);
        let code = Some(code.code().to_string());
        return Error::from_driver(message, transient, code, e);
    }
    let message = match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    };
    // No server error: the connection broke, closed or timed out, or a
    // value could not be converted. Only the last is permanent.
    let conversion =
        message.contains("error serializing") || message.contains("error deserializing");
    Error::from_driver(message, !conversion, None, e)
}

/// The first double-quoted name in a message (`relation "x" does not
/// exist`).
fn quoted(message: &str) -> Option<String> {
    let rest = message.split_once('"')?.1;
    Some(rest.split_once('"')?.0.to_string())
}

/// Maps a pool error: a timeout or a failed connection is transient.
pub(crate) fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Closed => Error::engine("the PostgreSQL connection pool is closed"),
        PoolError::NoRuntimeSpecified => Error::engine(format!("connection pool: {e}")),
        other => Error::transient(format!("connection pool: {other}")),
    }
}

// ---------------------------------------------------------------------------
// Parameters: every value is sent in text format and parsed by the server
// as the type it inferred for the placeholder (the dialect's placeholders
// cast temporal values), so an `Int` binds to int2, int4, int8 or numeric
// alike.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Param(Option<String>);

impl ToSql for Param {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value as PostgreSQL text input.
fn text_of(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        Value::Float(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Date(d) => d.to_string(),
        Value::DateTime(d) => d.to_string(),
        Value::Timestamp(t) => t.to_string(),
    })
}

fn params(sql: &Sql) -> Vec<Param> {
    sql.params.iter().map(|v| Param(text_of(v))).collect()
}

fn refs(ps: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Runs a query; returns its rows.
pub(crate) async fn query<C: GenericClient + Sync>(c: &C, sql: &Sql) -> Result<Vec<Row>> {
    tracing::trace!(sql = %sql.display(), "query");
    let ps = params(sql);
    c.query(sql.text.as_str(), &refs(&ps))
        .await
        .map_err(pg_error)
}

/// Rows as values, each decoded by its result type.
fn rows_values(rows: &[Row]) -> Result<Vec<Vec<Value>>> {
    rows.iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| get_value(r, i, ColumnType::Other))
                .collect()
        })
        .collect()
}

/// The result columns of a query, `(name, type)`, without running it.
pub(crate) async fn query_columns<C: GenericClient + Sync>(
    c: &C,
    sql: &Sql,
) -> Result<Vec<(String, ColumnType)>> {
    tracing::trace!(sql = %sql.display(), "describe query");
    let st = c.prepare(sql.text.as_str()).await.map_err(pg_error)?;
    Ok(st
        .columns()
        .iter()
        .map(|col| (col.name().to_string(), column_type_of(col.type_())))
        .collect())
}

/// The logical type of a PostgreSQL type.
pub(crate) fn column_type_of(ty: &Type) -> ColumnType {
    match *ty {
        Type::BOOL => ColumnType::Bool,
        Type::INT2 | Type::INT4 | Type::INT8 => ColumnType::Int,
        Type::FLOAT4 | Type::FLOAT8 => ColumnType::Float,
        Type::NUMERIC => ColumnType::Decimal,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => ColumnType::Text,
        Type::DATE => ColumnType::Date,
        Type::TIMESTAMP => ColumnType::DateTime,
        Type::TIMESTAMPTZ => ColumnType::Timestamp,
        _ => ColumnType::Other,
    }
}

// ---------------------------------------------------------------------------
// Decoding: results arrive in binary format; `Raw` takes any column and
// decodes the types backfill knows.
// ---------------------------------------------------------------------------

struct Raw<'a> {
    ty: Type,
    bytes: Option<&'a [u8]>,
}

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: Some(raw),
        })
    }

    fn from_sql_null(ty: &Type) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn raw(row: &Row, i: usize) -> Result<Raw<'_>> {
    row.try_get::<_, Raw<'_>>(i)
        .map_err(|e| Error::engine(format!("column {i}: {e}")))
}

fn bad(ty: &Type, bytes: &[u8]) -> Error {
    Error::engine(format!("cannot decode {} bytes as {ty}", bytes.len()))
}

fn be<const N: usize>(ty: &Type, b: &[u8]) -> Result<[u8; N]> {
    b.try_into().map_err(|_| bad(ty, b))
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn timestamp_of(micros: i64) -> Option<Timestamp> {
    if micros == i64::MAX || micros == i64::MIN {
        return None; // infinity
    }
    Timestamp::from_microsecond(micros.checked_add(PG_EPOCH_MICROS)?).ok()
}

fn date_of(days: i32) -> Option<Date> {
    if days == i32::MAX || days == i32::MIN {
        return None; // infinity
    }
    let secs = (i64::from(days) + 10_957) * 86_400;
    Some(
        Timestamp::from_second(secs)
            .ok()?
            .to_zoned_datetime(TimeZone::UTC)
            .date(),
    )
}

fn civil(ts: Timestamp) -> DateTime {
    ts.to_zoned_datetime(TimeZone::UTC).datetime()
}

/// A binary `numeric` as decimal text, with its display scale.
fn numeric_text(ty: &Type, b: &[u8]) -> Result<String> {
    if b.len() < 8 {
        return Err(bad(ty, b));
    }
    let word = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let ndigits = usize::from(word(0));
    let weight = i16::from_be_bytes([b[2], b[3]]);
    let sign = word(4);
    let dscale = usize::from(word(6));
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    if b.len() < 8 + 2 * ndigits {
        return Err(bad(ty, b));
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect();
    let digit = |pos: i32| -> u16 {
        // Base-10000 digit at weight `pos`.
        let idx = i32::from(weight) - pos;
        usize::try_from(idx)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut int = String::new();
    let top = i32::from(weight).max(0);
    for pos in (0..=top).rev() {
        let d = digit(pos);
        if int.is_empty() {
            if d != 0 || pos == 0 {
                int.push_str(&d.to_string());
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    let mut frac = String::new();
    let mut pos = -1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(pos)));
        pos -= 1;
    }
    frac.truncate(dscale);
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    out.push_str(&int);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// Decodes column `i` as a [`Value`]; `ty` is the column's logical type
/// (a `numeric` read for a `Float` column becomes a float, otherwise
/// text, as in the DuckDB adapter).
pub(crate) fn get_value(row: &Row, i: usize, ty: ColumnType) -> Result<Value> {
    let r = raw(row, i)?;
    let Some(b) = r.bytes else {
        return Ok(Value::Null);
    };
    let t = &r.ty;
    Ok(match *t {
        Type::BOOL => Value::Bool(b.first().is_some_and(|x| *x != 0)),
        Type::INT2 => Value::Int(i16::from_be_bytes(be(t, b)?).into()),
        Type::INT4 => Value::Int(i32::from_be_bytes(be(t, b)?).into()),
        Type::INT8 => Value::Int(i64::from_be_bytes(be(t, b)?)),
        Type::OID => Value::Int(u32::from_be_bytes(be(t, b)?).into()),
        Type::FLOAT4 => Value::Float(f32::from_be_bytes(be(t, b)?).into()),
        Type::FLOAT8 => Value::Float(f64::from_be_bytes(be(t, b)?)),
        Type::NUMERIC => {
            let s = numeric_text(t, b)?;
            if ty == ColumnType::Float {
                Value::Float(s.parse().unwrap_or(f64::NAN))
            } else {
                Value::Text(s)
            }
        }
        Type::DATE => match date_of(i32::from_be_bytes(be(t, b)?)) {
            Some(d) => Value::Date(d),
            None => Value::Text(infinity(i64::from(i32::from_be_bytes(be(t, b)?)))),
        },
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let us = i64::from_be_bytes(be(t, b)?);
            match timestamp_of(us) {
                Some(ts) if *t == Type::TIMESTAMPTZ => Value::Timestamp(ts),
                Some(ts) => Value::DateTime(civil(ts)),
                None => Value::Text(infinity(us)),
            }
        }
        Type::JSONB if !b.is_empty() => Value::Text(String::from_utf8_lossy(&b[1..]).into_owned()),
        _ => Value::Text(String::from_utf8_lossy(b).into_owned()),
    })
}

fn infinity(v: i64) -> String {
    if v > 0 { "infinity" } else { "-infinity" }.to_string()
}

/// Column `i` as an integer (NULL as `None`); a `numeric` must be whole.
pub(crate) fn get_i64(row: &Row, i: usize) -> Result<Option<i64>> {
    match get_value(row, i, ColumnType::Int)? {
        Value::Null => Ok(None),
        Value::Int(n) => Ok(Some(n)),
        Value::Text(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::engine(format!("expected an integer in column {i}, got {s}"))),
        v => Err(Error::engine(format!(
            "expected an integer in column {i}, got {v:?}"
        ))),
    }
}

/// Column `i` as a non-negative count.
pub(crate) fn get_u64(row: &Row, i: usize) -> Result<u64> {
    Ok(u64::try_from(get_i64(row, i)?.unwrap_or(0)).unwrap_or(0))
}

/// Column `i` as a float (NULL as `None`).
pub(crate) fn get_f64(row: &Row, i: usize) -> Result<Option<f64>> {
    match get_value(row, i, ColumnType::Float)? {
        Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::engine(format!("expected a number in column {i}, got {v:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_with_their_scale() {
        let t = Type::NUMERIC;
        assert_eq!(
            numeric_text(&t, &numeric(0, 0, 2, &[2, 2500])).unwrap(),
            "2.25"
        );
        assert_eq!(
            numeric_text(&t, &numeric(1, 0x4000, 0, &[12, 3456])).unwrap(),
            "-123456"
        );
        assert_eq!(
            numeric_text(&t, &numeric(-1, 0, 4, &[5])).unwrap(),
            "0.0005"
        );
        assert_eq!(numeric_text(&t, &numeric(0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(
            numeric_text(&t, &numeric(2, 0, 1, &[1])).unwrap(),
            "100000000.0"
        );
        assert_eq!(
            numeric_text(&t, &numeric(0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
    }

    #[test]
    fn temporal_values_decode_from_the_postgres_epoch() {
        assert_eq!(date_of(0).unwrap().to_string(), "2000-01-01");
        assert_eq!(date_of(-1).unwrap().to_string(), "1999-12-31");
        assert!(date_of(i32::MAX).is_none());
        assert_eq!(
            timestamp_of(1_000_000).unwrap().to_string(),
            "2000-01-01T00:00:01Z"
        );
    }

    #[test]
    fn values_become_postgres_text_input() {
        assert_eq!(text_of(&Value::Null), None);
        assert_eq!(text_of(&Value::Float(f64::NAN)).unwrap(), "NaN");
        assert_eq!(text_of(&Value::Float(-f64::INFINITY)).unwrap(), "-Infinity");
        assert_eq!(text_of(&Value::Float(0.1)).unwrap(), "0.1");
        assert_eq!(text_of(&Value::Bool(true)).unwrap(), "true");
    }

    #[test]
    fn undefined_relations_name_the_table() {
        assert_eq!(
            quoted("relation \"s.nope\" does not exist").unwrap(),
            "s.nope"
        );
    }
}
