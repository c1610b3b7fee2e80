//! [`PgLedger`]: the [`Ledger`] on PostgreSQL tables, shared by every
//! worker process that points at the same database and schema.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backfill_core::jiff::{SignedDuration, Timestamp};
use backfill_core::ledger::{
    Asset, AssetKind, BatchRecord, BatchState, BatchUpdate, Claim, Clock, Lease, Ledger, RunId,
    RunRecord, RunStart, RunStatus, Transition, TxMark,
};
use backfill_core::plan::{Batch, BatchId};
use backfill_core::sql::stmt::ledger as sql;
use backfill_core::{Error, Ident, Predicate, Result, TableRef, Value};
use tokio_postgres::{Row, Transaction};

use crate::db::{
    advisory_lock, exec, exec_all, get_i64, get_string, get_text, get_timestamp, query, Db,
    LedgerHome, DIALECT,
};

/// The schema a ledger uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "backfill";

/// A ledger kept in PostgreSQL tables (`runs`, `batches`, `transitions`,
/// `locks`, `assets`) in a schema of the database it shares with a
/// [`crate::PgWarehouse`] (made with [`crate::PgWarehouse::ledger`]).
///
/// Semantics mirror [`backfill_core::MemoryLedger`] exactly: claim order
/// (pending batches in plan order, then running batches whose lease
/// expired), fencing tokens that grow with every claim, the state machine
/// of [`BatchState::can_move_to`], and `rows_affected` accounting. Every
/// operation is one transaction, so several worker processes on several
/// machines can share one run:
///
/// - `claim` picks its batch with `SELECT … FOR UPDATE SKIP LOCKED`:
///   concurrent claimers get distinct batches without waiting on each
///   other;
/// - a claim is a lease with a fencing token; a worker that dies loses the
///   batch when the lease expires, and the next claim takes it over with a
///   new token;
/// - a batch's write marks it `written` in the same transaction as the
///   data ([`Ledger::tx_mark`]), after locking its row and checking the
///   token: a stale worker whose lease was taken over gets
///   [`Error::LeaseLost`] and its write is rolled back;
/// - `lock_target` takes a transaction-scoped advisory lock on the target
///   while it reads and inserts the lock row, and `begin_run` one on the
///   run, so two processes cannot race;
/// - transition and asset rows are numbered under an advisory lock on the
///   ledger, so they read back in commit order.
///
/// Lease times come from the ledger's [`Clock`], not the server's clock
/// (so tests can use a [`backfill_core::ledger::ManualClock`]); workers
/// sharing a run should have reasonably synchronized clocks. Deadlocks
/// and serialization failures are retried a few times inside the ledger.
/// Timestamps are stored as `TIMESTAMPTZ` (microseconds).
#[derive(Clone)]
pub struct PgLedger {
    db: Db,
    home: LedgerHome,
    id: String,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("id", &self.id)
            .field("schema", &self.home.schema)
            .finish()
    }
}

impl PgLedger {
    pub(crate) async fn create(db: Db, schema: Ident, clock: Arc<dyn Clock>) -> Result<PgLedger> {
        let mut ddl = sql::create(&DIALECT, &schema);
        ddl.extend(sql::create_indexes(&DIALECT, &schema));
        let key = format!("backfill:ledger:{schema}:ddl");
        db.ledger_tx(move |tx| {
            Box::pin(async move {
                // Several workers may start at once: one creates, the
                // others then find everything in place.
                advisory_lock(tx, &key).await?;
                exec_all(tx, &ddl).await
            })
        })
        .await?;
        let id = format!("{}:{}", db.id(), schema);
        let home = LedgerHome { schema, clock };
        db.register_ledger(&id, home.clone());
        Ok(PgLedger { db, home, id })
    }

