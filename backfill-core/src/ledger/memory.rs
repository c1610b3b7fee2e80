//! An in-memory ledger, for tests, single-process runs and custom
//! orchestrators.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::*;

#[derive(Debug, Default)]
struct State {
    locks: BTreeMap<TableRef, RunId>,
    runs: BTreeMap<RunId, RunData>,
    /// Instances declared dead ([`MemoryLedger::declare_dead`]).
    dead: std::collections::BTreeSet<String>,
}

#[derive(Debug)]
struct RunData {
    record: RunRecord,
    batches: Vec<BatchRecord>,
    transitions: Vec<Transition>,
    assets: Vec<Asset>,
    documents: BTreeMap<String, serde_json::Value>,
    steering: Steering,
}

/// The run's record, its row count summed from its batches.
fn record(run: &RunData) -> RunRecord {
    RunRecord {
        rows_affected: run.batches.iter().map(|b| b.rows_written).sum(),
        ..run.record.clone()
    }
}

/// A ledger held in memory. Clones share state and instance.
///
/// Liveness is modelled for tests of crash recovery: each ledger is an
/// instance (a "process"); [`MemoryLedger::other_instance`] gives another
/// instance on the same state, and [`MemoryLedger::declare_dead`] kills
/// one, so that its running batches are taken back at once, as a dead
/// process's are on DuckDB and PostgreSQL.
///
/// ```
/// # tokio_test_shim::block_on(async {
/// use backfill_core::ledger::{Ledger, MemoryLedger};
/// use backfill_core::{RunId, TableRef};
/// let ledger = MemoryLedger::new();
/// let t = TableRef::parse("facts").unwrap();
/// ledger.lock_target(&t, &RunId::new("a").unwrap()).await.unwrap();
/// assert!(ledger.lock_target(&t, &RunId::new("b").unwrap()).await.is_err());
/// # });
/// # mod tokio_test_shim { pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #   tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) } }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryLedger {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    instance: String,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLedger {
    /// An empty ledger on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty ledger on the given clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryLedger {
            state: Arc::new(Mutex::new(State::default())),
            clock,
            instance: "memory:1".into(),
        }
    }

    /// Another instance (as if another process) on the same state.
    pub fn other_instance(&self, instance: &str) -> Self {
        MemoryLedger {
            instance: instance.to_string(),
            ..self.clone()
        }
    }

    /// Declares `instance` dead, as a killed process is: its running
    /// batches can be claimed at once.
    pub fn declare_dead(&self, instance: &str) {
        self.lock().dead.insert(instance.to_string());
    }

    fn is_dead(st: &State, lease: &Lease) -> bool {
        st.dead.contains(&lease.instance)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn batch_mut<'a>(
    batches: &'a mut [BatchRecord],
    run_id: &RunId,
    batch_id: &BatchId,
) -> Result<&'a mut BatchRecord> {
    batches
        .iter_mut()
        .find(|b| &b.batch.id == batch_id)
        .ok_or_else(|| Error::InvalidPlan(format!("no batch {batch_id} in run {run_id}")))
}

