//! The ledger: the source of truth for a run.
//!
//! A run's plan is written to the ledger before the first write. Each batch
//! moves through `pending -> running -> written -> validated`, with
//! `failed` and `rolled_back` branches, and every transition is logged.
//! Resume continues the stored plan; a different plan fingerprint is
//! refused.

mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use memory::MemoryLedger;

use crate::error::{Error, Result};
use crate::plan::{Batch, BatchId};
use crate::TableRef;

/// A validated run id: 1 to 32 lowercase letters, digits or underscores,
/// so it can be part of table names.
///
/// ```
/// use backfill_core::RunId;
/// assert!(RunId::new("refunds_2026_11").is_ok());
/// assert!(RunId::new("Robert'); DROP").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Validates a run id.
    pub fn new(s: impl Into<String>) -> Result<RunId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(RunId(s))
        } else {
            Err(Error::InvalidIdentifier {
                ident: s,
                reason: "a run id is 1 to 32 of a-z, 0-9 and _".into(),
            })
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RunId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        RunId::new(s)
    }
}

impl From<RunId> for String {
    fn from(r: RunId) -> String {
        r.0
    }
}

/// State of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Batches are being written.
    Running,
    /// Stopped at a batch boundary by the operator or a critical signal.
    Paused,
    /// Every batch is written (and validated where checks ran).
    Completed,
    /// A batch or a blocking validation failed.
    Failed,
    /// Cancelled by the operator.
    Cancelled,
    /// The new data was exposed to readers (staging swap, view moved).
    CutOver,
    /// Restored to the prior state.
    RolledBack,
}

impl RunStatus {
    /// The status as stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::CutOver => "cut_over",
            RunStatus::RolledBack => "rolled_back",
        }
    }

    /// Parses stored text.
    pub fn parse(s: &str) -> Result<RunStatus> {
        Ok(match s {
            "running" => RunStatus::Running,
            "paused" => RunStatus::Paused,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "cut_over" => RunStatus::CutOver,
            "rolled_back" => RunStatus::RolledBack,
            other => return Err(Error::Serde(format!("unknown run status {other:?}"))),
        })
    }
}

/// State of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Not started.
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Written and committed.
    Written,
    /// Written and passed its per-batch checks.
    Validated,
    /// Failed; requeued on resume.
    Failed,
    /// Restored from its pre-image.
    RolledBack,
}

impl BatchState {
    /// The state as stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Running => "running",
            BatchState::Written => "written",
            BatchState::Validated => "validated",
            BatchState::Failed => "failed",
            BatchState::RolledBack => "rolled_back",
        }
    }

    /// Parses stored text.
    pub fn parse(s: &str) -> Result<BatchState> {
        Ok(match s {
            "pending" => BatchState::Pending,
            "running" => BatchState::Running,
            "written" => BatchState::Written,
            "validated" => BatchState::Validated,
            "failed" => BatchState::Failed,
            "rolled_back" => BatchState::RolledBack,
            other => return Err(Error::Serde(format!("unknown batch state {other:?}"))),
        })
    }

    /// Whether the batch's data is in place.
    pub fn is_done(self) -> bool {
        matches!(self, BatchState::Written | BatchState::Validated)
    }

    /// Whether the state machine allows `self -> to`.
    ///
    /// `running -> running` is a lease takeover after expiry or the
    /// holder's death; `failed -> pending` is a requeue on resume;
    /// `running -> pending` is an operator's release of a claim.
    pub fn can_move_to(self, to: BatchState) -> bool {
        use BatchState::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Running)
                | (Running, Pending)
                | (Running, Written)
                | (Running, Failed)
                | (Written, Validated)
                | (Written, Failed)
                | (Written, RolledBack)
                | (Validated, RolledBack)
                | (Failed, Pending)
                | (Failed, RolledBack)
        )
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator asked of a run, from any process: every worker reads
/// it at each batch boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Steering {
    /// Go on (and what `resume` sets).
    #[default]
    Run,
    /// Stop claiming at the next batch boundary; the run call returns
    /// `paused`, and a later `run` after a resume continues.
    Pause,
    /// Stop at the next batch boundary; the run call returns `cancelled`.
    Cancel,
}

impl Steering {
    /// As stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Steering::Run => "run",
            Steering::Pause => "pause",
            Steering::Cancel => "cancel",
        }
    }

    /// Parses stored text (none is [`Steering::Run`]).
    pub fn parse(s: Option<&str>) -> Result<Steering> {
        Ok(match s {
            None | Some("run") => Steering::Run,
            Some("pause") => Steering::Pause,
            Some("cancel") => Steering::Cancel,
            Some(other) => return Err(Error::Serde(format!("unknown steering {other:?}"))),
        })
    }
}