    /// The schema holding the ledger tables.
    pub fn schema(&self) -> &Ident {
        &self.home.schema
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
}

fn t(home: &LedgerHome, name: &str) -> TableRef {
    sql::table(&home.schema, name)
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

fn read_run(row: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        run_id: RunId::new(get_string(row, 0)?)?,
        target: TableRef::parse(&get_string(row, 1)?)?,
        fingerprint: get_string(row, 2)?,
        code_version: get_string(row, 3)?,
        parameters: serde_json::from_str(&get_string(row, 4)?)?,
        operator: get_string(row, 5)?,
        status: RunStatus::parse(&get_string(row, 6)?)?,
        started_at: get_timestamp(row, 7)?
            .ok_or_else(|| Error::engine("run without started_at"))?,
        finished_at: get_timestamp(row, 8)?,
        rows_affected: u64::try_from(get_i64(row, 9)?.unwrap_or(0)).unwrap_or(0),
        notes: serde_json::from_str(&get_string(row, 10)?)?,
    })
}

fn read_batch(row: &Row) -> Result<BatchRecord> {
    let bound = |i: usize| -> Result<Option<Value>> {
        match get_text(row, i)? {
            None => Ok(None),
            Some(s) => Ok(serde_json::from_str(&s)?),
        }
    };
    let predicate: Predicate = serde_json::from_str(&get_string(row, 2)?)?;
    let lease = match get_i64(row, 8)? {
        Some(token) => Some(Lease {
            worker: get_text(row, 7)?.unwrap_or_default(),
            token: u64::try_from(token).unwrap_or(0),
            expires_at: get_timestamp(row, 9)?.unwrap_or(Timestamp::MIN),
        }),
        None => None,
    };
    let count =
        |i: usize| -> Result<u64> { Ok(u64::try_from(get_i64(row, i)?.unwrap_or(0)).unwrap_or(0)) };
    Ok(BatchRecord {
        batch: Batch {
            id: BatchId(get_string(row, 0)?),
            seq: u32::try_from(get_i64(row, 1)?.unwrap_or(0)).unwrap_or(u32::MAX),
            predicate,
            start: bound(3)?,
            end: bound(4)?,
        },
        state: BatchState::parse(&get_string(row, 5)?)?,
        attempts: u32::try_from(count(6)?).unwrap_or(u32::MAX),
        lease,
        rows_before: count(10)?,
        rows_written: count(11)?,
        started_at: get_timestamp(row, 12)?,
        finished_at: get_timestamp(row, 13)?,
        error: get_text(row, 14)?,
    })
}

fn read_asset(r: &Row) -> Result<Asset> {
    Ok(Asset {
        run_id: RunId::new(get_string(r, 0)?)?,
        kind: AssetKind::parse(&get_string(r, 1)?)?,
        table: TableRef::parse(&get_string(r, 2)?)?,
        owner: get_string(r, 3)?,
        created_at: get_timestamp(r, 4)?
            .ok_or_else(|| Error::engine("asset without created_at"))?,
        expires_at: get_timestamp(r, 5)?
            .ok_or_else(|| Error::engine("asset without expires_at"))?,
        dropped_at: get_timestamp(r, 6)?,
    })
}

/// The run's header; `lock` locks its row until the transaction ends.
async fn load_run(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    run_id: &RunId,
    lock: bool,
) -> Result<RunRecord> {
    let render = if lock {
        sql::select_for_update
    } else {
        sql::select
    };
    let q = render(
        &DIALECT,
        &t(home, sql::RUNS),
        RUN_COLUMNS,
        &[("run_id", text(run_id.as_str()))],
        &[],
    );
    match query(tx, &q).await?.first() {
        Some(r) => read_run(r),
        None => Err(Error::RunNotFound(run_id.to_string())),
    }
}

/// A batch, its row locked until the transaction ends.
async fn lock_batch(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
) -> Result<Option<BatchRecord>> {
    let q = sql::select_for_update(
        &DIALECT,
        &t(home, sql::BATCHES),
        BATCH_COLUMNS,
        &[
            ("run_id", text(run_id.as_str())),
            ("batch_id", text(batch_id.0.as_str())),
        ],
        &[],
    );
    query(tx, &q).await?.first().map(read_batch).transpose()
}