fn run_mut<'a>(st: &'a mut State, run_id: &RunId) -> Result<&'a mut RunData> {
    st.runs
        .get_mut(run_id)
        .ok_or_else(|| Error::RunNotFound(run_id.to_string()))
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let mut st = self.lock();
        match st.locks.get(target) {
            Some(holder) if holder != run => Err(Error::TargetLocked {
                target: target.to_string(),
                holder: holder.to_string(),
            }),
            _ => {
                st.locks.insert(target.clone(), run.clone());
                Ok(())
            }
        }
    }

    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        let mut st = self.lock();
        if st.locks.get(target) == Some(run) {
            st.locks.remove(target);
        }
        Ok(())
    }

    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart> {
        let mut st = self.lock();
        if let Some(existing) = st.runs.get(&run.run_id) {
            if existing.record.fingerprint != run.fingerprint {
                return Err(Error::FingerprintMismatch {
                    run: run.run_id.to_string(),
                    stored: existing.record.fingerprint.clone(),
                    given: run.fingerprint.clone(),
                    changed: Vec::new(),
                });
            }
            return Ok(RunStart::Resumed);
        }
        let now = self.clock.now();
        let records = batches
            .iter()
            .map(|b| BatchRecord {
                batch: b.clone(),
                state: BatchState::Pending,
                attempts: 0,
                lease: None,
                rows_before: 0,
                rows_written: 0,
                started_at: None,
                finished_at: None,
                error: None,
            })
            .collect();
        st.runs.insert(
            run.run_id.clone(),
            RunData {
                record: run.clone(),
                batches: records,
                transitions: vec![Transition {
                    batch_id: None,
                    from: "none".into(),
                    to: run.status.as_str().into(),
                    at: now,
                    reason: "run planned".into(),
                }],
                assets: Vec::new(),
                documents: BTreeMap::new(),
                steering: Steering::Run,
            },
        );
        Ok(RunStart::New)
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRecord> {
        let mut st = self.lock();
        Ok(record(run_mut(&mut st, run_id)?))
    }

    async fn runs_on(&self, target: &TableRef) -> Result<Vec<RunRecord>> {
        let st = self.lock();
        let mut runs: Vec<RunRecord> = st
            .runs
            .values()
            .filter(|r| &r.record.target == target)
            .map(record)
            .collect();
        runs.sort_by(|a, b| {
            (a.started_at, a.run_id.as_str()).cmp(&(b.started_at, b.run_id.as_str()))
        });
        Ok(runs)
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        let from = run.record.status;
        run.record.status = status;
        if matches!(
            status,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::RolledBack
        ) {
            run.record.finished_at = Some(now);
        }
        if let Some(n) = note {
            run.record.notes.push(n.to_string());
        }
        run.transitions.push(Transition {
            batch_id: None,
            from: from.as_str().into(),
            to: status.as_str().into(),
            at: now,
            reason: note.unwrap_or("").to_string(),
        });
        Ok(())
    }

    async fn claim(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
    ) -> Result<Option<Claim>> {
        let now = self.clock.now();
        let mut st = self.lock();
        let dead = st.dead.clone();
        let run = run_mut(&mut st, run_id)?;
        if run.steering != Steering::Run {
            return Ok(None);
        }
        let allowed = |b: &BatchRecord| only.is_none_or(|ids| ids.contains(&b.batch.id));
        let gone = |l: &Lease| dead.contains(&l.instance);
        let pick = run
            .batches
            .iter()
            .position(|b| allowed(b) && b.state == BatchState::Pending)
            .or_else(|| {
                run.batches.iter().position(|b| {
                    allowed(b)
                        && b.state == BatchState::Running
                        && b.lease
                            .as_ref()
                            .is_some_and(|l| l.expires_at <= now || gone(l))
                })
            });
        let Some(i) = pick else { return Ok(None) };
        let b = &mut run.batches[i];
        let from = b.state;
        let previous = b.lease.clone();
        let token = previous.as_ref().map_or(0, |l| l.token) + 1;
        b.state = BatchState::Running;
        b.attempts += 1;
        b.lease = Some(Lease {
            worker: worker.to_string(),
            token,
            expires_at: lease_expiry(now, lease),
            instance: self.instance.clone(),
        });
        b.started_at = Some(now);
        let claim = Claim {
            batch: b.batch.clone(),
            token,
            attempt: b.attempts,
        };
        let was_dead = previous.as_ref().is_some_and(gone);
        let reason = claim_reason(from, worker, previous.as_ref(), was_dead, now);
        run.transitions.push(Transition {
            batch_id: Some(claim.batch.id.clone()),
            from: from.as_str().into(),
            to: "running".into(),
            at: now,
            reason,
        });
        Ok(Some(claim))
    }

    async fn steer(&self, run_id: &RunId, to: Steering, who: &str) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        let from = run.steering;
        run.steering = to;
        run.transitions.push(Transition {
            batch_id: None,
            from: steering_state(from),
            to: steering_state(to),
            at: now,
            reason: format!("steered by {who}"),
        });
        Ok(())
    }

    async fn steering(&self, run_id: &RunId) -> Result<Steering> {
        let mut st = self.lock();
        Ok(run_mut(&mut st, run_id)?.steering)
    }

    async fn renew(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: u64,
        lease: Duration,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        let b = batch_mut(&mut run.batches, run_id, batch_id)?;
        check_held(b, token)?;
        if let Some(l) = b.lease.as_mut() {
            l.expires_at = lease_expiry(now, lease);
        }
        Ok(())
    }

    async fn release(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        who: &str,
        why: &str,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        let b = batch_mut(&mut run.batches, run_id, batch_id)?;
        let from = b.state;
        check_release(b, who, why)?;
        b.state = BatchState::Pending;
        b.attempts = 0;
        run.transitions.push(Transition {
            batch_id: Some(batch_id.clone()),
            from: from.as_str().into(),
            to: BatchState::Pending.as_str().into(),
            at: now,
            reason: release_reason(who, why),
        });
        Ok(())
    }

    async fn liveness(&self, lease: &Lease) -> Result<Liveness> {
        Ok(if Self::is_dead(&self.lock(), lease) {
            Liveness::Dead
        } else {
            Liveness::Alive
        })
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
        let now = self.clock.now();
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        let b = batch_mut(&mut run.batches, run_id, batch_id)?;
        if let Some(t) = token {
            check_held(b, t)?;
        }
        check_move(b, to)?;
        let from = b.state;
        b.state = to;
        if gives_claim_back(from, to) {
            b.attempts = b.attempts.saturating_sub(1);
        }
        if let Some(r) = update.rows_before {
            b.rows_before = r;
        }
        if let Some(r) = update.rows_written {
            b.rows_written = r;
        }
        if matches!(to, BatchState::Written | BatchState::Failed) {
            b.finished_at = Some(now);
        }
        if to == BatchState::Failed {
            b.error = update.error.clone();
        }
        run.transitions.push(Transition {
            batch_id: Some(batch_id.clone()),
            from: from.as_str().into(),
            to: to.as_str().into(),
            at: now,
            reason: update.reason,
        });
        Ok(())
    }

    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>> {
        let mut st = self.lock();
        Ok(run_mut(&mut st, run_id)?.batches.clone())
    }

    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>> {
        let mut st = self.lock();
        Ok(run_mut(&mut st, run_id)?.transitions.clone())
    }

    async fn record_asset(&self, asset: &Asset) -> Result<()> {
        let mut st = self.lock();
        let run = run_mut(&mut st, &asset.run_id)?;
        if !run
            .assets
            .iter()
            .any(|a| a.kind == asset.kind && a.table == asset.table)
        {
            run.assets.push(asset.clone());
        }
        Ok(())
    }

    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>> {
        let st = self.lock();
        Ok(st
            .runs
            .iter()
            .filter(|(id, _)| run_id.is_none_or(|r| r == *id))
            .flat_map(|(_, r)| r.assets.iter().cloned())
            .collect())
    }

    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()> {
        let mut st = self.lock();
        let run = run_mut(&mut st, run_id)?;
        for a in run.assets.iter_mut().filter(|a| &a.table == table) {
            a.dropped_at = Some(at);
        }
        Ok(())
    }

    async fn put_document(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        let mut st = self.lock();
        run_mut(&mut st, run_id)?
            .documents
            .insert(name.to_string(), body.clone());
        Ok(())
    }

    async fn put_document_if_absent(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<bool> {
        let mut st = self.lock();
        let docs = &mut run_mut(&mut st, run_id)?.documents;
        if docs.contains_key(name) {
            return Ok(false);
        }
        docs.insert(name.to_string(), body.clone());
        Ok(true)
    }

    async fn document(&self, run_id: &RunId, name: &str) -> Result<Option<serde_json::Value>> {
        let mut st = self.lock();
        Ok(run_mut(&mut st, run_id)?.documents.get(name).cloned())
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