/// A run's header in the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: RunId,
    /// The target table (the lock key).
    pub target: TableRef,
    /// Fingerprint of plan, strategy and source.
    pub fingerprint: String,
    /// Version of the code that computes the source.
    pub code_version: String,
    /// Parameters, as JSON.
    pub parameters: serde_json::Value,
    /// Who runs it.
    pub operator: String,
    /// Status.
    pub status: RunStatus,
    /// When the run was first started.
    pub started_at: Timestamp,
    /// When the run last finished (completed, failed, cancelled).
    pub finished_at: Option<Timestamp>,
    /// Rows the run's batches wrote, as they stand (each batch's last
    /// write), summed from the batches when the run is read: no batch
    /// updates the run's own row.
    pub rows_affected: u64,
    /// Operator notes, appended over time.
    pub notes: Vec<String>,
}

/// A batch's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub worker: String,
    /// Fencing token: grows with every claim of the batch.
    pub token: u64,
    /// When the lease expires unless it is renewed.
    pub expires_at: Timestamp,
    /// The process instance of the worker ([`Ledger::instance`]), by
    /// which a ledger tells a dead holder from a live one.
    #[serde(default)]
    pub instance: String,
}

/// Whether the holder of a lease is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The holder is alive: its lease stands, renewed while it works.
    Alive,
    /// The holder is gone (its process died): its batch is taken back at
    /// once, without waiting for the lease to expire.
    Dead,
    /// The ledger cannot tell: the lease stands until it expires.
    Unknown,
}

/// A batch's row in the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The batch, as planned.
    pub batch: Batch,
    /// Current state.
    pub state: BatchState,
    /// How many times it was claimed.
    pub attempts: u32,
    /// The current or last lease.
    pub lease: Option<Lease>,
    /// Rows in the slice before the write.
    pub rows_before: u64,
    /// Rows written.
    pub rows_written: u64,
    /// When the last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it was last written or failed.
    pub finished_at: Option<Timestamp>,
    /// The last error, if any.
    pub error: Option<String>,
}

/// A logged state change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The batch (`None` for run-level changes).
    pub batch_id: Option<BatchId>,
    /// Previous state (text).
    pub from: String,
    /// New state (text).
    pub to: String,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// A claimed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The batch.
    pub batch: Batch,
    /// The fencing token of this claim.
    pub token: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// What to record with a transition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchUpdate {
    /// Rows in the slice before the write.
    pub rows_before: Option<u64>,
    /// Rows written.
    pub rows_written: Option<u64>,
    /// Error text, for `failed`.
    pub error: Option<String>,
    /// Why the transition happened.
    pub reason: String,
}

impl BatchUpdate {
    /// An update with just a reason.
    pub fn reason(reason: impl Into<String>) -> Self {
        BatchUpdate {
            reason: reason.into(),
            ..Default::default()
        }
    }
}

/// What `begin_run` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStart {
    /// A new run was recorded with its plan.
    New,
    /// The run existed with the same fingerprint; its plan continues.
    Resumed,
}

/// The kind of a temporary or kept asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// Pre-image rows, per batch.
    PreImage,
    /// Keys touched per batch by a merge.
    KeyLog,
    /// A staging table built beside the target.
    Stage,
    /// The old table kept after a swap.
    KeptOld,
    /// A new parallel version.
    Version,
    /// The source evaluated once and staged.
    StagedSource,
}

impl AssetKind {
    /// As stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::PreImage => "pre_image",
            AssetKind::KeyLog => "key_log",
            AssetKind::Stage => "stage",
            AssetKind::KeptOld => "kept_old",
            AssetKind::Version => "version",
            AssetKind::StagedSource => "staged_source",
        }
    }

    /// Parses stored text.
    pub fn parse(s: &str) -> Result<AssetKind> {
        Ok(match s {
            "pre_image" => AssetKind::PreImage,
            "key_log" => AssetKind::KeyLog,
            "stage" => AssetKind::Stage,
            "kept_old" => AssetKind::KeptOld,
            "version" => AssetKind::Version,
            "staged_source" => AssetKind::StagedSource,
            other => return Err(Error::Serde(format!("unknown asset kind {other:?}"))),
        })
    }
}

