//! [`SqlLedger`]: the [`Ledger`] on SQL tables, written once for every SQL
//! engine over its [`Executor`].
//!
//! The tables live in a schema of the user's choice, beside the data, so
//! a batch's write and its ledger mark commit in one transaction
//! ([`mark_written`]). Where several sessions write at once (PostgreSQL),
//! the dialect's row locks, `SKIP LOCKED` claims and advisory locks keep
//! concurrent workers apart; where the engine has one writer at a time
//! (DuckDB), those hooks render nothing and transactions serialize.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::engine::exec::{self, execute_all, finish, Conn, Executor, Failure, LivenessModel};
use crate::error::{Error, Result};
use crate::ledger::{
    check_held, check_move, check_release, claim_reason, gives_claim_back, lease_expiry,
    release_reason, steering_state, Asset, AssetKind, BatchRecord, BatchState, BatchUpdate, Claim,
    Clock, Lease, Ledger, Liveness, RunId, RunRecord, RunStart, RunStatus, Steering, Transition,
    TxMark,
};
use crate::plan::{Batch, BatchId};
use crate::predicate::Predicate;
use crate::sql::stmt::ledger as sql;
use crate::sql::{Dialect, Sql};
use crate::{Ident, TableRef, Value};

/// Ledger transactions that hit a serialization failure or a deadlock
/// (which the engine rolled back) are run again this often in all.
const LEDGER_ATTEMPTS: u32 = 4;

/// Where a ledger's tables are and the clock it stamps with; a write in
/// the same engine needs both to mark its batch in its own transaction.
#[derive(Clone, Debug)]
pub struct LedgerHome {
    /// The schema holding the ledger tables.
    pub schema: Ident,
    /// The ledger's clock.
    pub clock: Arc<dyn Clock>,
    /// The dialect of the engine the tables live in.
    pub dialect: &'static dyn Dialect,
}

impl LedgerHome {
    fn table(&self, name: &str) -> TableRef {
        sql::table(&self.schema, name)
    }
}

/// A ledger kept in SQL tables (`runs`, `batches`, `transitions`, `locks`,
/// `assets`, `documents`) in a schema of the database it shares with the
/// data.
///
/// Semantics mirror [`crate::MemoryLedger`] exactly: claim order (pending
/// batches in plan order, then running batches whose lease expired),
/// fencing tokens that grow with every claim, the state machine of
/// [`BatchState::can_move_to`], and `rows_affected` accounting. Every
/// operation is one transaction:
///
/// - `claim` reads its candidate with the dialect's `FOR UPDATE SKIP
///   LOCKED` where the engine has concurrent writers, so workers claim
///   distinct batches without waiting on each other;
/// - a batch's write marks it `written` in the same transaction as the
///   data ([`Ledger::tx_mark`], [`mark_written`]); a stale worker whose
///   lease was taken over gets [`Error::LeaseLost`] and its write is rolled
///   back;
/// - target locks, run creation, and the numbering of transitions and
///   assets take the dialect's advisory locks, so concurrent processes
///   cannot race;
/// - serialization failures and deadlocks are retried a few times.
///
/// Lease times come from the ledger's [`Clock`], not the server's, so
/// tests can use a [`crate::ledger::ManualClock`]; workers sharing a run should
/// have reasonably synchronized clocks. Timestamps are stored as
/// `TIMESTAMPTZ`.
pub struct SqlLedger<E: Executor> {
    exec: Arc<E>,
    home: LedgerHome,
    id: String,
    instance: String,
}

impl<E: Executor> Clone for SqlLedger<E> {
    fn clone(&self) -> Self {
        SqlLedger {
            exec: self.exec.clone(),
            home: self.home.clone(),
            id: self.id.clone(),
            instance: self.instance.clone(),
        }
    }
}

impl<E: Executor> fmt::Debug for SqlLedger<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlLedger")
            .field("id", &self.id)
            .field("schema", &self.home.schema)
            .finish()
    }
}

