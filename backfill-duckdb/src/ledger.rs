//! [`DuckDbLedger`]: the [`Ledger`] on DuckDB tables, in the same database
//! as the data, so a batch's write and its ledger mark commit together.

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
use duckdb::{Connection, Row};

use crate::db::{
    exec, exec_all, get_i64, get_string, get_text, get_timestamp, in_tx, query, Db, LedgerHome,
    DIALECT,
};

/// The schema a ledger uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "backfill";

/// A ledger kept in DuckDB tables (`runs`, `batches`, `transitions`,
/// `locks`, `assets`) in a schema of the database it shares with a
/// [`crate::DuckDbWarehouse`] (made with
/// [`crate::DuckDbWarehouse::ledger`]).
///
/// Semantics mirror [`backfill_core::MemoryLedger`] exactly: claim order
/// (pending batches in plan order, then running batches whose lease
/// expired), fencing tokens that grow with every claim, the state machine
/// of [`BatchState::can_move_to`], and `rows_affected` accounting. Every
/// operation runs in one transaction. [`Ledger::tx_mark`] returns a mark
/// the warehouse commits with the batch's data, so data and ledger never
/// disagree. Timestamps are stored as `TIMESTAMPTZ` (microseconds).
#[derive(Clone)]
pub struct DuckDbLedger {
    db: Db,
    home: LedgerHome,
    id: String,
}

impl fmt::Debug for DuckDbLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuckDbLedger")
            .field("id", &self.id)
            .field("schema", &self.home.schema)
            .finish()
    }
}