/// A table this library created, with an owner and an expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    /// The run that created it.
    pub run_id: RunId,
    /// What it is.
    pub kind: AssetKind,
    /// The table.
    pub table: TableRef,
    /// Who owns it.
    pub owner: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it may be dropped.
    pub expires_at: Timestamp,
    /// When it was dropped, if it was.
    pub dropped_at: Option<Timestamp>,
}

/// A ledger update that an engine commits in the same transaction as a
/// batch's data write, so data and ledger can never disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxMark {
    /// Identifies the ledger instance (the adapter checks it is its own).
    pub ledger: String,
    /// The run.
    pub run_id: RunId,
    /// The batch.
    pub batch_id: BatchId,
    /// The fencing token the write must still hold.
    pub token: u64,
}

/// The schema a SQL ledger uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "backfill";

/// A source of the current time; tests use [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: Timestamp) -> Self {
        ManualClock(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let d = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
        *t = t.checked_add(d).unwrap_or(*t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When a lease taken at `now` for `lease` expires.
pub fn lease_expiry(now: Timestamp, lease: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(lease).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Why a batch was claimed by `worker`, for the log: `from` its state,
/// and for a takeover the lease it had and whether its holder was dead.
pub fn claim_reason(
    from: BatchState,
    worker: &str,
    previous: Option<&Lease>,
    dead: bool,
    now: Timestamp,
) -> String {
    match previous {
        Some(l) if from == BatchState::Running && dead => format!(
            "taken over by {worker}: its holder {} (instance {}) is dead",
            l.worker, l.instance
        ),
        Some(l) if from == BatchState::Running && l.expires_at <= now => {
            format!("lease taken over by {worker} (expired) from {}", l.worker)
        }
        _ if from == BatchState::Running => format!("lease taken over by {worker}"),
        _ => format!("claimed by {worker}"),
    }
}

/// The fencing check every ledger makes: the batch is still `running`
/// under the claim with `token`, or the caller lost it
/// ([`Error::LeaseLost`]).
pub fn check_held(b: &BatchRecord, token: u64) -> Result<()> {
    let held = b.state == BatchState::Running && b.lease.as_ref().is_some_and(|l| l.token == token);
    if held {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            batch: b.batch.id.to_string(),
            token,
        })
    }
}

/// The state machine's check: `b` may move to `to`, or
/// [`Error::InvalidTransition`].
pub fn check_move(b: &BatchRecord, to: BatchState) -> Result<()> {
    if b.state.can_move_to(to) {
        Ok(())
    } else {
        Err(Error::InvalidTransition {
            batch: b.batch.id.to_string(),
            from: b.state.to_string(),
            to: to.to_string(),
        })
    }
}

/// How a steering change reads in the transition log.
pub fn steering_state(s: Steering) -> String {
    format!("steering:{}", s.as_str())
}

/// What an operator's release may take back: a `running` batch (whose
/// holder will not finish) or a `failed` one; `who` and `why` must say
/// something, since the log keeps them.
pub fn check_release(b: &BatchRecord, who: &str, why: &str) -> Result<()> {
    if who.trim().is_empty() || why.trim().is_empty() {
        return Err(Error::NotAllowed(format!(
            "releasing batch {} needs who releases it and why",
            b.batch.id
        )));
    }
    if !matches!(b.state, BatchState::Running | BatchState::Failed) {
        return Err(Error::InvalidTransition {
            batch: b.batch.id.to_string(),
            from: b.state.to_string(),
            to: BatchState::Pending.to_string(),
        });
    }
    Ok(())
}

/// Whether a move hands a claim back unused (`running` to `pending`): the
/// batch was claimed but not written because another batch of its commit
/// group stopped the run, so the claim's attempt is not counted.
pub fn gives_claim_back(from: BatchState, to: BatchState) -> bool {
    from == BatchState::Running && to == BatchState::Pending
}

/// The log entry of an operator's release.
pub fn release_reason(who: &str, why: &str) -> String {
    format!("released by {who}: {why}")
}

/// Batches that were never written: the gaps of a run.
pub fn gaps(batches: &[BatchRecord]) -> Vec<BatchId> {
    batches
        .iter()
        .filter(|b| !b.state.is_done())
        .map(|b| b.batch.id.clone())
        .collect()
}

/// The ledger trait: an in-memory implementation lives here, and each
/// adapter provides one in its engine.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Takes the lock on `target` for `run`. Refused with
    /// [`Error::TargetLocked`] while another run holds it; taking it again
    /// for the same run succeeds.
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()>;

    /// Releases the lock if `run` holds it.
    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()>;

    /// Records a new run with its plan, or finds an existing run with the
    /// same fingerprint ([`RunStart::Resumed`]). A different fingerprint
    /// is [`Error::FingerprintMismatch`].
    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart>;

    /// The run's header.
    async fn run(&self, run_id: &RunId) -> Result<RunRecord>;

    /// Every run recorded on `target` (as the runner records it: the
    /// table the engine resolved its name to), oldest first.
    async fn runs_on(&self, target: &TableRef) -> Result<Vec<RunRecord>>;

    /// Sets the run's status, appending a note if given.
    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()>;

    /// Claims the next claimable batch (pending in plan order, then running
    /// with an expired lease or a dead holder), restricted to `only` if
    /// given. The claim moves it to `running`, counts an attempt, issues a
    /// new fencing token and records this instance with the lease.
    async fn claim(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
    ) -> Result<Option<Claim>>;

    /// Claims up to `n` batches for one commit group, in the order
    /// [`Ledger::claim`] would take them one by one, each with its own
    /// fencing token; fewer (or none) when fewer are claimable. The
    /// default claims them one by one; a ledger in an engine claims them
    /// in one transaction.
    async fn claim_many(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
        n: usize,
    ) -> Result<Vec<Claim>> {
        let mut claims = Vec::new();
        while claims.len() < n.max(1) {
            match self.claim(run_id, worker, lease, only).await {
                Ok(Some(c)) => claims.push(c),
                Ok(None) => break,
                Err(e) if claims.is_empty() => return Err(e),
                // The batches already claimed are this worker's: a smaller
                // group, never a claim lost.
                Err(e) => {
                    tracing::debug!(error = %e, "claim failed; the group is cut short");
                    break;
                }
            }
        }
        Ok(claims)
    }

    /// Steers the run from any process (pause, resume, cancel), logged
    /// with `who`; workers read it at each batch boundary.
    async fn steer(&self, run_id: &RunId, to: Steering, who: &str) -> Result<()>;

    /// How the run is steered now.
    async fn steering(&self, run_id: &RunId) -> Result<Steering>;

    /// Renews the lease of a batch this worker still holds under `token`
    /// for another `lease` from now (a heartbeat during a long write);
    /// [`Error::LeaseLost`] when it is no longer held.
    async fn renew(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: u64,
        lease: Duration,
    ) -> Result<()>;

    /// An operator's release of a batch: a `running` batch whose holder
    /// will not finish, or a `failed` one that gave up, goes back to
    /// `pending` with its attempts counted from zero; `who` and `why` are
    /// logged. A later claim issues a new fencing token, so the old
    /// holder, if it is alive after all, cannot commit.
    async fn release(&self, run_id: &RunId, batch_id: &BatchId, who: &str, why: &str)
        -> Result<()>;

    /// Whether the holder of `lease` is alive, as far as this ledger can
    /// tell.
    async fn liveness(&self, lease: &Lease) -> Result<Liveness>;

    /// This process instance's id, recorded with every lease it takes.
    fn instance(&self) -> &str;

    /// Moves a batch to `to`. With `token`, the move is refused with
    /// [`Error::LeaseLost`] unless the batch is still held under that token.
    /// A move from `running` to `pending` hands the claim back unused: its
    /// attempt is not counted ([`gives_claim_back`]).
    async fn transition(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: Option<u64>,
        to: BatchState,
        update: BatchUpdate,
    ) -> Result<()>;

    /// Every batch of the run, in plan order.
    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>>;

    /// The transition log of the run, oldest first.
    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>>;

    /// Records an asset (idempotent on run, kind and table).
    async fn record_asset(&self, asset: &Asset) -> Result<()>;

    /// Assets of one run, or of every run.
    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>>;

    /// Marks an asset dropped.
    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()>;

    /// Stores `body` as the run's document `name`, replacing any earlier
    /// one: a metric baseline, a validation report, an approval. The run
    /// must exist.
    async fn put_document(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<()>;

    /// Stores `body` as the run's document `name` only if there is none
    /// yet; returns whether it was stored. Of several processes racing to
    /// store one (a baseline), exactly one wins.
    async fn put_document_if_absent(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<bool>;

    /// The run's document `name`, if one was stored.
    async fn document(&self, run_id: &RunId, name: &str) -> Result<Option<serde_json::Value>>;

    /// The in-transaction ledger update for a batch's write, when this
    /// ledger lives in the same engine as the data; `None` otherwise.
    fn tx_mark(&self, _run_id: &RunId, _batch_id: &BatchId, _token: u64) -> Option<TxMark> {
        None
    }

    /// The ledger's clock.
    fn now(&self) -> Timestamp;
}