async fn log_transition(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: Option<&BatchId>,
    (from, to): (&str, &str),
    at: Timestamp,
    reason: &str,
) -> Result<()> {
    // Numbered under a lock held to commit, so ids follow commit order.
    advisory_lock(tx, &numbering_key(home)).await?;
    let q = sql::insert_numbered(
        &DIALECT,
        &t(home, sql::TRANSITIONS),
        &[
            "run_id",
            "batch_id",
            "from_state",
            "to_state",
            "at",
            "reason",
        ],
        &[
            text(run_id.as_str()),
            batch_id.map_or(Value::Null, |b| text(b.0.as_str())),
            text(from),
            text(to),
            Value::Timestamp(at),
            text(reason),
        ],
    );
    exec(tx, &q).await.map(|_| ())
}

fn token_value(lease: Option<&Lease>) -> Value {
    lease.map_or(Value::Null, |l| int(l.token))
}

/// Moves a batch, as [`backfill_core::MemoryLedger`] does; runs inside the
/// caller's transaction (the ledger's own, or a warehouse write's). The
/// batch row is locked first, so the token check sees the latest
/// committed claim.
pub(crate) async fn transition_in(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
    token: Option<u64>,
    to: BatchState,
    update: BatchUpdate,
) -> Result<()> {
    let now = home.clock.now();
    let batches = t(home, sql::BATCHES);
    let fenced = |from: BatchState, token: Value| {
        sql::transition(
            &DIALECT,
            &batches,
            run_id.as_str(),
            batch_id.0.as_str(),
            (from, to),
            token,
            &update,
            now,
        )
    };
    // The lease holder moving its running batch needs no read first: the
    // fenced update changes the row, or it does not and the full path
    // below says why.
    if let Some(tok) = token {
        if BatchState::Running.can_move_to(to)
            && exec(tx, &fenced(BatchState::Running, int(tok))).await? == 1
        {
            return transitioned(
                tx,
                home,
                run_id,
                batch_id,
                (BatchState::Running, to),
                &update,
                now,
            )
            .await;
        }
    }
    load_run(tx, home, run_id, false).await?;
    let b = lock_batch(tx, home, run_id, batch_id)
        .await?
        .ok_or_else(|| Error::InvalidPlan(format!("no batch {batch_id} in run {run_id}")))?;
    if let Some(tok) = token {
        let held =
            b.state == BatchState::Running && b.lease.as_ref().is_some_and(|l| l.token == tok);
        if !held {
            return Err(Error::LeaseLost {
                batch: batch_id.to_string(),
                token: tok,
            });
        }
    }
    if !b.state.can_move_to(to) {
        return Err(Error::InvalidTransition {
            batch: batch_id.to_string(),
            from: b.state.to_string(),
            to: to.to_string(),
        });
    }
    // Fenced on what was read: state and token must not have moved.
    if exec(tx, &fenced(b.state, token_value(b.lease.as_ref()))).await? != 1 {
        return Err(Error::transient(format!(
            "batch {batch_id} changed concurrently; retry"
        )));
    }
    transitioned(tx, home, run_id, batch_id, (b.state, to), &update, now).await
}