/// Runs `$body` in a ledger transaction on `$conn`, committed when it
/// returns `Ok`; a conflict the engine rolled back runs it again.
macro_rules! ledger_tx {
    ($self:expr, |$conn:ident| $body:expr) => {{
        let mut attempt = 1;
        loop {
            let mut tx = $self.exec.begin(None).await?;
            let r = {
                let $conn: &mut dyn Conn = &mut *tx;
                async { $body }.await
            };
            match finish(tx, r).await {
                Err(e)
                    if attempt < LEDGER_ATTEMPTS
                        && $self.exec.classify(&e) == Failure::Conflict =>
                {
                    tracing::debug!(error = %e, attempt, "ledger transaction retried");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

impl<E: Executor> SqlLedger<E> {
    /// Creates the ledger tables in `schema` if missing, and a ledger on
    /// them identified as `id` (what its [`TxMark`]s carry).
    pub async fn create(
        exec: Arc<E>,
        schema: Ident,
        clock: Arc<dyn Clock>,
        id: String,
    ) -> Result<Self> {
        let d = exec.dialect();
        let mut ddl = sql::create(d, &schema);
        // Ledgers made by earlier versions gain the columns added since.
        ddl.push(sql::add_column(
            d,
            &schema,
            sql::BATCHES,
            "lease_instance",
            "TEXT",
        ));
        if d.secondary_indexes() {
            ddl.extend(sql::create_indexes(d, &schema));
        }
        let instance = exec.instance().await?;
        let key = format!("backfill:ledger:{schema}:ddl");
        let ledger = SqlLedger {
            exec,
            home: LedgerHome {
                schema,
                clock,
                dialect: d,
            },
            id,
            instance,
        };
        ledger_tx!(ledger, |c| {
            // Several workers may start at once: one creates, the others
            // then find everything in place.
            advisory_lock(c, d, &key).await?;
            execute_all(c, &ddl).await
        })?;
        Ok(ledger)
    }

    /// The schema holding the ledger tables.
    pub fn schema(&self) -> &Ident {
        &self.home.schema
    }

    /// Where the tables are and the clock.
    pub fn home(&self) -> &LedgerHome {
        &self.home
    }

    /// A ledger table, e.g. `batches`, for queries of your own.
    pub fn table(&self, name: &str) -> Result<TableRef> {
        Ok(TableRef::qualified(
            self.home.schema.clone(),
            Ident::new(name)?,
        ))
    }

    /// The id carried by this ledger's [`TxMark`]s; the warehouse it was
    /// made from commits them with the data.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn d(&self) -> &'static dyn Dialect {
        self.exec.dialect()
    }

    /// Stores a run's document, replacing one of the same name or (without
    /// `replace`) only if there is none; returns whether it stored.
    async fn store_document(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
        replace: bool,
    ) -> Result<bool> {
        let (d, home, body) = (self.d(), &self.home, body.to_string());
        let now = self.now();
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let (delete, insert) =
                sql::store_document(d, &home.schema, run_id.as_str(), name, &body, now);
            if replace {
                c.execute(&delete).await?;
            }
            c.execute(&insert).await.map(|n| n > 0)
        })
    }
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, Value::Timestamp)
}

async fn advisory_lock(c: &mut dyn Conn, d: &dyn Dialect, key: &str) -> Result<()> {
    if let Some(q) = d.advisory_lock(key) {
        c.query(&q).await?;
    }
    Ok(())
}

/// The advisory-lock key under which transition and asset rows are
/// numbered.
fn numbering_key(home: &LedgerHome) -> String {
    format!("backfill:ledger:{}:numbering", home.schema)
}

const RUN_COLUMNS: &[&str] = &[
    "run_id",
    "target",
    "fingerprint",
    "code_version",
    "parameters",
    "operator",
    "status",
    "started_at",
    "finished_at",
    "rows_affected",
    "notes",
];

const BATCH_COLUMNS: &[&str] = &[
    "batch_id",
    "seq",
    "predicate",
    "start_bound",
    "end_bound",
    "state",
    "attempts",
    "lease_worker",
    "lease_token",
    "lease_expires",
    "rows_before",
    "rows_written",
    "started_at",
    "finished_at",
    "error",
    "lease_instance",
];

const ASSET_COLUMNS: &[&str] = &[
    "run_id",
    "kind",
    "table_name",
    "owner",
    "created_at",
    "expires_at",
    "dropped_at",
];

const TRANSITION_COLUMNS: &[&str] = &[
    "run_id",
    "batch_id",
    "from_state",
    "to_state",
    "at",
    "reason",
];

fn read_run(row: &[Value]) -> Result<RunRecord> {
    Ok(RunRecord {
        run_id: RunId::new(exec::string(row, 0)?)?,
        target: TableRef::parse(&exec::string(row, 1)?)?,
        fingerprint: exec::string(row, 2)?,
        code_version: exec::string(row, 3)?,
        parameters: serde_json::from_str(&exec::string(row, 4)?)?,
        operator: exec::string(row, 5)?,
        status: RunStatus::parse(&exec::string(row, 6)?)?,
        started_at: exec::timestamp(row, 7)?
            .ok_or_else(|| Error::engine("run without started_at"))?,
        finished_at: exec::timestamp(row, 8)?,
        rows_affected: exec::count(row, 9)?,
        notes: serde_json::from_str(&exec::string(row, 10)?)?,
    })
}

fn read_batch(row: &[Value]) -> Result<BatchRecord> {
    let bound = |i: usize| -> Result<Option<Value>> {
        match exec::text(row, i)? {
            None => Ok(None),
            Some(s) => Ok(serde_json::from_str(&s)?),
        }
    };
    let predicate: Predicate = serde_json::from_str(&exec::string(row, 2)?)?;
    let lease = match exec::int(row, 8)? {
        Some(token) => Some(Lease {
            worker: exec::text(row, 7)?.unwrap_or_default(),
            token: u64::try_from(token).unwrap_or(0),
            expires_at: exec::timestamp(row, 9)?.unwrap_or(Timestamp::MIN),
            instance: exec::text(row, 15)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(BatchRecord {
        batch: Batch {
            id: BatchId(exec::string(row, 0)?),
            seq: u32::try_from(exec::count(row, 1)?).unwrap_or(u32::MAX),
            predicate,
            start: bound(3)?,
            end: bound(4)?,
        },
        state: BatchState::parse(&exec::string(row, 5)?)?,
        attempts: u32::try_from(exec::count(row, 6)?).unwrap_or(u32::MAX),
        lease,
        rows_before: exec::count(row, 10)?,
        rows_written: exec::count(row, 11)?,
        started_at: exec::timestamp(row, 12)?,
        finished_at: exec::timestamp(row, 13)?,
        error: exec::text(row, 14)?,
    })
}

fn read_asset(r: &[Value]) -> Result<Asset> {
    Ok(Asset {
        run_id: RunId::new(exec::string(r, 0)?)?,
        kind: AssetKind::parse(&exec::string(r, 1)?)?,
        table: TableRef::parse(&exec::string(r, 2)?)?,
        owner: exec::string(r, 3)?,
        created_at: exec::timestamp(r, 4)?
            .ok_or_else(|| Error::engine("asset without created_at"))?,
        expires_at: exec::timestamp(r, 5)?
            .ok_or_else(|| Error::engine("asset without expires_at"))?,
        dropped_at: exec::timestamp(r, 6)?,
    })
}

fn read_transition(r: &[Value]) -> Result<Transition> {
    Ok(Transition {
        batch_id: exec::text(r, 0)?.map(BatchId),
        from: exec::string(r, 1)?,
        to: exec::string(r, 2)?,
        at: exec::timestamp(r, 3)?.ok_or_else(|| Error::engine("transition without time"))?,
        reason: exec::string(r, 4)?,
    })
}

/// The run's header; `lock` locks its row until the transaction ends.
async fn load_run(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    lock: bool,
) -> Result<RunRecord> {
    let d = home.dialect;
    let mut q = sql::select(
        d,
        &home.table(sql::RUNS),
        RUN_COLUMNS,
        &[("run_id", text(run_id.as_str()))],
        &[],
    );
    if lock {
        q.text.push_str(d.lock_rows());
    }
    match c.query(&q).await?.first() {
        Some(r) => read_run(r),
        None => Err(Error::RunNotFound(run_id.to_string())),
    }
}

/// The rows the run's batches wrote, as they stand: summed on read, so
/// that concurrent workers do not all update the run's row.
async fn rows_affected(c: &mut dyn Conn, home: &LedgerHome, run_id: &RunId) -> Result<u64> {
    let q = sql::total(
        home.dialect,
        &home.table(sql::BATCHES),
        "rows_written",
        &[("run_id", text(run_id.as_str()))],
    );
    match c.query(&q).await?.first() {
        Some(r) => exec::count(r, 0),
        None => Ok(0),
    }
}

/// How the run is steered; `lock` locks its row until the transaction
/// ends.
async fn read_steering(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    lock: bool,
) -> Result<Steering> {
    let d = home.dialect;
    let mut q = sql::select(
        d,
        &home.table(sql::RUNS),
        &["steering"],
        &[("run_id", text(run_id.as_str()))],
        &[],
    );
    if lock {
        q.text.push_str(d.lock_rows());
    }
    match c.query(&q).await?.first() {
        Some(r) => Steering::parse(exec::text(r, 0)?.as_deref()),
        None => Err(Error::RunNotFound(run_id.to_string())),
    }
}

/// A batch, its row locked until the transaction ends.
async fn lock_batch(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
) -> Result<Option<BatchRecord>> {
    let d = home.dialect;
    let mut q = sql::select(
        d,
        &home.table(sql::BATCHES),
        BATCH_COLUMNS,
        &[
            ("run_id", text(run_id.as_str())),
            ("batch_id", text(batch_id.0.as_str())),
        ],
        &[],
    );
    q.text.push_str(d.lock_rows());
    c.query(&q)
        .await?
        .first()
        .map(|r| read_batch(r))
        .transpose()
}

async fn log_transition(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: Option<&BatchId>,
    (from, to): (&str, &str),
    at: Timestamp,
    reason: &str,
) -> Result<()> {
    let d = home.dialect;
    // Numbered under a lock held to commit, so ids follow commit order.
    advisory_lock(c, d, &numbering_key(home)).await?;
    let q = sql::insert_numbered(
        d,
        &home.table(sql::TRANSITIONS),
        TRANSITION_COLUMNS,
        &[
            text(run_id.as_str()),
            batch_id.map_or(Value::Null, |b| text(b.0.as_str())),
            text(from),
            text(to),
            Value::Timestamp(at),
            text(reason),
        ],
    );
    c.execute(&q).await.map(|_| ())
}

/// [`log_transition`] of several batches' moves at once, in order.
async fn log_transitions(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    moves: &[(&BatchId, &str, &str, String)],
    at: Timestamp,
) -> Result<()> {
    let d = home.dialect;
    advisory_lock(c, d, &numbering_key(home)).await?;
    // Moves alike (the same from, to and reason) are logged by one
    // statement that binds only their batch ids; they follow plan order,
    // as a group's batches do.
    let mut rest = moves;
    while let Some((_, from, to, reason)) = rest.first() {
        let alike = rest
            .iter()
            .take_while(|(_, f, t, r)| f == from && t == to && r == reason)
            .count();
        let ids: Vec<&str> = rest[..alike].iter().map(|(b, ..)| b.0.as_str()).collect();
        let q = sql::log_moves(
            d,
            &home.table(sql::TRANSITIONS),
            &home.table(sql::BATCHES),
            TRANSITION_COLUMNS,
            run_id.as_str(),
            &ids,
            (from, to),
            at,
            reason,
        );
        if c.execute(&q).await? != ids.len() as u64 {
            return Err(Error::engine(format!(
                "the log of batches {} found fewer batches than it logs",
                ids.join(", ")
            )));
        }
        rest = &rest[alike..];
    }
    Ok(())
}

/// The lease token as stored.
fn token_value(lease: Option<&Lease>) -> Value {
    lease.map_or(Value::Null, |l| int(l.token))
}

/// Moves a batch, as [`crate::MemoryLedger`] does, inside the caller's
/// transaction (the ledger's own, or a warehouse write's). The batch row
/// is locked first, so the token check sees the latest committed claim.
#[allow(clippy::too_many_arguments)]
async fn transition_in(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
    token: Option<u64>,
    to: BatchState,
    update: &BatchUpdate,
) -> Result<()> {
    let d = home.dialect;
    let now = home.clock.now();
    let batches = home.table(sql::BATCHES);
    let fenced = |from: BatchState, token: Value| {
        sql::transition(
            d,
            &batches,
            run_id.as_str(),
            batch_id.0.as_str(),
            (from, to),
            token,
            update,
            now,
        )
    };
    // The lease holder moving its running batch needs no read first: the
    // fenced update changes the row, or it does not and the full path
    // below says why.
    if let Some(tok) = token {
        if BatchState::Running.can_move_to(to)
            && c.execute(&fenced(BatchState::Running, int(tok))).await? == 1
        {
            return transitioned(
                c,
                home,
                run_id,
                batch_id,
                (BatchState::Running, to),
                update,
                now,
            )
            .await;
        }
    }
    load_run(c, home, run_id, false).await?;
    let b = lock_batch(c, home, run_id, batch_id)
        .await?
        .ok_or_else(|| Error::InvalidPlan(format!("no batch {batch_id} in run {run_id}")))?;
    if let Some(tok) = token {
        check_held(&b, tok)?;
    }
    check_move(&b, to)?;
    // Fenced on what was read: state and token must not have moved.
    if c.execute(&fenced(b.state, token_value(b.lease.as_ref())))
        .await?
        != 1
    {
        return Err(Error::transient(format!(
            "batch {batch_id} changed concurrently; retry"
        )));
    }
    transitioned(c, home, run_id, batch_id, (b.state, to), update, now).await
}

/// What follows a batch's move: the log entry. (The run's row count is
/// summed from its batches when read, so no batch updates the run's row.)
#[allow(clippy::too_many_arguments)]
async fn transitioned(
    c: &mut dyn Conn,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
    (from, to): (BatchState, BatchState),
    update: &BatchUpdate,
    now: Timestamp,
) -> Result<()> {
    if gives_claim_back(from, to) {
        let q = sql::increment(
            home.dialect,
            &home.table(sql::BATCHES),
            "attempts",
            -1,
            &[
                ("run_id", text(run_id.as_str())),
                ("batch_id", text(batch_id.0.as_str())),
            ],
        );
        c.execute(&q).await?;
    }
    log_transition(
        c,
        home,
        run_id,
        Some(batch_id),
        (from.as_str(), to.as_str()),
        now,
        &update.reason,
    )
    .await
}

/// Marks a batch written inside a warehouse write's transaction, fenced by
/// the mark's token ([`Error::LeaseLost`] when it is stale, so the caller
/// rolls the data back too).
pub async fn mark_written(
    c: &mut dyn Conn,
    home: &LedgerHome,
    mark: &TxMark,
    before: u64,
    written: u64,
) -> Result<()> {
    transition_in(
        c,
        home,
        &mark.run_id,
        &mark.batch_id,
        Some(mark.token),
        BatchState::Written,
        &BatchUpdate {
            rows_before: Some(before),
            rows_written: Some(written),
            ..BatchUpdate::reason("written")
        },
    )
    .await
}

/// [`mark_written`] of a commit group's batches, in one statement fenced
/// batch by batch on its token, and one log insert. A batch no longer
/// held under its token is [`Error::LeaseLost`] for all of them (the
/// caller rolls the group back).
pub async fn mark_written_many(
    c: &mut dyn Conn,
    home: &LedgerHome,
    marks: &[(TxMark, u64, u64)],
) -> Result<()> {
    let Some((first, _, _)) = marks.first() else {
        return Ok(());
    };
    let run_id = &first.run_id;
    if let Some((other, _, _)) = marks.iter().find(|(m, _, _)| m.run_id != *run_id) {
        return Err(Error::InvalidPlan(format!(
            "a commit group spans runs {run_id} and {}",
            other.run_id
        )));
    }
    let now = home.clock.now();
    let rows: Vec<(&str, u64, u64, u64)> = marks
        .iter()
        .map(|(m, before, written)| (m.batch_id.0.as_str(), m.token, *before, *written))
        .collect();
    let q = sql::mark_written_many(
        home.dialect,
        &home.table(sql::BATCHES),
        run_id.as_str(),
        &rows,
        now,
    );
    if c.execute(&q).await? != marks.len() as u64 {
        let ids: Vec<String> = marks
            .iter()
            .map(|(m, _, _)| m.batch_id.to_string())
            .collect();
        return Err(Error::LeaseLost {
            batch: ids.join(", "),
            token: first.token,
        });
    }
    let moves: Vec<_> = marks
        .iter()
        .map(|(m, _, _)| (&m.batch_id, "running", "written", "written".to_string()))
        .collect();
    log_transitions(c, home, run_id, &moves, now).await
}

/// A batch's row as first recorded.
/// Batches recorded by one statement when a plan is recorded (17 bound
/// values each: well under PostgreSQL's 65,535 parameters a statement).
const PLAN_ROWS_PER_STATEMENT: usize = 1_000;

fn pending_row(run_id: &RunId, b: &Batch) -> Result<Vec<Value>> {
    let opt_json = |v: &Option<Value>| -> Result<Value> {
        Ok(match v {
            Some(v) => text(serde_json::to_string(v)?),
            None => Value::Null,
        })
    };
    Ok(vec![
        text(run_id.as_str()),
        text(b.id.0.as_str()),
        Value::Int(i64::from(b.seq)),
        text(serde_json::to_string(&b.predicate)?),
        opt_json(&b.start)?,
        opt_json(&b.end)?,
        text(BatchState::Pending.as_str()),
        Value::Int(0),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Int(0),
        Value::Int(0),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ])
}

#[async_trait]
impl<E: Executor> Ledger for SqlLedger<E> {
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (d, home, target) = (self.d(), &self.home, target.to_string());
        ledger_tx!(self, |c| {
            // Two processes locking the same target serialize here.
            let key = format!("backfill:ledger:{}:lock:{target}", home.schema);
            advisory_lock(c, d, &key).await?;
            let q = sql::select(
                d,
                &home.table(sql::LOCKS),
                &["run_id"],
                &[("target", text(target.as_str()))],
                &[],
            );
            let holder = match c.query(&q).await?.first() {
                Some(r) => Some(exec::string(r, 0)?),
                None => None,
            };
            match holder {
                Some(holder) if holder != run.as_str() => Err(Error::TargetLocked {
                    target: target.clone(),
                    holder,
                }),
                Some(_) => Ok(()),
                None => {
                    let q = sql::insert(
                        d,
                        &home.table(sql::LOCKS),
                        &["target", "run_id", "locked_at"],
                        &[
                            text(target.as_str()),
                            text(run.as_str()),
                            Value::Timestamp(home.clock.now()),
                        ],
                    );
                    c.execute(&q).await.map(|_| ())
                }
            }
        })
    }

    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            let q = sql::delete(
                d,
                &home.table(sql::LOCKS),
                &[
                    ("target", text(target.to_string())),
                    ("run_id", text(run.as_str())),
                ],
            );
            c.execute(&q).await.map(|_| ())
        })
    }

    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            // Workers starting the same run at once: one plans it, the
            // others resume it.
            let key = format!("backfill:ledger:{}:run:{}", home.schema, run.run_id);
            advisory_lock(c, d, &key).await?;
            let q = sql::select(
                d,
                &home.table(sql::RUNS),
                &["fingerprint"],
                &[("run_id", text(run.run_id.as_str()))],
                &[],
            );
            if let Some(r) = c.query(&q).await?.first() {
                let stored = exec::string(r, 0)?;
                if stored != run.fingerprint {
                    return Err(Error::FingerprintMismatch {
                        run: run.run_id.to_string(),
                        stored,
                        given: run.fingerprint.clone(),
                        changed: Vec::new(),
                    });
                }
                return Ok(RunStart::Resumed);
            }
            let now = home.clock.now();
            let q = sql::insert(
                d,
                &home.table(sql::RUNS),
                RUN_COLUMNS,
                &[
                    text(run.run_id.as_str()),
                    text(run.target.to_string()),
                    text(run.fingerprint.as_str()),
                    text(run.code_version.as_str()),
                    text(serde_json::to_string(&run.parameters)?),
                    text(run.operator.as_str()),
                    text(run.status.as_str()),
                    Value::Timestamp(run.started_at),
                    opt_ts(run.finished_at),
                    int(run.rows_affected),
                    text(serde_json::to_string(&run.notes)?),
                ],
            );
            c.execute(&q).await?;
            let mut columns = vec!["run_id"];
            columns.extend_from_slice(BATCH_COLUMNS);
            // The plan in bulk: the engine's bulk path where it has one,
            // else a few statements of many rows each, never a statement a
            // batch.
            let rows = batches
                .iter()
                .map(|b| pending_row(&run.run_id, b))
                .collect::<Result<Vec<_>>>()?;
            let table = home.table(sql::BATCHES);
            if !c.append(&table, &columns, &rows).await? {
                for chunk in rows.chunks(PLAN_ROWS_PER_STATEMENT) {
                    c.execute(&sql::insert_rows(d, &table, &columns, chunk))
                        .await?;
                }
            }
            log_transition(
                c,
                home,
                &run.run_id,
                None,
                ("none", run.status.as_str()),
                now,
                "run planned",
            )
            .await?;
            Ok(RunStart::New)
        })
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRecord> {
        let home = &self.home;
        ledger_tx!(self, |c| {
            let mut run = load_run(c, home, run_id, false).await?;
            run.rows_affected = rows_affected(c, home, run_id).await?;
            Ok(run)
        })
    }

    async fn runs_on(&self, target: &TableRef) -> Result<Vec<RunRecord>> {
        let home = &self.home;
        let q = sql::select(
            home.dialect,
            &home.table(sql::RUNS),
            RUN_COLUMNS,
            &[("target", text(target.to_string()))],
            &["started_at", "run_id"],
        );
        ledger_tx!(self, |c| {
            let mut runs = Vec::new();
            for r in c.query(&q).await? {
                let mut run = read_run(&r)?;
                run.rows_affected = rows_affected(c, home, &run.run_id).await?;
                runs.push(run);
            }
            Ok(runs)
        })
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            let now = home.clock.now();
            // Locked: notes are read, appended and written back.
            let mut run = load_run(c, home, run_id, true).await?;
            let from = run.status;
            let mut set = vec![("status", text(status.as_str()))];
            if matches!(
                status,
                RunStatus::Completed
                    | RunStatus::Failed
                    | RunStatus::Cancelled
                    | RunStatus::RolledBack
            ) {
                set.push(("finished_at", Value::Timestamp(now)));
            }
            if let Some(n) = note {
                run.notes.push(n.to_string());
                set.push(("notes", text(serde_json::to_string(&run.notes)?)));
            }
            let q = sql::update(
                d,
                &home.table(sql::RUNS),
                &set,
                &[("run_id", text(run_id.as_str()))],
            );
            c.execute(&q).await?;
            log_transition(
                c,
                home,
                run_id,
                None,
                (from.as_str(), status.as_str()),
                now,
                note.unwrap_or(""),
            )
            .await
        })
    }

    async fn claim(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
    ) -> Result<Option<Claim>> {
        Ok(self
            .claim_many(run_id, worker, lease, only, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn claim_many(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
        n: usize,
    ) -> Result<Vec<Claim>> {
        let (d, home) = (self.d(), &self.home);
        let only: Option<Vec<String>> = only.map(|ids| ids.iter().map(|b| b.0.clone()).collect());
        ledger_tx!(self, |c| {
            // A run steered to pause or cancel hands out nothing: read in
            // the claim's transaction, with the run's row locked, so that
            // no batch is claimed once a steering change is recorded.
            if read_steering(c, home, run_id, true).await? != Steering::Run {
                return Ok(Vec::new());
            }
            let now = home.clock.now();
            let batches = home.table(sql::BATCHES);
            let now_value = Value::Timestamp(now);
            let takeover = match self.exec.liveness() {
                LivenessModel::SingleWriter => {
                    sql::Takeover::ExpiredOrNotMine(&now_value, &self.instance)
                }
                LivenessModel::SessionLock => sql::Takeover::ExpiredOrUnlocked(&now_value),
                LivenessModel::LeaseOnly => sql::Takeover::Expired(&now_value),
            };
            let mut found = Vec::new();
            for takeover in [None, Some(takeover)] {
                // Locks the candidates where sessions write concurrently;
                // rows other workers are claiming right now are skipped.
                let q = sql::claim_candidate(
                    d,
                    &batches,
                    BATCH_COLUMNS,
                    run_id.as_str(),
                    only.as_deref(),
                    takeover,
                    n,
                );
                for r in c.query(&q).await? {
                    found.push(read_batch(&r)?);
                }
                if !found.is_empty() {
                    break;
                }
            }
            if found.is_empty() {
                // Nothing to claim: a run that does not exist says so.
                load_run(c, home, run_id, false).await?;
                return Ok(Vec::new());
            }
            // One statement claims them all, one logs them all.
            let ids: Vec<String> = found.iter().map(|b| b.batch.id.0.clone()).collect();
            let q = sql::claim_batches(
                d,
                &batches,
                run_id.as_str(),
                &ids,
                &[
                    ("lease_worker", text(worker)),
                    ("lease_expires", Value::Timestamp(lease_expiry(now, lease))),
                    ("started_at", Value::Timestamp(now)),
                    ("lease_instance", text(self.instance.as_str())),
                ],
            );
            if c.execute(&q).await? != ids.len() as u64 {
                return Err(Error::transient(format!(
                    "batches {} were claimed concurrently; retry",
                    ids.join(", ")
                )));
            }
            let moves: Vec<_> = found
                .iter()
                .map(|b| {
                    let reason = claim_reason(
                        b.state,
                        worker,
                        b.lease.as_ref(),
                        // Taken while its lease still ran: its holder is dead.
                        b.lease.as_ref().is_some_and(|l| l.expires_at > now),
                        now,
                    );
                    (&b.batch.id, b.state.as_str(), "running", reason)
                })
                .collect();
            log_transitions(c, home, run_id, &moves, now).await?;
            Ok(found
                .into_iter()
                .map(|b| Claim {
                    token: b.lease.as_ref().map_or(0, |l| l.token) + 1,
                    attempt: b.attempts + 1,
                    batch: b.batch,
                })
                .collect())
        })
    }

    async fn steer(&self, run_id: &RunId, to: Steering, who: &str) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            let from = read_steering(c, home, run_id, true).await?;
            let q = sql::update(
                d,
                &home.table(sql::RUNS),
                &[("steering", text(to.as_str()))],
                &[("run_id", text(run_id.as_str()))],
            );
            c.execute(&q).await?;
            let now = home.clock.now();
            let (f, t) = (steering_state(from), steering_state(to));
            let reason = format!("steered by {who}");
            log_transition(c, home, run_id, None, (&f, &t), now, &reason).await
        })
    }

    async fn steering(&self, run_id: &RunId) -> Result<Steering> {
        let home = &self.home;
        ledger_tx!(self, |c| read_steering(c, home, run_id, false).await)
    }

    async fn renew(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: u64,
        lease: Duration,
    ) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            let q = sql::update(
                d,
                &home.table(sql::BATCHES),
                &[(
                    "lease_expires",
                    Value::Timestamp(lease_expiry(home.clock.now(), lease)),
                )],
                &[
                    ("run_id", text(run_id.as_str())),
                    ("batch_id", text(batch_id.0.as_str())),
                    ("state", text(BatchState::Running.as_str())),
                    ("lease_token", int(token)),
                ],
            );
            if c.execute(&q).await? == 1 {
                Ok(())
            } else {
                Err(Error::LeaseLost {
                    batch: batch_id.to_string(),
                    token,
                })
            }
        })
    }

    async fn release(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        who: &str,
        why: &str,
    ) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let b = lock_batch(c, home, run_id, batch_id)
                .await?
                .ok_or_else(|| {
                    Error::InvalidPlan(format!("no batch {batch_id} in run {run_id}"))
                })?;
            check_release(&b, who, why)?;
            let q = sql::update(
                d,
                &home.table(sql::BATCHES),
                &[
                    ("state", text(BatchState::Pending.as_str())),
                    ("attempts", Value::Int(0)),
                ],
                &[
                    ("run_id", text(run_id.as_str())),
                    ("batch_id", text(batch_id.0.as_str())),
                    ("state", text(b.state.as_str())),
                    ("lease_token", token_value(b.lease.as_ref())),
                ],
            );
            if c.execute(&q).await? != 1 {
                return Err(Error::transient(format!(
                    "batch {batch_id} changed concurrently; retry"
                )));
            }
            let now = home.clock.now();
            let reason = release_reason(who, why);
            let moved = (b.state.as_str(), BatchState::Pending.as_str());
            log_transition(c, home, run_id, Some(batch_id), moved, now, &reason).await
        })
    }

    async fn liveness(&self, lease: &Lease) -> Result<Liveness> {
        match self.exec.liveness() {
            LivenessModel::SingleWriter => Ok(if lease.instance == self.instance {
                Liveness::Alive
            } else {
                Liveness::Dead
            }),
            LivenessModel::SessionLock => {
                let Some(q) = sql::instance_alive(self.d(), &lease.instance) else {
                    return Ok(Liveness::Unknown);
                };
                let mut c = self.exec.connect().await?;
                let rows = c.query(&q).await?;
                Ok(match rows.first().and_then(|r| r.first()) {
                    Some(Value::Bool(true)) => Liveness::Alive,
                    Some(Value::Bool(false)) => Liveness::Dead,
                    _ => Liveness::Unknown,
                })
            }
            LivenessModel::LeaseOnly => Ok(Liveness::Unknown),
        }
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    async fn transition(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: Option<u64>,
        to: BatchState,
        update: BatchUpdate,
    ) -> Result<()> {
        let home = &self.home;
        ledger_tx!(self, |c| {
            transition_in(c, home, run_id, batch_id, token, to, &update).await
        })
    }

    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let q = sql::select(
                d,
                &home.table(sql::BATCHES),
                BATCH_COLUMNS,
                &[("run_id", text(run_id.as_str()))],
                &["seq"],
            );
            c.query(&q).await?.iter().map(|r| read_batch(r)).collect()
        })
    }

    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let q = sql::select(
                d,
                &home.table(sql::TRANSITIONS),
                &["batch_id", "from_state", "to_state", "at", "reason"],
                &[("run_id", text(run_id.as_str()))],
                &["id"],
            );
            c.query(&q)
                .await?
                .iter()
                .map(|r| read_transition(r))
                .collect()
        })
    }

    async fn record_asset(&self, asset: &Asset) -> Result<()> {
        let (d, home, a) = (self.d(), &self.home, asset);
        ledger_tx!(self, |c| {
            load_run(c, home, &a.run_id, false).await?;
            // Serializes concurrent recorders, so the check below sees
            // every committed asset and ids follow commit order.
            advisory_lock(c, d, &numbering_key(home)).await?;
            let assets = home.table(sql::ASSETS);
            let q = sql::select(
                d,
                &assets,
                &["id"],
                &[
                    ("run_id", text(a.run_id.as_str())),
                    ("kind", text(a.kind.as_str())),
                    ("table_name", text(a.table.to_string())),
                ],
                &[],
            );
            if !c.query(&q).await?.is_empty() {
                return Ok(());
            }
            let q = sql::insert_numbered(
                d,
                &assets,
                ASSET_COLUMNS,
                &[
                    text(a.run_id.as_str()),
                    text(a.kind.as_str()),
                    text(a.table.to_string()),
                    text(a.owner.as_str()),
                    Value::Timestamp(a.created_at),
                    Value::Timestamp(a.expires_at),
                    opt_ts(a.dropped_at),
                ],
            );
            c.execute(&q).await.map(|_| ())
        })
    }

    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>> {
        let (d, home) = (self.d(), &self.home);
        let cond: Vec<(&str, Value)> = match run_id {
            Some(r) => vec![("run_id", text(r.as_str()))],
            None => Vec::new(),
        };
        let q = sql::select(
            d,
            &home.table(sql::ASSETS),
            ASSET_COLUMNS,
            &cond,
            &["run_id", "id"],
        );
        ledger_tx!(self, |c| {
            c.query(&q).await?.iter().map(|r| read_asset(r)).collect()
        })
    }

    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let q = sql::update(
                d,
                &home.table(sql::ASSETS),
                &[("dropped_at", Value::Timestamp(at))],
                &[
                    ("run_id", text(run_id.as_str())),
                    ("table_name", text(table.to_string())),
                ],
            );
            c.execute(&q).await.map(|_| ())
        })
    }

    async fn put_document(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        self.store_document(run_id, name, body, true)
            .await
            .map(|_| ())
    }

    async fn put_document_if_absent(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<bool> {
        self.store_document(run_id, name, body, false).await
    }

    async fn document(&self, run_id: &RunId, name: &str) -> Result<Option<serde_json::Value>> {
        let (d, home) = (self.d(), &self.home);
        ledger_tx!(self, |c| {
            load_run(c, home, run_id, false).await?;
            let q: Sql = sql::select_document(d, &home.schema, run_id.as_str(), name);
            c.query(&q)
                .await?
                .first()
                .map(|r| {
                    let b = exec::string(r, 0)?;
                    serde_json::from_str(&b).map_err(|e| Error::engine(e.to_string()))
                })
                .transpose()
        })
    }

    fn tx_mark(&self, run_id: &RunId, batch_id: &BatchId, token: u64) -> Option<TxMark> {
        Some(TxMark {
            ledger: self.id.clone(),
            run_id: run_id.clone(),
            batch_id: batch_id.clone(),
            token,
        })
    }

    fn now(&self) -> Timestamp {
        self.home.clock.now()
    }
}