impl DuckDbLedger {
    pub(crate) async fn create(
        db: Db,
        schema: Ident,
        clock: Arc<dyn Clock>,
    ) -> Result<DuckDbLedger> {
        let ddl = sql::create(&DIALECT, &schema);
        db.run(move |c| in_tx(c, |c| exec_all(c, &ddl))).await?;
        let id = format!("{}:{}", db.id(), schema);
        let home = LedgerHome { schema, clock };
        db.register_ledger(&id, home.clone());
        Ok(DuckDbLedger { db, home, id })
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

    /// The id carried by this ledger's [`TxMark`]s.
    pub fn id(&self) -> &str {
        &self.id
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &LedgerHome) -> Result<T> + Send + 'static,
    {
        let home = self.home.clone();
        self.db.run(move |c| in_tx(c, |c| f(c, &home))).await
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
        self.run(move |c, home| {
            load_run(c, home, &run_id)?;
            let (delete, insert) =
                sql::store_document(&DIALECT, &home.schema, run_id.as_str(), &name, &body, now);
            if replace {
                exec(c, &delete)?;
            }
            exec(c, &insert).map(|n| n > 0)
        })
        .await
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

fn read_run(row: &Row<'_>) -> Result<RunRecord> {
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

fn read_batch(row: &Row<'_>) -> Result<BatchRecord> {
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

fn load_run(c: &Connection, home: &LedgerHome, run_id: &RunId) -> Result<RunRecord> {
    let q = sql::select(
        &DIALECT,
        &t(home, sql::RUNS),
        RUN_COLUMNS,
        &[("run_id", text(run_id.as_str()))],
        &[],
    );
    query(c, &q, read_run)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::RunNotFound(run_id.to_string()))
}

fn load_batch(
    c: &Connection,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: &BatchId,
) -> Result<Option<BatchRecord>> {
    let q = sql::select(
        &DIALECT,
        &t(home, sql::BATCHES),
        BATCH_COLUMNS,
        &[
            ("run_id", text(run_id.as_str())),
            ("batch_id", text(batch_id.0.as_str())),
        ],
        &[],
    );
    Ok(query(c, &q, read_batch)?.into_iter().next())
}

fn log_transition(
    c: &Connection,
    home: &LedgerHome,
    run_id: &RunId,
    batch_id: Option<&BatchId>,
    (from, to): (&str, &str),
    at: Timestamp,
    reason: &str,
) -> Result<()> {
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
    exec(c, &q).map(|_| ())
}

/// The lease token as stored.
fn token_value(lease: Option<&Lease>) -> Value {
    lease.map_or(Value::Null, |l| int(l.token))
}

/// Moves a batch, as [`backfill_core::MemoryLedger`] does; runs inside the
/// caller's transaction (the ledger's own, or a warehouse write's).
pub(crate) fn transition_in(
    c: &Connection,
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
            && exec(c, &fenced(BatchState::Running, int(tok)))? == 1
        {
            return transitioned(
                c,
                home,
                run_id,
                batch_id,
                (BatchState::Running, to),
                &update,
                now,
            );
        }
    }
    load_run(c, home, run_id)?;
    let b = load_batch(c, home, run_id, batch_id)?
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
    if exec(c, &fenced(b.state, token_value(b.lease.as_ref())))? != 1 {
        return Err(Error::transient(format!(
            "batch {batch_id} changed concurrently; retry"
        )));
    }
    transitioned(c, home, run_id, batch_id, (b.state, to), &update, now)
}

/// What follows a batch's move: the run's row count, and the log entry.
fn transitioned(
    c: &Connection,
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
        exec(c, &q)?;
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
}

/// Marks a batch written inside a warehouse write's transaction, fenced by
/// the mark's token ([`Error::LeaseLost`] when it is stale, so the caller
/// rolls the data back too).
pub(crate) fn mark_written(
    c: &Connection,
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
        BatchUpdate {
            rows_before: Some(before),
            rows_written: Some(written),
            ..BatchUpdate::reason("written")
        },
    )
}

#[async_trait]
impl Ledger for DuckDbLedger {
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (target, run) = (target.to_string(), run.clone());
        self.run(move |c, home| {
            let q = sql::select(
                &DIALECT,
                &t(home, sql::LOCKS),
                &["run_id"],
                &[("target", text(target.as_str()))],
                &[],
            );
            match query(c, &q, |r| get_string(r, 0))?.into_iter().next() {
                Some(holder) if holder != run.as_str() => {
                    Err(Error::TargetLocked { target, holder })
                }
                Some(_) => Ok(()),
                None => {
                    let q = sql::insert(
                        &DIALECT,
                        &t(home, sql::LOCKS),
                        &["target", "run_id", "locked_at"],
                        &[
                            text(target.as_str()),
                            text(run.as_str()),
                            Value::Timestamp(home.clock.now()),
                        ],
                    );
                    exec(c, &q).map(|_| ())
                }
            }
        })
        .await
    }

    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let (target, run) = (target.to_string(), run.clone());
        self.run(move |c, home| {
            let q = sql::delete(
                &DIALECT,
                &t(home, sql::LOCKS),
                &[
                    ("target", text(target.as_str())),
                    ("run_id", text(run.as_str())),
                ],
            );
            exec(c, &q).map(|_| ())
        })
        .await
    }

    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart> {
        let (run, batches) = (run.clone(), batches.to_vec());
        self.run(move |c, home| {
            let q = sql::select(
                &DIALECT,
                &t(home, sql::RUNS),
                &["fingerprint"],
                &[("run_id", text(run.run_id.as_str()))],
                &[],
            );
            if let Some(stored) = query(c, &q, |r| get_string(r, 0))?.into_iter().next() {
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
                &t(home, sql::RUNS),
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
            exec(c, &q)?;
            let mut columns = vec!["run_id"];
            columns.extend_from_slice(BATCH_COLUMNS);
            for b in &batches {
                let opt_json = |v: &Option<Value>| -> Result<Value> {
                    Ok(match v {
                        Some(v) => text(serde_json::to_string(v)?),
                        None => Value::Null,
                    })
                };
                let q = sql::insert(
                    &DIALECT,
                    &t(home, sql::BATCHES),
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
                exec(c, &q)?;
            }
            log_transition(
                c,
                home,
                &run.run_id,
                None,
                ("none", run.status.as_str()),
                now,
                "run planned",
            )?;
            Ok(RunStart::New)
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRecord> {
        let run_id = run_id.clone();
        self.run(move |c, home| load_run(c, home, &run_id)).await
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()> {
        let (run_id, note) = (run_id.clone(), note.map(str::to_string));
        self.run(move |c, home| {
            let now = home.clock.now();
            let mut run = load_run(c, home, &run_id)?;
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
                &t(home, sql::RUNS),
                &set,
                &[("run_id", text(run_id.as_str()))],
            );
            exec(c, &q)?;
            log_transition(
                c,
                home,
                &run_id,
                None,
                (from.as_str(), status.as_str()),
                now,
                note.as_deref().unwrap_or(""),
            )
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
        self.run(move |c, home| {
            let now = home.clock.now();
            let batches = t(home, sql::BATCHES);
            let pick = |expired: Option<Value>| -> Result<Option<BatchRecord>> {
                let q = sql::claim_candidate(
                    &DIALECT,
                    &batches,
                    BATCH_COLUMNS,
                    run_id.as_str(),
                    only.as_deref(),
                    expired,
                );
                Ok(query(c, &q, read_batch)?.into_iter().next())
            };
            let b = match pick(None)? {
                Some(b) => b,
                None => match pick(Some(Value::Timestamp(now)))? {
                    Some(b) => b,
                    None => {
                        // Nothing to claim: a run that does not exist
                        // says so.
                        load_run(c, home, &run_id)?;
                        return Ok(None);
                    }
                },
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
            if exec(c, &q)? != 1 {
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
                c,
                home,
                &run_id,
                Some(&id),
                (from.as_str(), "running"),
                now,
                &reason,
            )?;
            Ok(Some(Claim {
                batch: b.batch,
                token,
                attempt,
            }))
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
        self.run(move |c, home| transition_in(c, home, &run_id, &batch_id, token, to, update))
            .await
    }

    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>> {
        let run_id = run_id.clone();
        self.run(move |c, home| {
            load_run(c, home, &run_id)?;
            let q = sql::select(
                &DIALECT,
                &t(home, sql::BATCHES),
                BATCH_COLUMNS,
                &[("run_id", text(run_id.as_str()))],
                &["seq"],
            );
            query(c, &q, read_batch)
        })
        .await
    }

    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>> {
        let run_id = run_id.clone();
        self.run(move |c, home| {
            load_run(c, home, &run_id)?;
            let q = sql::select(
                &DIALECT,
                &t(home, sql::TRANSITIONS),
                &["batch_id", "from_state", "to_state", "at", "reason"],
                &[("run_id", text(run_id.as_str()))],
                &["id"],
            );
            query(c, &q, |r| {
                Ok(Transition {
                    batch_id: get_text(r, 0)?.map(BatchId),
                    from: get_string(r, 1)?,
                    to: get_string(r, 2)?,
                    at: get_timestamp(r, 3)?
                        .ok_or_else(|| Error::engine("transition without time"))?,
                    reason: get_string(r, 4)?,
                })
            })
        })
        .await
    }

    async fn record_asset(&self, asset: &Asset) -> Result<()> {
        let a = asset.clone();
        self.run(move |c, home| {
            load_run(c, home, &a.run_id)?;
            let assets = t(home, sql::ASSETS);
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
            if !query(c, &q, |_| Ok(()))?.is_empty() {
                return Ok(());
            }
            let q = sql::insert_numbered(
                &DIALECT,
                &assets,
                &[
                    "run_id",
                    "kind",
                    "table_name",
                    "owner",
                    "created_at",
                    "expires_at",
                    "dropped_at",
                ],
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
            exec(c, &q).map(|_| ())
        })
        .await
    }

    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>> {
        let run_id = run_id.cloned();
        self.run(move |c, home| {
            let cond: Vec<(&str, Value)> = match &run_id {
                Some(r) => vec![("run_id", text(r.as_str()))],
                None => Vec::new(),
            };
            let q = sql::select(
                &DIALECT,
                &t(home, sql::ASSETS),
                &[
                    "run_id",
                    "kind",
                    "table_name",
                    "owner",
                    "created_at",
                    "expires_at",
                    "dropped_at",
                ],
                &cond,
                &["run_id", "id"],
            );
            query(c, &q, |r| {
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
            })
        })
        .await
    }

    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()> {
        let (run_id, table) = (run_id.clone(), table.to_string());
        self.run(move |c, home| {
            load_run(c, home, &run_id)?;
            let q = sql::update(
                &DIALECT,
                &t(home, sql::ASSETS),
                &[("dropped_at", Value::Timestamp(at))],
                &[
                    ("run_id", text(run_id.as_str())),
                    ("table_name", text(table.as_str())),
                ],
            );
            exec(c, &q).map(|_| ())
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
        self.run(move |c, home| {
            load_run(c, home, &run_id)?;
            let q = sql::select_document(&DIALECT, &home.schema, run_id.as_str(), &name);
            query(c, &q, |r| get_string(r, 0))?
                .first()
                .map(|b| serde_json::from_str(b).map_err(|e| Error::engine(e.to_string())))
                .transpose()
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