/// What follows a batch's move: the run's row count, and the log entry.
async fn transitioned(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
    (from, to): (BatchState, BatchState),
    update: &BatchUpdate,
    now: Timestamp,
) -> Result<()> {
    if let (Some(r), BatchState::Written) = (update.rows_written, to) {
        let q = sql::increment(
            &DIALECT,
            &t(home, sql::RUNS),
            "rows_affected",
            i64::try_from(r).unwrap_or(i64::MAX),
            &[("run_id", text(run_id.as_str()))],
        );
        exec(tx, &q).await?;
    }
    log_transition(
        tx,
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
pub(crate) async fn mark_written(
    tx: &Transaction<'_>,
    home: &LedgerHome,
    mark: &TxMark,
    before: u64,
    written: u64,
) -> Result<()> {
    transition_in(
        tx,
        home,
        &mark.run_id,
        &mark.batch_id,
        Some(mark.token),
        BatchState::Written,
        BatchUpdate {
            rows_before: Some(before),
            rows_written: Some(written),
            ..BatchUpdate::reason("written")
        },
    )
    .await
}

impl PgLedger {
    /// Runs `f` in a ledger transaction with this ledger's home.
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'t> FnOnce(&'t Transaction<'t>, LedgerHome) -> crate::db::TxFuture<'t, T>
            + Send
            + Clone,
    {
        let home = self.home.clone();
        self.db
            .ledger_tx(move |tx| {
                let f = f.clone();
                f(tx, home.clone())
            })
            .await
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
        let (run_id, name, body) = (run_id.clone(), name.to_string(), body.to_string());
        let now = self.now();
        self.tx(move |tx, home| {
            let (run_id, name, body) = (run_id.clone(), name.clone(), body.clone());
            Box::pin(async move {
                load_run(tx, &home, &run_id, false).await?;
                let (delete, insert) =
                    sql::store_document(&DIALECT, &home.schema, run_id.as_str(), &name, &body, now);
                if replace {
                    exec(tx, &delete).await?;
                }
                exec(tx, &insert).await.map(|n| n > 0)
            })
        })
        .await
    }
}

#[async_trait]
impl Ledger for PgLedger {
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (target, run) = (target.to_string(), run.clone());
        self.tx(move |tx, home| {
            Box::pin(async move {
                // Two processes locking the same target serialize here.
                advisory_lock(
                    tx,
                    &format!("backfill:ledger:{}:lock:{target}", home.schema),
                )
                .await?;
                let q = sql::select(
                    &DIALECT,
                    &t(&home, sql::LOCKS),
                    &["run_id"],
                    &[("target", text(target.as_str()))],
                    &[],
                );
                let holder = match query(tx, &q).await?.first() {
                    Some(r) => Some(get_string(r, 0)?),
                    None => None,
                };
                match holder {
                    Some(holder) if holder != run.as_str() => {
                        Err(Error::TargetLocked { target, holder })
                    }
                    Some(_) => Ok(()),
                    None => {
                        let q = sql::insert(
                            &DIALECT,
                            &t(&home, sql::LOCKS),
                            &["target", "run_id", "locked_at"],
                            &[
                                text(target.as_str()),
                                text(run.as_str()),
                                Value::Timestamp(home.clock.now()),
                            ],
                        );
                        exec(tx, &q).await.map(|_| ())
                    }
                }
            })
        })
        .await
    }

    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (target, run) = (target.to_string(), run.clone());
        self.tx(move |tx, home| {
            Box::pin(async move {
                let q = sql::delete(
                    &DIALECT,
                    &t(&home, sql::LOCKS),
                    &[
                        ("target", text(target.as_str())),
                        ("run_id", text(run.as_str())),
                    ],
                );
                exec(tx, &q).await.map(|_| ())
            })
        })
        .await
    }

    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart> {
        let (run, batches) = (run.clone(), Arc::new(batches.to_vec()));
        self.tx(move |tx, home| {
            Box::pin(async move {
                // Workers starting the same run at once: one plans it, the
                // others resume it.
                advisory_lock(
                    tx,
                    &format!("backfill:ledger:{}:run:{}", home.schema, run.run_id),
                )
                .await?;
                let q = sql::select(
                    &DIALECT,
                    &t(&home, sql::RUNS),
                    &["fingerprint"],
                    &[("run_id", text(run.run_id.as_str()))],
                    &[],
                );
                if let Some(r) = query(tx, &q).await?.first() {
                    let stored = get_string(r, 0)?;
                    if stored != run.fingerprint {
                        return Err(Error::FingerprintMismatch {
                            run: run.run_id.to_string(),
                            stored,
                            given: run.fingerprint.clone(),
                        });
                    }
                    return Ok(RunStart::Resumed);
                }
                let now = home.clock.now();
                let q = sql::insert(
                    &DIALECT,
                    &t(&home, sql::RUNS),
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
                exec(tx, &q).await?;
                let mut columns = vec!["run_id"];
                columns.extend_from_slice(BATCH_COLUMNS);
                for b in batches.iter() {
                    let opt_json = |v: &Option<Value>| -> Result<Value> {
                        Ok(match v {
                            Some(v) => text(serde_json::to_string(v)?),
                            None => Value::Null,
                        })
                    };
                    let q = sql::insert(
                        &DIALECT,
                        &t(&home, sql::BATCHES),
                        &columns,
                        &[
                            text(run.run_id.as_str()),
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
                        ],
                    );
                    exec(tx, &q).await?;
                }
                log_transition(
                    tx,
                    &home,
                    &run.run_id,
                    None,
                    ("none", run.status.as_str()),
                    now,
                    "run planned",
                )
                .await?;
                Ok(RunStart::New)
            })
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRecord> {
        let run_id = run_id.clone();
        self.tx(move |tx, home| Box::pin(async move { load_run(tx, &home, &run_id, false).await }))
            .await
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()> {
        let (run_id, note) = (run_id.clone(), note.map(str::to_string));
        self.tx(move |tx, home| {
            Box::pin(async move {
                let now = home.clock.now();
                // Locked: notes are read, appended and written back.
                let mut run = load_run(tx, &home, &run_id, true).await?;
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
                if let Some(n) = &note {
                    run.notes.push(n.clone());
                    set.push(("notes", text(serde_json::to_string(&run.notes)?)));
                }
                let q = sql::update(
                    &DIALECT,
                    &t(&home, sql::RUNS),
                    &set,
                    &[("run_id", text(run_id.as_str()))],
                );
                exec(tx, &q).await?;
                log_transition(
                    tx,
                    &home,
                    &run_id,
                    None,
                    (from.as_str(), status.as_str()),
                    now,
                    note.as_deref().unwrap_or(""),
                )
                .await
            })
        })
        .await
    }

    async fn claim(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
    ) -> Result<Option<Claim>> {
        let (run_id, worker) = (run_id.clone(), worker.to_string());
        let only: Option<Vec<String>> = only.map(|ids| ids.iter().map(|b| b.0.clone()).collect());
        self.tx(move |tx, home| {
            Box::pin(async move {
                let now = home.clock.now();
                let batches = t(&home, sql::BATCHES);
                let mut found = None;
                for expired in [None, Some(Value::Timestamp(now))] {
                    // Locks the candidate; rows other workers are claiming
                    // right now are skipped.
                    let q = sql::claim_candidate_skip_locked(
                        &DIALECT,
                        &batches,
                        BATCH_COLUMNS,
                        run_id.as_str(),
                        only.as_deref(),
                        expired,
                    );
                    if let Some(r) = query(tx, &q).await?.first() {
                        found = Some(read_batch(r)?);
                        break;
                    }
                }
                let Some(b) = found else {
                    // Nothing to claim: a run that does not exist says so.
                    load_run(tx, &home, &run_id, false).await?;
                    return Ok(None);
                };
                let id = b.batch.id.clone();
                let from = b.state;
                let token = b.lease.as_ref().map_or(0, |l| l.token) + 1;
                let expires_at = now
                    .checked_add(SignedDuration::try_from(lease).unwrap_or(SignedDuration::MAX))
                    .unwrap_or(Timestamp::MAX);
                let attempt = b.attempts + 1;
                let q = sql::update(
                    &DIALECT,
                    &batches,
                    &[
                        ("state", text(BatchState::Running.as_str())),
                        ("attempts", Value::Int(i64::from(attempt))),
                        ("lease_worker", text(worker.as_str())),
                        ("lease_token", int(token)),
                        ("lease_expires", Value::Timestamp(expires_at)),
                        ("started_at", Value::Timestamp(now)),
                    ],
                    &[
                        ("run_id", text(run_id.as_str())),
                        ("batch_id", text(id.0.as_str())),
                        ("state", text(from.as_str())),
                        ("lease_token", token_value(b.lease.as_ref())),
                    ],
                );
                if exec(tx, &q).await? != 1 {
                    return Err(Error::transient(format!(
                        "batch {id} was claimed concurrently; retry"
                    )));
                }
                let reason = if from == BatchState::Running {
                    format!("lease taken over by {worker} (expired)")
                } else {
                    format!("claimed by {worker}")
                };
                log_transition(
                    tx,
                    &home,
                    &run_id,
                    Some(&id),
                    (from.as_str(), "running"),
                    now,
                    &reason,
                )
                .await?;
                Ok(Some(Claim {
                    batch: b.batch,
                    token,
                    attempt,
                }))
            })
        })
        .await
    }

    async fn transition(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: Option<u64>,
        to: BatchState,
        update: BatchUpdate,
    ) -> Result<()> {
        let (run_id, batch_id) = (run_id.clone(), batch_id.clone());
        self.tx(move |tx, home| {
            Box::pin(async move {
                transition_in(tx, &home, &run_id, &batch_id, token, to, update).await
            })
        })
        .await
    }

    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>> {
        let run_id = run_id.clone();
        self.tx(move |tx, home| {
            Box::pin(async move {
                load_run(tx, &home, &run_id, false).await?;
                let q = sql::select(
                    &DIALECT,
                    &t(&home, sql::BATCHES),
                    BATCH_COLUMNS,
                    &[("run_id", text(run_id.as_str()))],
                    &["seq"],
                );
                query(tx, &q).await?.iter().map(read_batch).collect()
            })
        })
        .await
    }

    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>> {
        let run_id = run_id.clone();
        self.tx(move |tx, home| {
            Box::pin(async move {
                load_run(tx, &home, &run_id, false).await?;
                let q = sql::select(
                    &DIALECT,
                    &t(&home, sql::TRANSITIONS),
                    &["batch_id", "from_state", "to_state", "at", "reason"],
                    &[("run_id", text(run_id.as_str()))],
                    &["id"],
                );
                query(tx, &q)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(Transition {
                            batch_id: get_text(r, 0)?.map(BatchId),
                            from: get_string(r, 1)?,
                            to: get_string(r, 2)?,
                            at: get_timestamp(r, 3)?
                                .ok_or_else(|| Error::engine("transition without time"))?,
                            reason: get_string(r, 4)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn record_asset(&self, asset: &Asset) -> Result<()> {
        let a = asset.clone();
        self.tx(move |tx, home| {
            Box::pin(async move {
                load_run(tx, &home, &a.run_id, false).await?;
                // Serializes concurrent recorders, so the check below sees
                // every committed asset and ids follow commit order.
                advisory_lock(tx, &numbering_key(&home)).await?;
                let assets = t(&home, sql::ASSETS);
                let q = sql::select(
                    &DIALECT,
                    &assets,
                    &["id"],
                    &[
                        ("run_id", text(a.run_id.as_str())),
                        ("kind", text(a.kind.as_str())),
                        ("table_name", text(a.table.to_string())),
                    ],
                    &[],
                );
                if !query(tx, &q).await?.is_empty() {
                    return Ok(());
                }
                let q = sql::insert_numbered(
                    &DIALECT,
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
                exec(tx, &q).await.map(|_| ())
            })
        })
        .await
    }

    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>> {
        let run_id = run_id.cloned();
        self.tx(move |tx, home| {
            Box::pin(async move {
                let cond: Vec<(&str, Value)> = match &run_id {
                    Some(r) => vec![("run_id", text(r.as_str()))],
                    None => Vec::new(),
                };
                let q = sql::select(
                    &DIALECT,
                    &t(&home, sql::ASSETS),
                    ASSET_COLUMNS,
                    &cond,
                    &["run_id", "id"],
                );
                query(tx, &q).await?.iter().map(read_asset).collect()
            })
        })
        .await
    }

    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()> {
        let (run_id, table) = (run_id.clone(), table.to_string());
        self.tx(move |tx, home| {
            Box::pin(async move {
                load_run(tx, &home, &run_id, false).await?;
                let q = sql::update(
                    &DIALECT,
                    &t(&home, sql::ASSETS),
                    &[("dropped_at", Value::Timestamp(at))],
                    &[
                        ("run_id", text(run_id.as_str())),
                        ("table_name", text(table.as_str())),
                    ],
                );
                exec(tx, &q).await.map(|_| ())
            })
        })
        .await
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
        let (run_id, name) = (run_id.clone(), name.to_string());
        self.tx(move |tx, home| {
            Box::pin(async move {
                load_run(tx, &home, &run_id, false).await?;
                let q = sql::select_document(&DIALECT, &home.schema, run_id.as_str(), &name);
                query(tx, &q)
                    .await?
                    .first()
                    .map(|r| {
                        let b = get_string(r, 0)?;
                        serde_json::from_str(&b).map_err(|e| Error::engine(e.to_string()))
                    })
                    .transpose()
            })
        })
        .await
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
