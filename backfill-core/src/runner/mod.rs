//! The runner: executes a plan through a write strategy, batch by batch,
//! with bounded concurrency, retries, throttling, pause, resume and cancel.

mod approval;
mod control;
mod drift;
mod group;
mod maintenance;
mod progress;
mod retrying;
mod signal;
pub(crate) mod validation;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use tracing::Instrument;

pub use approval::Approval;
pub use control::{ControlState, RunControl};
pub use maintenance::{maintained, MaintenanceHook};
pub use progress::{Event, Ewma};
pub use signal::{read_fail_closed, Load, LoadSignal, Reading};
pub use validation::BASELINE_DOCUMENT;

/// The preflight warning for a ledger outside the engine's database.
pub const SEPARATE_LEDGER_WARNING: &str = "ledger: the ledger is not in the engine's database, so \
     a batch is marked written after its data commits, not with it. A crash between the two \
     writes the batch again on resume: harmless for a source that reads other tables, wrong for \
     one that reads the target it writes (it would read its own output). Keep the ledger in the \
     engine for such a source";

/// The ledger document holding a run's [`Backfill::definition`], kept
/// when the run starts.
pub const DEFINITION_DOCUMENT: &str = "definition";

/// The ledger document holding the target's [`Checksum`] taken just before
/// a run copied it (staging, parallel version), which the cut-over
/// compares with the target's then.
///
/// [`Checksum`]: crate::warehouse::Checksum
pub const COPY_DOCUMENT: &str = "copied_from";

use crate::error::{Error, Result};
pub use crate::job::Backfill;
use crate::ledger::{
    gaps, Asset, AssetKind, BatchRecord, BatchState, BatchUpdate, Ledger, RunId, RunRecord,
    RunStart, RunStatus, Steering,
};
use crate::plan::{Batch, BatchId, Plan};
use crate::report::RunReport;
pub use crate::report::{Held, SliceEstimate};
use crate::strategy::{strategy_for, RunContext, StrategySpec, WriteStrategy};
use crate::validate::{BatchCheck, CheckContext, Outcome, ValidationReport, Validator};
use crate::value::TableSchema;
use crate::warehouse::{Warehouse, WriteOutcome};
use crate::{Ident, Predicate, Source, TableRef};

/// Retry policy for transient errors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per batch in one invocation, including the first.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt` (2 = first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(2).min(20);
        self.initial_backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff)
    }
}

/// Runner settings. Defaults are safe: one batch at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Batches in flight at once.
    pub concurrency: usize,
    /// How long a claim holds a batch.
    pub lease: Duration,
    /// Retries for transient errors.
    pub retry: RetryPolicy,
    /// Wait between throttled checks.
    pub throttle_wait: Duration,
    /// How long a signal may take to answer.
    pub signal_timeout: Duration,
    /// How old a reading may be.
    pub signal_max_age: Duration,
    /// This worker's name in leases.
    pub worker: String,
    /// Evaluate the source once per run into a staged table sorted by the
    /// batch column, and move each batch's slice from there, whatever
    /// the source (a table too).
    pub stage_source: bool,
    /// Stage a query source once per run (on by default): every batch
    /// then reads the same snapshot of the corrected logic, and the query
    /// runs once, not once a batch. Off, each batch evaluates the query
    /// with its own bounds.
    #[serde(default = "yes")]
    pub stage_queries: bool,
    /// Claims of one batch after which it is given up as `failed`, its
    /// history kept, instead of being taken again and again (a batch that
    /// kills its worker, or is always slower than its lease). An operator
    /// releases it ([`Runner::release`]) to try again.
    pub max_batch_attempts: u32,
    /// The most batches a plan may have; a larger one is refused before
    /// the target is taken ([`Error::PlanTooLarge`]). Each batch is a
    /// ledger row, a transaction and an entry in every report: a plan of
    /// millions of batches is almost always a planner set at the wrong
    /// grain. Raise it on purpose.
    pub max_batches: usize,
    /// How often, at most, the catalog part of the drift baseline is
    /// checked again between batches (target and source columns,
    /// dependents' definitions: a few catalog lookups). Zero checks
    /// before every batch; each `run` call checks when it starts
    /// regardless.
    #[serde(default = "default_drift_interval")]
    pub drift_interval: Duration,
    /// The most consecutive batches written in one transaction, a commit
    /// group (see [`crate::Warehouse::write_group`]); 1 writes each batch
    /// in its own. Each batch keeps its own guard, pre-image, ledger
    /// record, events and checks; a crash repeats at most the group in
    /// flight. Groups are sized to [`RunOptions::group_target`], starting
    /// from one batch. A job with a blocking per-batch check that runs
    /// after the commit (one that is not a guard) writes one batch a
    /// transaction, so that no batch is written past a failed check.
    #[serde(default = "default_max_group")]
    pub max_group: usize,
    /// The time a commit group aims to take: groups grow while they take
    /// less and shrink when they take more. On an engine with concurrent
    /// sessions it bounds how long a group holds its locks. Signals,
    /// steering (pause, cancel) and the drift baseline are read between
    /// groups, so it also bounds how long they wait. Zero fixes every
    /// group at [`RunOptions::max_group`].
    #[serde(default = "default_group_target")]
    pub group_target: Duration,
}

/// The default [`RunOptions::max_group`].
pub const DEFAULT_MAX_GROUP: usize = 64;

/// The default [`RunOptions::group_target`]: half a second.
pub const DEFAULT_GROUP_TARGET: Duration = Duration::from_millis(500);

fn default_max_group() -> usize {
    DEFAULT_MAX_GROUP
}

fn default_group_target() -> Duration {
    DEFAULT_GROUP_TARGET
}

/// The default [`RunOptions::drift_interval`]: one second, which bounds
/// the catalog lookups to one round a second however short the batches.
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(1);

fn yes() -> bool {
    true
}

fn default_drift_interval() -> Duration {
    DEFAULT_DRIFT_INTERVAL
}

/// The default [`RunOptions::max_batches`]: 100,000 (some 270 years of
/// days).
pub const DEFAULT_MAX_BATCHES: usize = 100_000;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 1,
            lease: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            throttle_wait: Duration::from_secs(5),
            signal_timeout: Duration::from_secs(5),
            signal_max_age: Duration::from_secs(60),
            worker: format!("worker-{}", std::process::id()),
            stage_source: false,
            stage_queries: true,
            max_batch_attempts: 5,
            max_batches: DEFAULT_MAX_BATCHES,
            drift_interval: DEFAULT_DRIFT_INTERVAL,
            max_group: DEFAULT_MAX_GROUP,
            group_target: DEFAULT_GROUP_TARGET,
        }
    }
}

type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

fn retrying(ledger: &Arc<dyn Ledger>, policy: RetryPolicy) -> Arc<dyn Ledger> {
    Arc::new(retrying::Retrying {
        inner: ledger.clone(),
        policy,
    })
}

/// Runs backfills against one warehouse and one ledger.
#[derive(Clone)]
pub struct Runner {
    warehouse: Arc<dyn Warehouse>,
    /// The ledger as given.
    ledger: Arc<dyn Ledger>,
    /// The same ledger with every call retried on transient errors: what
    /// the runner itself calls.
    retried: Arc<dyn Ledger>,
    options: RunOptions,
    signals: Vec<Arc<dyn LoadSignal>>,
    maintenance: Option<Arc<dyn MaintenanceHook>>,
    observer: Option<Observer>,
    control: RunControl,
}

struct Shared<'a> {
    job: &'a Backfill,
    ctx: RunContext<'a>,
    strategy: &'a dyn WriteStrategy,
    validators: Vec<Box<dyn Validator>>,
    write_table: TableRef,
    /// What per-batch checks diff (old rows, new rows) over the scope.
    diff: Option<(crate::inspect::Rows, crate::inspect::Rows)>,
    only: Option<&'a [BatchId]>,
    total: usize,
    done: AtomicUsize,
    this_run: AtomicUsize,
    rows_written: AtomicU64,
    rows_before: AtomicU64,
    throttled_ms: AtomicU64,
    stop: AtomicBool,
    paused_announced: AtomicBool,
    pause_reason: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    failure: Mutex<Option<Error>>,
    /// How the ledger's steering stopped the run, if it did.
    steered: Mutex<Option<Steering>>,
    outcomes: Mutex<Vec<Outcome>>,
    ewma: Mutex<Ewma>,
    slice: Mutex<Vec<(BatchId, u64, Duration)>>,
    busy: Mutex<Duration>,
    /// The run's drift baseline, checked before each batch.
    drift_base: Option<crate::drift::Fingerprint>,
    /// Drift seen by this call.
    drifted: Mutex<Vec<crate::drift::Drift>>,
    /// When the drift baseline was last checked.
    drift_checked: Mutex<Instant>,
}

/// What opening a run found.
struct Opened {
    /// The target as the engine resolves it: the key of its lock.
    key: TableRef,
    /// Whether the run was new or resumed.
    start: RunStart,
    /// The run as the ledger holds it.
    stored: RunRecord,
    /// When it was opened, by the ledger's clock.
    now: jiff::Timestamp,
}

impl<'a> Shared<'a> {
    fn new(
        job: &'a Backfill,
        ctx: RunContext<'a>,
        strategy: &'a dyn WriteStrategy,
        validators: Vec<Box<dyn Validator>>,
        (only, done_before): (Option<&'a [BatchId]>, usize),
    ) -> Result<Self> {
        Ok(Shared {
            job,
            ctx,
            strategy,
            validators,
            write_table: strategy.write_table(&ctx)?,
            diff: crate::strategy::validation_sides(
                &job.brief.strategy,
                &ctx,
                &job.plan.scope.predicate()?,
                false,
            )?
            .1,
            only,
            total: job.plan.batches.len(),
            done: AtomicUsize::new(done_before),
            this_run: AtomicUsize::new(0),
            rows_written: AtomicU64::new(0),
            rows_before: AtomicU64::new(0),
            throttled_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            paused_announced: AtomicBool::new(false),
            pause_reason: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            failure: Mutex::new(None),
            steered: Mutex::new(None),
            outcomes: Mutex::new(Vec::new()),
            ewma: Mutex::new(Ewma::default()),
            slice: Mutex::new(Vec::new()),
            busy: Mutex::new(Duration::ZERO),
            drift_base: None,
            drifted: Mutex::new(Vec::new()),
            drift_checked: Mutex::new(Instant::now()),
        })
    }
}

impl Runner {
    /// A runner with default options.
    pub fn new(warehouse: Arc<dyn Warehouse>, ledger: Arc<dyn Ledger>) -> Self {
        let options = RunOptions::default();
        Runner {
            warehouse,
            retried: retrying(&ledger, options.retry),
            ledger,
            options,
            signals: Vec::new(),
            maintenance: None,
            observer: None,
            control: RunControl::new(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.retried = retrying(&self.ledger, options.retry);
        self.options = options;
        self
    }

    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.options.concurrency = n.max(1);
        self
    }

    /// Adds a load signal.
    pub fn with_signal(mut self, s: Arc<dyn LoadSignal>) -> Self {
        self.signals.push(s);
        self
    }

    /// Marks the run's datasets under maintenance while it writes (see
    /// [`MaintenanceHook`]).
    pub fn with_maintenance(mut self, hook: Arc<dyn MaintenanceHook>) -> Self {
        self.maintenance = Some(hook);
        self
    }

    /// Receives every progress event.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// The handle that pauses, resumes and cancels this runner's runs.
    pub fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// The options.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Arc<dyn Warehouse> {
        &self.warehouse
    }

    fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o(&e);
        }
    }

    /// Runs (or resumes) the backfill until every batch is written, a
    /// batch or blocking check fails, or the run is cancelled.
    ///
    /// Everything that can be checked before a write is: preflight, the
    /// plan against the brief, tables and columns, the target lock, and
    /// the plan fingerprint on resume. A failed batch is recorded in the
    /// ledger and returned as the error; so is a blocking end-of-run check
    /// that failed ([`Error::ValidationFailed`], with the full report kept
    /// for [`Runner::validation_report`]): `Ok` means every batch is
    /// written and every blocking check passed, or the report says why the
    /// run is not finished (paused, held by another live worker).
    pub async fn run(&self, job: &Backfill) -> Result<RunReport> {
        self.execute(job, None).await.map(|(r, _)| r)
    }

    /// Runs only `batches` of the plan (month-end, a DST day, an incident
    /// day), for real and in the ledger, and extrapolates runtime and rows
    /// for the full plan. A later [`Runner::run`] continues with the rest.
    pub async fn test_slice(&self, job: &Backfill, batches: &[BatchId]) -> Result<SliceEstimate> {
        for id in batches {
            if job.plan.batch(id).is_none() {
                return Err(Error::InvalidPlan(format!(
                    "test slice names batch {id}, which is not in the plan"
                )));
            }
        }
        let (report, shared) = self.execute(job, Some(batches)).await?;
        let slice = shared.unwrap_or_default();
        let n = slice.len().max(1) as f64;
        let mean_secs = slice.iter().map(|(_, _, d)| d.as_secs_f64()).sum::<f64>() / n;
        let mean_rows = slice.iter().map(|(_, r, _)| *r as f64).sum::<f64>() / n;
        let total = job.plan.batches.len();
        let waves = total.div_ceil(self.options.concurrency.max(1));
        let outcomes = report.outcomes;
        Ok(SliceEstimate {
            batches: slice,
            mean_batch: Duration::from_secs_f64(mean_secs),
            mean_rows,
            plan_batches: total,
            estimated_total: Duration::from_secs_f64(mean_secs * waves as f64),
            estimated_rows: (mean_rows * total as f64).round() as u64,
            outcomes,
        })
    }

    /// Checks the target's tables and columns against the brief; returns
    /// the columns written and the target's schema.
    async fn target_columns(&self, job: &Backfill) -> Result<(Vec<Ident>, TableSchema)> {
        let scope = &job.brief.scope;
        let target = &scope.target;
        let schema = self
            .warehouse
            .describe(target)
            .await?
            .ok_or_else(|| Error::UnknownTable(target.to_string()))?;
        let unknown = |c: &Ident| Error::UnknownColumn {
            table: target.to_string(),
            column: c.to_string(),
        };
        let columns = if scope.columns.is_empty() {
            schema.names()
        } else {
            scope.columns.clone()
        };
        let mut needed: Vec<&Ident> = columns.iter().collect();
        needed.push(&scope.batch_column);
        if let Some(f) = &scope.filter {
            needed.extend(f.columns());
        }
        if let StrategySpec::Merge { keys } = &job.brief.strategy {
            needed.extend(keys.iter());
        }
        let check_columns: Vec<Ident> = job
            .brief
            .validation
            .checks
            .iter()
            .flat_map(|c| c.columns())
            .collect();
        needed.extend(check_columns.iter());
        for c in needed {
            if schema.column(c).is_none() {
                return Err(unknown(c));
            }
        }
        if let Some(c) = schema.column(&scope.batch_column) {
            scope.check_column(c.ty)?;
        }
        if job.brief.strategy.replaces_rows() {
            let left_out: Vec<String> = schema
                .names()
                .into_iter()
                .filter(|c| !columns.contains(c))
                .map(|c| c.to_string())
                .collect();
            if !left_out.is_empty() {
                return Err(Error::Preflight(vec![crate::Finding::block(
                    "scope.columns",
                    format!(
                        "{} replaces whole rows of each slice, but the scope lists only some of \
                         {target}'s columns: {} would be written as NULL or their default, and \
                         no pre-image would keep them. List every column (or none), or use a \
                         merge by key, which updates only the listed columns",
                        job.brief.strategy.name(),
                        left_out.join(", ")
                    ),
                )]));
            }
        }
        Ok((columns, schema))
    }

    /// Checks the source against the target: every written column, of a
    /// type that the target's column holds; returns a warning for each
    /// source column that is not written.
    async fn check_source(
        &self,
        job: &Backfill,
        columns: &[Ident],
        schema: &TableSchema,
    ) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for source in job.sources() {
            warnings.extend(self.check_one_source(job, source, columns, schema).await?);
        }
        Ok(warnings)
    }

    /// [`Runner::check_source`] of one of the job's sources.
    async fn check_one_source(
        &self,
        job: &Backfill,
        source: &Source,
        columns: &[Ident],
        schema: &TableSchema,
    ) -> Result<Vec<String>> {
        let scope = &job.brief.scope;
        let target = &scope.target;
        let src = self.warehouse.describe_source(source).await?;
        for c in columns {
            let Some(from) = src.column(c) else {
                return Err(Error::SchemaMismatch(format!(
                    "source ({}) has no column {c} that the target needs",
                    source.describe()
                )));
            };
            let into = schema.column(c).map_or(from.ty, |t| t.ty);
            if !from.ty.widens_to(into) {
                return Err(Error::ColumnTypeMismatch {
                    target: target.to_string(),
                    column: c.to_string(),
                    source_type: from.ty.name().to_string(),
                    target_type: into.name().to_string(),
                });
            }
        }
        let mut warnings = Vec::new();
        for extra in src.columns.iter().filter(|c| !columns.contains(&c.name)) {
            let why = if schema.column(&extra.name).is_some() {
                "the scope's columns leave it out"
            } else {
                "the target has no such column (a misspelt name?)"
            };
            warnings.push(format!(
                "source: column {} of the source is not written: {why}",
                extra.name
            ));
        }
        if !source.is_bounded() && src.column(&scope.batch_column).is_none() {
            return Err(Error::SchemaMismatch(format!(
                "source has no batch column {}",
                scope.batch_column
            )));
        }
        Ok(warnings)
    }

    /// The runbook of one call to [`Runner::run`] or
    /// [`Runner::test_slice`]: preflight, open the run, requeue, prepare,
    /// drive the batches, settle the run's status, the end-of-run checks,
    /// release the target, and the report.
    async fn execute(
        &self,
        job: &Backfill,
        only: Option<&[BatchId]>,
    ) -> Result<(RunReport, Option<Vec<(BatchId, u64, Duration)>>)> {
        let started = Instant::now();
        let (columns, warnings) = self.preflight(job).await?;
        self.check_history(&job.run_id).await?;
        // A run that commits every batch on its own defers the engine's
        // background maintenance to its end, however it ends (done,
        // paused, failed), where it runs once: a checkpoint after each of
        // many small commits costs more than one. A run in commit groups
        // commits a few times, and the engine's own maintenance as it
        // comes costs less than one deferred to the end (the harness
        // measures both).
        if self.group_limit(&validators_of(job)) > 1 {
            return self
                .execute_deferred(job, only, started, columns, warnings)
                .await;
        }
        self.warehouse.defer_maintenance().await?;
        let r = self
            .execute_deferred(job, only, started, columns, warnings)
            .await;
        match (self.warehouse.resume_maintenance().await, r) {
            (Ok(()), r) => r,
            (Err(e), Ok(_)) => Err(e),
            (Err(e), Err(run)) => {
                tracing::warn!(error = %e, "could not resume the engine's maintenance");
                Err(run)
            }
        }
    }

    /// [`Runner::execute`] once the engine's maintenance is deferred.
    async fn execute_deferred(
        &self,
        job: &Backfill,
        only: Option<&[BatchId]>,
        started: Instant,
        columns: Vec<Ident>,
        warnings: Vec<String>,
    ) -> Result<(RunReport, Option<Vec<(BatchId, u64, Duration)>>)> {
        let opened = self.open_run(job).await?;
        self.requeue_failed(job, only).await?;
        let before = self.retried.batches(&job.run_id).await?;
        let done_before = before.iter().filter(|b| b.state.is_done()).count();
        let pending = before
            .iter()
            .filter(|b| !b.state.is_done() && only.is_none_or(|ids| ids.contains(&b.batch.id)))
            .count();

        let strategy = strategy_for(&job.brief.strategy);
        let owner = job.brief.operator.clone();
        let ctx0 = self.context_at(job, &columns, &owner, opened.now);
        let (source, staged) = if pending > 0 {
            let prepared = self
                .prepare(
                    job,
                    &ctx0,
                    strategy.as_ref(),
                    done_before,
                    opened.stored.status,
                )
                .await;
            match prepared {
                Ok(p) => p,
                Err(e) => {
                    // Nothing of this run is on the target yet: it does
                    // not hold it (a later run resumes as ever).
                    if done_before == 0 {
                        if let Err(u) = self.retried.unlock_target(&opened.key, &job.run_id).await {
                            tracing::warn!(error = %u, "could not release the target");
                        }
                    }
                    return Err(e);
                }
            }
        } else {
            (job.source.clone(), false)
        };
        // Blocking checks of a batch's own slice run before its commit.
        let validators = validators_of(job);
        let guards: Vec<crate::warehouse::Guard> = validators
            .iter()
            .filter_map(|v| v.guard())
            .chain(crate::warehouse::Guard::emptiness(&job.brief))
            .collect();
        let scope = job.plan.scope.predicate()?;
        let ctx = RunContext {
            source: &source,
            staged_source: staged,
            guards: &guards,
            scope: Some(&scope),
            ..ctx0
        };
        self.emit(Event::RunStarted {
            total: job.plan.batches.len(),
            done: done_before,
            resumed: opened.start == RunStart::Resumed,
        });
        let mut shared = Shared::new(job, ctx, strategy.as_ref(), validators, (only, done_before))?;
        if pending > 0 {
            // What the run depends on: its baseline, or the drift since.
            let (base, drifted) = self.drift_at_start(job, staged).await?;
            if let Some(d) = drifted.iter().find(|d| d.act == crate::drift::Act::Pause) {
                self.emit(Event::Paused {
                    reason: format!("drift: {d}"),
                });
            }
            shared.drift_base = Some(base);
            shared.drifted = Mutex::new(drifted);
            self.drive(&shared).await;
        }

        let failure = shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let steered = *shared.steered.lock().unwrap_or_else(|e| e.into_inner());
        let (status, after) = self
            .settle(job, only, failure.as_ref(), steered, opened.stored.status)
            .await?;
        let drifted =
            std::mem::take(&mut *shared.drifted.lock().unwrap_or_else(|e| e.into_inner()));
        let pausing: Vec<String> = drifted
            .iter()
            .filter(|d| d.act == crate::drift::Act::Pause)
            .map(|d| d.to_string())
            .collect();
        self.note_drift(job, &drifted).await?;
        if status == RunStatus::Paused && !pausing.is_empty() {
            let note = format!(
                "paused on drift: {}. Accept it (Runner::accept_drift, `backfill accept-drift`) \
                 with who and why, or cancel the run",
                pausing.join("; ")
            );
            self.retried
                .set_run_status(&job.run_id, RunStatus::Paused, Some(&note))
                .await?;
        }
        let gap_ids = gaps(&after);
        let held = self.holders(&after).await?;
        let validation = if only.is_none() && failure.is_none() && gap_ids.is_empty() {
            self.final_checks(job, shared.this_run.load(Ordering::SeqCst))
                .await?
        } else {
            None
        };
        // A blocking end-of-run check that failed fails the run: never a
        // quiet `Ok` with the failure only inside the report.
        let failure = match (failure, validation.as_ref()) {
            (None, Some(v)) => v
                .blocking_failures()
                .next()
                .map(|f| Error::ValidationFailed {
                    check: f.outcome.check.clone(),
                    detail: format!(
                        "{}; the report is kept in the ledger (`Runner::validation_report`). \
                     Roll the run back, or correct the source and run again after the rollback",
                        f.outcome.detail
                    ),
                }),
            (f, _) => f,
        };
        let status = match &failure {
            Some(e @ Error::ValidationFailed { .. }) => {
                self.retried
                    .set_run_status(&job.run_id, RunStatus::Failed, Some(&e.to_string()))
                    .await?;
                RunStatus::Failed
            }
            _ => status,
        };
        // A failed run none of whose batches got written holds nothing on
        // the target: it does not keep it (it resumes as ever).
        let wrote_nothing = failure.is_some()
            && after
                .iter()
                .all(|b| matches!(b.state, BatchState::Pending | BatchState::Failed));
        if staged && failure.is_none() && after.iter().all(|b| b.state.is_done()) {
            // Every batch is written from the snapshot: it has served, and
            // the engine need not keep (nor checkpoint) a copy of the
            // source. A later call stages afresh if it writes again.
            self.drop_staged_source(job, &ctx0).await?;
        }
        self.release_target(job, &opened.key, status, wrote_nothing)
            .await?;
        // A cancel ends this call only; the next `run` starts afresh.
        if self.control.state() == ControlState::Cancelled {
            self.control.reset();
        }
        self.emit(Event::RunFinished { status });
        if let Some(e) = failure {
            return Err(e);
        }
        let outcomes = shared
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let report = RunReport {
            run_id: job.run_id.clone(),
            target: job.target().to_string(),
            strategy: job.brief.strategy.name().to_string(),
            status,
            fingerprint: opened.stored.fingerprint.clone(),
            batches_total: shared.total,
            batches_done: after.iter().filter(|b| b.state.is_done()).count(),
            batches_this_run: shared.this_run.load(Ordering::SeqCst),
            rows_written: shared.rows_written.load(Ordering::SeqCst),
            rows_before: shared.rows_before.load(Ordering::SeqCst),
            outcomes,
            gaps: gap_ids,
            assets: self.retried.assets(Some(&job.run_id)).await?,
            elapsed: started.elapsed(),
            throttled: Duration::from_millis(shared.throttled_ms.load(Ordering::SeqCst)),
            validation,
            warnings,
            held,
            drift: drifted,
        };
        let slice = shared.slice.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((report, Some(slice)))
    }

    /// Everything that can be checked before a write: the brief, the plan
    /// against it, tables and columns, and the engine's own dependents of
    /// the target. Returns the columns written and the warnings.
    async fn preflight(&self, job: &Backfill) -> Result<(Vec<Ident>, Vec<String>)> {
        job.brief.preflight().into_result()?;
        for source in job.sources() {
            source.check()?;
        }
        if !job.rules.is_empty() {
            crate::rules::check(&job.plan, &job.rules)?;
        }
        if job.plan.batches.len() > self.options.max_batches {
            return Err(Error::PlanTooLarge {
                batches: job.plan.batches.len(),
                max: self.options.max_batches,
            });
        }
        if job.plan.scope != job.brief.scope {
            return Err(Error::InvalidPlan(
                "the plan was made for a different scope than the brief's".into(),
            ));
        }
        if job.sources().any(Source::is_bounded) {
            if let Some(b) = job
                .plan
                .batches
                .iter()
                .find(|b| b.start.is_none() || b.end.is_none())
            {
                return Err(Error::InvalidPlan(format!(
                    "the source binds {{start}} and {{end}}, but batch {} of this plan ({:?}) has \
                     no {}: it would bind NULL and empty the slice. Time windows and key ranges \
                     give both bounds; for partition lists and hash buckets, read the source \
                     as a table or a query without placeholders (each batch's predicate \
                     filters it)",
                    b.id,
                    job.plan.planner,
                    if b.start.is_none() { "start" } else { "end" }
                )));
            }
        }
        if let Some(why) = self.warehouse.refuses(&job.brief.strategy) {
            return Err(Error::Preflight(vec![crate::Finding::block(
                "strategy", why,
            )]));
        }
        let (columns, schema) = self.target_columns(job).await?;
        let mut warnings = self.check_source(job, &columns, &schema).await?;
        if self.options.stage_source && !job.rules.is_empty() {
            warnings.push(
                "source: stage_source is set, but with rule periods each batch reads its \
                 period's source directly; nothing is staged"
                    .into(),
            );
        }
        if let StrategySpec::Merge { keys } = &job.brief.strategy {
            // A merge updates every target row with a source key, inside
            // the scope or not: the target's keys must be unique.
            let target = job.target();
            let kr = self
                .warehouse
                .key_report(target, keys, &Predicate::All, crate::checks::SAMPLE_LIMIT)
                .await?;
            if kr.duplicate_keys > 0 || kr.null_keys > 0 {
                return Err(Error::TargetKeysNotUnique {
                    target: target.to_string(),
                    keys: keys.iter().map(|k| k.to_string()).collect(),
                    duplicates: kr.duplicate_keys,
                    nulls: kr.null_keys,
                    sample: kr.sample,
                });
            }
            // Nor may a key repeat across the scope's batches in the
            // source. A table source is checked over the whole scope here;
            // every source is checked batch by batch against the keys the
            // run's earlier batches logged.
            if let Source::Table(t) = &job.source {
                let kr = self
                    .warehouse
                    .key_report(
                        t,
                        keys,
                        &job.plan.scope.predicate()?,
                        crate::checks::SAMPLE_LIMIT,
                    )
                    .await?;
                if kr.duplicate_keys > 0 {
                    return Err(Error::SourceKeysNotUnique {
                        keys: keys.iter().map(|k| k.to_string()).collect(),
                        duplicates: kr.duplicate_keys,
                        sample: kr.sample,
                    });
                }
            }
        }
        if job.brief.strategy == StrategySpec::StagingSwap {
            let target = job.target();
            let hazards = self.warehouse.swap_hazards(target).await?;
            if !hazards.is_empty() {
                return Err(Error::Preflight(vec![crate::Finding::block(
                    "strategy",
                    format!(
                        "a staging swap puts a copy of {target} in its place, and the copy would \
                         not carry: {}. They would stay with the old table. Use a partition \
                         overwrite or a merge, which write in place, or move them first",
                        hazards.join("; ")
                    ),
                )]));
            }
        }
        let blast = crate::blast::blast_radius(self.warehouse.as_ref(), &job.brief).await?;
        let blast_findings = blast.findings(job.brief.risk);
        if blast_findings.iter().any(|f| f.blocking) {
            return Err(Error::Preflight(blast_findings));
        }
        warnings.extend(
            blast_findings
                .into_iter()
                .map(|f| format!("{}: {}", f.section, f.message)),
        );
        let in_tx = job.plan.batches.first().is_some_and(|b| {
            self.retried
                .tx_mark(&job.run_id, &b.id, 0)
                .is_some_and(|m| self.warehouse.marks_in_tx(&m))
        });
        if !in_tx {
            warnings.push(SEPARATE_LEDGER_WARNING.to_string());
        }
        Ok((columns, warnings))
    }

    /// Refuses a run whose ledger disagrees with its own history. Every
    /// change of a batch's state is recorded as a transition in the same
    /// transaction, so while other workers move batches on, two reads of
    /// the history around one read of the batches bound what each state
    /// may be: a batch not done whose history already reached `written`
    /// (before the read) was set back by hand, and would be written again
    /// over whatever followed; a batch in a state its history never
    /// reached (after the read), `written` say, was moved on by hand and
    /// its day would be skipped. A run not recorded yet has no history.
    async fn check_history(&self, run_id: &RunId) -> Result<()> {
        match self.retried.run(run_id).await {
            Ok(_) => {}
            Err(Error::RunNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        type Reached = std::collections::HashMap<BatchId, Vec<String>>;
        let reached = |ts: Vec<crate::ledger::Transition>| {
            let mut m: Reached = std::collections::HashMap::new();
            for t in ts {
                if let Some(b) = t.batch_id {
                    m.entry(b).or_default().push(t.to);
                }
            }
            m
        };
        let before = reached(self.retried.transitions(run_id).await?);
        let batches = self.retried.batches(run_id).await?;
        let after = reached(self.retried.transitions(run_id).await?);
        let done =
            |s: &str| s == BatchState::Written.as_str() || s == BatchState::Validated.as_str();
        for b in batches {
            let state = b.state.as_str();
            let last_before = before
                .get(&b.batch.id)
                .and_then(|v| v.last())
                .map(String::as_str);
            let set_back = last_before.is_some_and(done)
                && matches!(b.state, BatchState::Pending | BatchState::Running);
            let never_reached = b.state != BatchState::Pending
                && !after
                    .get(&b.batch.id)
                    .is_some_and(|v| v.iter().any(|to| to == state));
            if set_back || never_reached {
                let history = after
                    .get(&b.batch.id)
                    .and_then(|v| v.last())
                    .map_or(BatchState::Pending.as_str(), String::as_str);
                return Err(Error::LedgerInconsistent {
                    run: run_id.to_string(),
                    batch: b.batch.id.to_string(),
                    state: state.to_string(),
                    history: history.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Takes the target and records the run with its plan, or finds it.
    /// A finished run with the same plan has nothing to do and must not
    /// take the target again (unless its ledger says a batch is still to
    /// write: then it takes the lock like any run that writes); a
    /// rolled-back run is not run again.
    async fn open_run(&self, job: &Backfill) -> Result<Opened> {
        let run_id = &job.run_id;
        let key = self.warehouse.resolve(job.target()).await?;
        let fingerprint = job.fingerprint();
        let existing = match self.retried.run(run_id).await {
            Ok(r) => Some(r),
            Err(Error::RunNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(r) = &existing {
            if r.fingerprint != fingerprint {
                return Err(self.mismatch(job, &r.fingerprint).await);
            }
            if r.status == RunStatus::RolledBack {
                return Err(Error::NotAllowed(format!(
                    "run {run_id} was rolled back; start a new run id to backfill again"
                )));
            }
        }
        let finished = match &existing {
            Some(r) if matches!(r.status, RunStatus::Completed | RunStatus::CutOver) => self
                .retried
                .batches(run_id)
                .await?
                .iter()
                .all(|b| b.state.is_done()),
            _ => false,
        };
        if !finished {
            self.retried.lock_target(&key, run_id).await?;
        }
        let now = self.retried.now();
        let record = RunRecord {
            run_id: run_id.clone(),
            target: key.clone(),
            fingerprint,
            code_version: job.code_version.clone(),
            parameters: job.parameters.clone(),
            operator: job.brief.operator.clone(),
            status: RunStatus::Running,
            started_at: now,
            finished_at: None,
            rows_affected: 0,
            notes: Vec::new(),
        };
        let start = match self.retried.begin_run(&record, &job.plan.batches).await {
            Err(Error::FingerprintMismatch { stored, .. }) => {
                return Err(self.mismatch(job, &stored).await)
            }
            other => other?,
        };
        if start == RunStart::New {
            let definition = serde_json::to_value(job.definition())?;
            self.retried
                .put_document_if_absent(run_id, DEFINITION_DOCUMENT, &definition)
                .await?;
            if !job.rules.is_empty() {
                let periods = crate::rules::periods(&job.plan, &job.rules);
                self.retried
                    .put_document_if_absent(
                        run_id,
                        crate::rules::RULES_DOCUMENT,
                        &serde_json::to_value(periods)?,
                    )
                    .await?;
            }
        }
        // A plain run after a cancel resumes: it clears the cancel. A pause
        // stays until someone resumes the run.
        if start == RunStart::Resumed && self.retried.steering(run_id).await? == Steering::Cancel {
            self.retried
                .steer(run_id, Steering::Run, &self.options.worker)
                .await?;
        }
        let stored = self.retried.run(run_id).await?;
        if stored.status == RunStatus::RolledBack {
            return Err(Error::NotAllowed(format!(
                "run {run_id} was rolled back; start a new run id to backfill again"
            )));
        }
        Ok(Opened {
            key,
            start,
            stored,
            now,
        })
    }

    /// The refusal of a resume whose definition differs from the run's,
    /// naming the parts that changed where the ledger recorded them.
    async fn mismatch(&self, job: &Backfill, stored: &str) -> Error {
        let changed = match self
            .retried
            .document(&job.run_id, DEFINITION_DOCUMENT)
            .await
        {
            Ok(Some(doc)) => serde_json::from_value(doc)
                .map(|parts| job.changed_since(&parts))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Error::FingerprintMismatch {
            run: job.run_id.to_string(),
            stored: stored.to_string(),
            given: job.fingerprint(),
            changed,
        }
    }

    /// Requeues failed batches: resume means "continue this plan".
    async fn requeue_failed(&self, job: &Backfill, only: Option<&[BatchId]>) -> Result<()> {
        let run_id = &job.run_id;
        let cap = self.options.max_batch_attempts.max(1);
        for b in self.retried.batches(run_id).await? {
            // A batch given up after its last attempt waits for an
            // operator's release.
            let given_up = b.attempts >= cap;
            if b.state == BatchState::Failed
                && !given_up
                && only.is_none_or(|ids| ids.contains(&b.batch.id))
            {
                let requeued = self
                    .retried
                    .transition(
                        run_id,
                        &b.batch.id,
                        None,
                        BatchState::Pending,
                        BatchUpdate::reason("requeued on resume"),
                    )
                    .await;
                match requeued {
                    // Another worker sharing the run requeued it first.
                    Ok(()) | Err(Error::InvalidTransition { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The run's context as of `now`, reading the job's own source.
    fn context_at<'a>(
        &'a self,
        job: &'a Backfill,
        columns: &'a [Ident],
        owner: &'a str,
        now: jiff::Timestamp,
    ) -> RunContext<'a> {
        let retention =
            jiff::SignedDuration::from_hours(24 * i64::from(job.brief.rollback.retention_days));
        RunContext {
            warehouse: self.warehouse.as_ref(),
            run_id: &job.run_id,
            target: job.target(),
            source: &job.source,
            staged_source: false,
            columns,
            keep_pre_image: job.brief.rollback.keep_pre_image,
            owner,
            now,
            expires_at: now.checked_add(retention).unwrap_or(jiff::Timestamp::MAX),
            guards: &[],
            scope: None,
        }
    }

    /// Before the first write of this call: the metric baseline, the
    /// maintenance marks, the run's status, the pattern's working tables,
    /// the staged source. Returns the source batches read and whether it
    /// is the run's staged snapshot.
    async fn prepare(
        &self,
        job: &Backfill,
        ctx: &RunContext<'_>,
        strategy: &dyn WriteStrategy,
        done_before: usize,
        status: RunStatus,
    ) -> Result<(Source, bool)> {
        let run_id = &job.run_id;
        self.capture_baseline(job, done_before).await?;
        self.maintenance(job, true).await?;
        if status != RunStatus::Running {
            self.retried
                .set_run_status(run_id, RunStatus::Running, Some("resumed"))
                .await?;
        }
        self.check_working_tables(run_id).await?;
        let claimed = self.claim_working_tables(job, ctx).await?;
        self.record_copy_baseline(job, ctx, strategy).await?;
        let assets = strategy.prepare(ctx).await?;
        let mut source = (job.source.clone(), false);
        if self.stages_source(job) {
            let snapshot = ctx.staged_source_table()?;
            let scope_pred = job.plan.scope.predicate()?;
            let (lo, hi) = scope_bounds(&job.plan);
            self.warehouse
                .stage_source(
                    &job.source,
                    &scope_pred,
                    (lo.as_ref(), hi.as_ref()),
                    &job.plan.scope.batch_column,
                    &snapshot,
                )
                .await?;
            source = (Source::Table(snapshot), true);
        }
        // Each was claimed before it was made; a pattern's table that
        // `working_tables` does not list is recorded now.
        for a in assets.iter().filter(|a| !claimed.contains(&a.table)) {
            self.retried.record_asset(a).await?;
        }
        Ok(source)
    }

    /// Drops the run's staged snapshot of its source and records it
    /// dropped.
    async fn drop_staged_source(&self, job: &Backfill, ctx: &RunContext<'_>) -> Result<()> {
        let table = ctx.staged_source_table()?;
        if self.warehouse.drop_table(&table).await? {
            self.retried
                .asset_dropped(&job.run_id, &table, self.retried.now())
                .await?;
        }
        Ok(())
    }

    /// Records the working tables this call will make as the run's
    /// before making them, so that only tables the library made are ever
    /// the run's (and cleanup's to drop); a table that already holds one
    /// of the names and is not the run's is refused, never adopted.
    async fn claim_working_tables(
        &self,
        job: &Backfill,
        ctx: &RunContext<'_>,
    ) -> Result<Vec<TableRef>> {
        let mine: Vec<TableRef> = self
            .retried
            .assets(Some(&job.run_id))
            .await?
            .into_iter()
            .map(|a| a.table)
            .collect();
        let mut tables = crate::strategy::working_tables(&job.brief.strategy, ctx)?;
        if self.stages_source(job) {
            tables.push((AssetKind::StagedSource, ctx.staged_source_table()?));
        }
        let mut claimed = Vec::new();
        for (kind, table) in tables {
            claimed.push(table.clone());
            if mine.contains(&table) {
                continue;
            }
            if self.warehouse.describe(&table).await?.is_some() {
                return Err(Error::NameTaken {
                    run: job.run_id.to_string(),
                    kind: kind.as_str().to_string(),
                    table: table.to_string(),
                });
            }
            self.retried
                .record_asset(&ctx.asset_for(kind, table))
                .await?;
        }
        Ok(claimed)
    }

    /// For a pattern that copies the target beside it, the target's
    /// checksum just before the copy is made (taken before, so a write
    /// between the two can only refuse a cut-over, never slip past it).
    async fn record_copy_baseline(
        &self,
        job: &Backfill,
        ctx: &RunContext<'_>,
        strategy: &dyn WriteStrategy,
    ) -> Result<()> {
        if !job.brief.strategy.needs_cutover() {
            return Ok(());
        }
        let copy = strategy.write_table(ctx)?;
        if self.warehouse.describe(&copy).await?.is_some() {
            return Ok(());
        }
        let sum = self
            .warehouse
            .checksum(job.target(), &Predicate::All)
            .await?;
        let body = serde_json::to_value(&sum).map_err(|e| Error::engine(e.to_string()))?;
        self.retried
            .put_document(&job.run_id, COPY_DOCUMENT, &body)
            .await
    }

    /// Refuses a cut-over when the target changed since the run copied it.
    /// After a swap whose record was lost, the table that was the target
    /// is the kept old one, and that is the one compared.
    async fn check_copy_baseline(&self, job: &Backfill, ctx: &RunContext<'_>) -> Result<()> {
        let Some(doc) = self.retried.document(&job.run_id, COPY_DOCUMENT).await? else {
            return Ok(());
        };
        let then: crate::warehouse::Checksum =
            serde_json::from_value(doc).map_err(|e| Error::engine(e.to_string()))?;
        let mut table = job.target().clone();
        if job.brief.strategy == StrategySpec::StagingSwap
            && self
                .warehouse
                .describe(&ctx.stage_table()?)
                .await?
                .is_none()
        {
            table = ctx.kept_old_table()?;
        }
        let now = self.warehouse.checksum(&table, &Predicate::All).await?;
        if now == then {
            return Ok(());
        }
        Err(Error::TargetChangedSinceCopy {
            run: job.run_id.to_string(),
            target: job.target().to_string(),
            rows_then: then.rows,
            rows_now: now.rows,
            hash_then: then.hash,
            hash_now: now.hash,
        })
    }

    /// Refuses to go on when a working table this run made before (a
    /// pre-image, key log, stage or version) is gone: recreating it empty
    /// would lose what a rollback or the cut-over needs, silently. The
    /// staged source is made anew on every call, so it may be gone.
    async fn check_working_tables(&self, run_id: &RunId) -> Result<()> {
        // Working tables are recorded before they are made: until a batch
        // is touched, one that is not there yet is made now.
        let touched = self
            .retried
            .batches(run_id)
            .await?
            .iter()
            .any(|b| b.state != BatchState::Pending);
        for a in self.retried.assets(Some(run_id)).await? {
            if a.kind == AssetKind::StagedSource {
                continue;
            }
            let gone = if a.dropped_at.is_some() {
                Some("cleanup dropped it")
            } else if touched && self.warehouse.describe(&a.table).await?.is_none() {
                Some("it no longer exists")
            } else {
                None
            };
            if let Some(why) = gone {
                return Err(Error::AssetMissing {
                    run: run_id.to_string(),
                    kind: a.kind.as_str().to_string(),
                    table: a.table.to_string(),
                    why: why.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Runs the workers until the batches are done, one fails, or the run
    /// is paused or cancelled.
    async fn drive(&self, shared: &Shared<'_>) {
        let span = tracing::info_span!(
            "backfill.run",
            run_id = %shared.job.run_id,
            target = %shared.job.target()
        );
        let workers = (0..self.options.concurrency.max(1)).map(|w| self.worker(shared, w));
        join_all(workers).instrument(span).await;
    }

    /// Records the run's status from what the ledger holds now; returns it
    /// with the batches.
    async fn settle(
        &self,
        job: &Backfill,
        only: Option<&[BatchId]>,
        failure: Option<&Error>,
        steered: Option<Steering>,
        stored: RunStatus,
    ) -> Result<(RunStatus, Vec<BatchRecord>)> {
        let run_id = &job.run_id;
        let cancelled =
            self.control.state() == ControlState::Cancelled || steered == Some(Steering::Cancel);
        let after = self.retried.batches(run_id).await?;
        let no_gaps = after.iter().all(|b| b.state.is_done());
        let status = if failure.is_some() {
            RunStatus::Failed
        } else if cancelled && !no_gaps {
            RunStatus::Cancelled
        } else if no_gaps {
            if stored == RunStatus::CutOver {
                RunStatus::CutOver
            } else {
                RunStatus::Completed
            }
        } else if only.is_none()
            && after
                .iter()
                .all(|b| b.state.is_done() || b.state == BatchState::Running)
        {
            // The rest is in other workers' hands: the run goes on.
            RunStatus::Running
        } else {
            RunStatus::Paused
        };
        let note = match (failure, status) {
            (Some(e), _) => Some(e.to_string()),
            (None, RunStatus::Paused) if steered == Some(Steering::Pause) => {
                Some("paused by the run's steering; resume it to go on".to_string())
            }
            (None, RunStatus::Paused) if only.is_some() => Some("test slice done".to_string()),
            _ => None,
        };
        let current = self.retried.run(run_id).await?.status;
        if current != status || note.is_some() {
            self.retried
                .set_run_status(run_id, status, note.as_deref())
                .await?;
        }
        Ok((status, after))
    }

    /// The batches still `running` under someone's lease, with whether
    /// their holders are alive.
    async fn holders(&self, batches: &[BatchRecord]) -> Result<Vec<Held>> {
        let mut out = Vec::new();
        for b in batches.iter().filter(|b| b.state == BatchState::Running) {
            if let Some(l) = &b.lease {
                out.push(Held {
                    batch: b.batch.id.clone(),
                    worker: l.worker.clone(),
                    instance: l.instance.clone(),
                    expires_at: l.expires_at,
                    liveness: self.retried.liveness(l).await?,
                });
            }
        }
        Ok(out)
    }

    /// Releases a batch whose holder will not finish it (or that was
    /// given up after its attempts) back to `pending`, logged with who
    /// and why; the next `run` writes it. See [`Ledger::release`].
    pub async fn release(
        &self,
        job: &Backfill,
        batch: &BatchId,
        who: &str,
        why: &str,
    ) -> Result<()> {
        if job.plan.batch(batch).is_none() {
            return Err(Error::InvalidPlan(format!(
                "batch {batch} is not in the plan of run {}",
                job.run_id
            )));
        }
        self.retried.release(&job.run_id, batch, who, why).await
    }

    /// The end-of-run checks over the whole scope, once every batch is
    /// written; a report kept from an earlier call is reused when this
    /// call wrote nothing.
    async fn final_checks(
        &self,
        job: &Backfill,
        written_now: usize,
    ) -> Result<Option<ValidationReport>> {
        if validation::scope_checks(job).is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.validation_report(job).await? {
            Some(r) if written_now == 0 => r,
            _ => self.validate(job).await?,
        }))
    }

    /// Releases the target and clears the maintenance marks once the new
    /// data is what readers see.
    async fn release_target(
        &self,
        job: &Backfill,
        key: &TableRef,
        status: RunStatus,
        wrote_nothing: bool,
    ) -> Result<()> {
        if status == RunStatus::Cancelled || wrote_nothing {
            // The next `run` resumes; until then the target is free.
            self.retried.unlock_target(key, &job.run_id).await?;
            return Ok(());
        }
        let released = status == RunStatus::CutOver
            || (status == RunStatus::Completed && !job.brief.strategy.needs_cutover());
        if released {
            self.retried.unlock_target(key, &job.run_id).await?;
            self.maintenance(job, false).await?;
        }
        Ok(())
    }

    /// Waits out throttling and pauses; returns false when the worker must
    /// stop.
    async fn gate(&self, shared: &Shared<'_>) -> bool {
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            // Steering from another process is read by the claim, in its
            // own transaction (see `worker`); a worker waiting out a
            // throttle reads it below.
            match self.control.state() {
                ControlState::Cancelled => return false,
                ControlState::Paused => {
                    self.announce_pause(shared).await;
                    if self.control.wait_while_paused().await == ControlState::Cancelled {
                        return false;
                    }
                    continue;
                }
                ControlState::Running => self.announce_resume(shared).await,
            }
            let mut throttle = None;
            for s in &self.signals {
                let load = read_fail_closed(
                    s.as_ref(),
                    self.options.signal_timeout,
                    self.options.signal_max_age,
                    self.retried.now(),
                )
                .await;
                match load {
                    Load::Ok => {}
                    Load::Throttle(r) => {
                        throttle = Some(r);
                        break;
                    }
                    Load::Critical(r) => {
                        self.emit(Event::Throttled { reason: r.clone() });
                        *shared
                            .pause_reason
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("critical load: {r}"));
                        self.control.pause();
                        throttle = None;
                        break;
                    }
                }
            }
            if self.control.state() != ControlState::Running {
                // Back to the top: pause (or stop) at this boundary.
                continue;
            }
            match throttle {
                None => {
                    // Count this worker in flight before it claims, then
                    // look again: a pause announced in between must not
                    // see zero batches in flight while one is starting.
                    shared.in_flight.fetch_add(1, Ordering::SeqCst);
                    if self.control.state() == ControlState::Running {
                        return true;
                    }
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                Some(reason) => {
                    self.emit(Event::Throttled { reason });
                    let t = Instant::now();
                    tokio::time::sleep(self.options.throttle_wait).await;
                    shared
                        .throttled_ms
                        .fetch_add(t.elapsed().as_millis() as u64, Ordering::SeqCst);
                    // A pause or cancel from another process ends the wait.
                    self.note_steering(shared).await;
                }
            }
        }
    }

    /// Records and announces a pause once no batch is in flight: the
    /// last worker to reach the boundary announces it.
    async fn announce_pause(&self, shared: &Shared<'_>) {
        if shared.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        if shared.paused_announced.swap(true, Ordering::SeqCst) {
            return;
        }
        let reason = shared
            .pause_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "paused by operator".to_string());
        let _ = self
            .retried
            .set_run_status(&shared.job.run_id, RunStatus::Paused, Some(&reason))
            .await;
        self.emit(Event::Paused { reason });
    }

    /// Records and announces a resume, once, if a pause was announced.
    async fn announce_resume(&self, shared: &Shared<'_>) {
        if shared.paused_announced.swap(false, Ordering::SeqCst) {
            let _ = self
                .retried
                .set_run_status(&shared.job.run_id, RunStatus::Running, Some("resumed"))
                .await;
            self.emit(Event::Resumed);
        }
    }

    async fn worker(&self, shared: &Shared<'_>, n: usize) {
        let worker = format!("{}#{n}", self.options.worker);
        let run_id = &shared.job.run_id;
        let mut sizer = group::Sizer::new(
            self.group_limit(&shared.validators),
            self.options.group_target,
        );
        loop {
            if !self.gate(shared).await {
                return;
            }
            if !self.drift_ok(shared).await {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let claims = match self
                .retried
                .claim_many(
                    run_id,
                    &worker,
                    self.options.lease,
                    shared.only,
                    sizer.size(),
                )
                .await
            {
                Ok(c) if c.is_empty() => {
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    // Nothing left, or the run was steered between the
                    // gate and the claim: the claim reads the steering
                    // in its own transaction, and says so by claiming
                    // nothing.
                    self.note_steering(shared).await;
                    return;
                }
                Ok(c) => c,
                Err(e) => {
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    self.fail(shared, e);
                    return;
                }
            };
            let max_attempts = self.options.max_batch_attempts.max(1);
            if let Some(over) = claims.iter().position(|c| c.attempt > max_attempts) {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                let e = self.give_up(run_id, &claims[over]).await;
                let others: Vec<_> = claims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != over)
                    .map(|(_, c)| c)
                    .collect();
                self.unclaim(shared, &others, &claims[over].batch.id).await;
                self.fail(shared, e);
                return;
            }
            let r = self.one_group(shared, &claims, &mut sizer).await;
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            match r {
                Ok(()) => {}
                // Another worker took the batch over after this worker's
                // lease expired; its write was refused and the batch is in
                // good hands. Carry on with the next one.
                Err(Error::LeaseLost { batch, token }) => {
                    tracing::warn!(%batch, token, "lease lost; batch left to its new owner");
                }
                Err(e) => {
                    self.fail(shared, e);
                    return;
                }
            }
        }
    }

    /// The most batches this run writes in one transaction: one where the
    /// engine commits each batch on its own, or where a blocking
    /// per-batch check runs only after the commit (a later batch of the
    /// group would be written past its failure).
    fn group_limit(&self, validators: &[Box<dyn Validator>]) -> usize {
        let checked_after_commit = validators
            .iter()
            .any(|v| v.blocking() && v.guard().is_none());
        if checked_after_commit {
            return 1;
        }
        self.options
            .max_group
            .min(self.warehouse.max_group())
            .max(1)
    }

    /// Writes the claimed batches as one commit group, then checks and
    /// reports each. A group that fails is written again a batch at a
    /// time before the batch at fault, which fails as it would alone; the
    /// batches after it go back to `pending`.
    async fn one_group(
        &self,
        shared: &Shared<'_>,
        claims: &[crate::ledger::Claim],
        sizer: &mut group::Sizer,
    ) -> Result<()> {
        if let [c] = claims {
            let t0 = Instant::now();
            let r = self.one_batch(shared, &c.batch, c.token, c.attempt).await;
            if r.is_ok() {
                sizer.observe(1, t0.elapsed());
            }
            return r;
        }
        let span = tracing::info_span!(
            "backfill.group",
            first = %claims[0].batch.id,
            batches = claims.len()
        );
        for c in claims {
            self.emit(Event::BatchStarted {
                batch: c.batch.id.clone(),
                attempt: c.attempt,
            });
        }
        let t0 = Instant::now();
        let write = self.write_group(shared, claims).instrument(span);
        tokio::pin!(write);
        let beat = self.heartbeat_all(&shared.job.run_id, claims);
        tokio::pin!(beat);
        let written = tokio::select! {
            r = &mut write => r,
            () = &mut beat => write.await,
        };
        match written {
            Ok(outs) => {
                let took = t0.elapsed();
                sizer.observe(claims.len(), took);
                let share = took / claims.len() as u32;
                for (c, out) in claims.iter().zip(outs) {
                    self.finish_batch(shared, &c.batch, c.token, out, Instant::now(), share)
                        .await?;
                }
                Ok(())
            }
            Err(f) => {
                sizer.shrink();
                tracing::warn!(error = %f, "commit group failed; writing its batches one by one");
                let upto = f.index.unwrap_or(claims.len());
                for (i, c) in claims[..upto].iter().enumerate() {
                    let r = self.one_batch(shared, &c.batch, c.token, c.attempt).await;
                    match r {
                        Ok(()) | Err(Error::LeaseLost { .. }) => {}
                        Err(e) => {
                            let rest: Vec<_> = claims[i + 1..].iter().collect();
                            self.unclaim(shared, &rest, &c.batch.id).await;
                            return Err(e);
                        }
                    }
                }
                let Some(i) = f.index else { return Ok(()) };
                let c = &claims[i];
                let rest: Vec<_> = claims[i + 1..].iter().collect();
                self.unclaim(shared, &rest, &c.batch.id).await;
                let e = self.write_failed(shared, &c.batch, c.token, f.error).await;
                Err(self.refused(shared, &c.batch, e))
            }
        }
    }

    /// Writes a commit group, retrying transient errors with backoff.
    async fn write_group(
        &self,
        shared: &Shared<'_>,
        claims: &[crate::ledger::Claim],
    ) -> std::result::Result<Vec<WriteOutcome>, crate::warehouse::GroupFailure> {
        let run_id = &shared.job.run_id;
        let tables = shared
            .strategy
            .write_tables(&shared.ctx)
            .map_err(crate::warehouse::GroupFailure::whole)?;
        let marks: Vec<_> = claims
            .iter()
            .map(|c| self.retried.tx_mark(run_id, &c.batch.id, c.token))
            .collect();
        let ctxs: Vec<RunContext<'_>> = claims
            .iter()
            .map(|c| self.batch_context(shared, &c.batch))
            .collect();
        let writes: Vec<_> = claims
            .iter()
            .zip(&marks)
            .zip(&ctxs)
            .map(|((c, m), ctx)| tables.write(ctx, &c.batch, m.as_ref()))
            .collect();
        let mut tries = 1;
        loop {
            match self.warehouse.write_group(&writes).await {
                Err(f) if f.error.is_transient() && tries < self.options.retry.max_attempts => {
                    tries += 1;
                    tracing::warn!(error = %f, "transient error in a commit group; retrying");
                    tokio::time::sleep(self.options.retry.backoff(tries)).await;
                }
                other => return other,
            }
        }
    }

    /// The run's context for one batch: with rule periods, the batch
    /// reads its own period's logic.
    fn batch_context<'s>(&self, shared: &'s Shared<'_>, batch: &Batch) -> RunContext<'s> {
        match shared.job.rules.is_empty() {
            true => shared.ctx,
            false => RunContext {
                source: shared.job.source_for(batch),
                ..shared.ctx
            },
        }
    }

    /// Hands claimed batches that were not written back to `pending`,
    /// logged with the batch whose failure stopped them.
    async fn unclaim(
        &self,
        shared: &Shared<'_>,
        claims: &[&crate::ledger::Claim],
        stopped_by: &BatchId,
    ) {
        for c in claims {
            let upd = BatchUpdate::reason(format!(
                "not written: batch {stopped_by} of its commit group stopped the run"
            ));
            match self
                .retried
                .transition(
                    &shared.job.run_id,
                    &c.batch.id,
                    Some(c.token),
                    BatchState::Pending,
                    upd,
                )
                .await
            {
                Ok(()) | Err(Error::LeaseLost { .. }) => {}
                Err(e) => {
                    tracing::warn!(batch = %c.batch.id, error = %e, "could not hand an unwritten batch back");
                }
            }
        }
    }

    /// Renews the leases of a commit group's batches while it is written;
    /// returns when one is lost.
    async fn heartbeat_all(&self, run_id: &RunId, claims: &[crate::ledger::Claim]) {
        let beats = claims
            .iter()
            .map(|c| Box::pin(self.heartbeat(run_id, &c.batch.id, c.token)));
        futures::future::select_all(beats).await;
    }

    /// Whether this run stages its source: when asked to, and the job
    /// has one source (with rule periods, each batch reads its period's).
    fn stages_source(&self, job: &Backfill) -> bool {
        let query = matches!(job.source, Source::Query(_));
        job.rules.is_empty() && (self.options.stage_source || (self.options.stage_queries && query))
    }

    /// Records a steering change that a claim saw and the gate did not.
    async fn note_steering(&self, shared: &Shared<'_>) {
        match self.retried.steering(&shared.job.run_id).await {
            Ok(Steering::Run) => {}
            Ok(steered) => {
                *shared.steered.lock().unwrap_or_else(|e| e.into_inner()) = Some(steered);
                shared.stop.store(true, Ordering::SeqCst);
            }
            Err(e) => self.fail(shared, e),
        }
    }

    /// Marks a batch claimed once too often as failed; returns the error
    /// that stops the run.
    async fn give_up(&self, run_id: &RunId, claim: &crate::ledger::Claim) -> Error {
        let attempts = claim.attempt - 1;
        let e = Error::AttemptsExhausted {
            batch: claim.batch.id.to_string(),
            attempts,
        };
        let upd = BatchUpdate {
            error: Some(e.to_string()),
            ..BatchUpdate::reason(format!("given up after {attempts} attempt(s)"))
        };
        match self
            .retried
            .transition(
                run_id,
                &claim.batch.id,
                Some(claim.token),
                BatchState::Failed,
                upd,
            )
            .await
        {
            Ok(()) => e,
            Err(other) => other,
        }
    }

    /// Renews a batch's lease while its write runs, every third of the
    /// lease; returns when the lease is lost (another worker took the
    /// batch over, or an operator released it).
    async fn heartbeat(&self, run_id: &RunId, batch: &BatchId, token: u64) {
        let every = (self.options.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            match self
                .retried
                .renew(run_id, batch, token, self.options.lease)
                .await
            {
                Ok(()) => {}
                Err(Error::LeaseLost { .. }) => return,
                // A heartbeat that fails for another reason is tried again
                // next time; the lease still runs until it expires.
                Err(e) => tracing::warn!(%batch, error = %e, "lease renewal failed"),
            }
        }
    }

    fn fail(&self, shared: &Shared<'_>, e: Error) {
        shared.stop.store(true, Ordering::SeqCst);
        let mut f = shared.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// Writes one batch, retrying transient errors with backoff; a batch
    /// that fails is marked `failed` in the ledger.
    async fn write_batch(
        &self,
        shared: &Shared<'_>,
        batch: &Batch,
        token: u64,
    ) -> Result<WriteOutcome> {
        let run_id = &shared.job.run_id;
        let mark = self.retried.tx_mark(run_id, &batch.id, token);
        let mut tries = 1;
        loop {
            let ctx = self.batch_context(shared, batch);
            match shared
                .strategy
                .write_batch(&ctx, batch, mark.as_ref())
                .await
            {
                Ok(w) => return Ok(w),
                Err(e) if e.is_transient() && tries < self.options.retry.max_attempts => {
                    self.emit(Event::BatchFailed {
                        batch: batch.id.clone(),
                        error: e.to_string(),
                        will_retry: true,
                    });
                    tries += 1;
                    tracing::warn!(error = %e, "transient error; retrying");
                    tokio::time::sleep(self.options.retry.backoff(tries)).await;
                }
                Err(e) => return Err(self.write_failed(shared, batch, token, e).await),
            }
        }
    }

    /// Records a batch whose write failed for good: announced, and
    /// marked `failed` unless another worker owns it now. Returns the
    /// error (or the ledger's, if it could not be recorded).
    async fn write_failed(
        &self,
        shared: &Shared<'_>,
        batch: &Batch,
        token: u64,
        e: Error,
    ) -> Error {
        let run_id = &shared.job.run_id;
        self.emit(Event::BatchFailed {
            batch: batch.id.clone(),
            error: e.to_string(),
            will_retry: false,
        });
        // A lost lease means another worker owns the batch now.
        if matches!(e, Error::LeaseLost { .. }) {
            return e;
        }
        let upd = BatchUpdate {
            error: Some(e.to_string()),
            ..BatchUpdate::reason("write failed")
        };
        let failed = self
            .retried
            .transition(run_id, &batch.id, Some(token), BatchState::Failed, upd)
            .await;
        match failed {
            // The batch is no longer ours under this token: its write
            // committed together with its ledger mark before the error (an
            // in-engine ledger), or another worker took it over. Either way
            // the ledger is right as it stands.
            Ok(()) | Err(Error::LeaseLost { .. }) => e,
            Err(other) => other,
        }
    }

    /// The error that stops the run for a batch whose write failed: a
    /// guard that failed before the commit is reported as a failed
    /// blocking check, with its outcome.
    fn refused(&self, shared: &Shared<'_>, batch: &Batch, e: Error) -> Error {
        let Error::GuardFailed {
            check,
            observed,
            expected,
            detail,
            sample,
        } = e
        else {
            return e;
        };
        let threshold = shared
            .ctx
            .guards
            .iter()
            .find(|g| g.name() == check)
            .map(crate::warehouse::Guard::threshold);
        // A blocking check failed before the commit: the batch is not
        // written (write_batch marked it failed), and the run stops on a
        // failed check.
        let o = Outcome {
            check: check.clone(),
            batch: Some(batch.id.clone()),
            status: crate::validate::Status::Fail,
            blocking: true,
            observed,
            expected,
            threshold,
            detail: format!("{detail}; checked before the commit, nothing written"),
            sample,
            query: "before the batch's commit".into(),
        };
        self.emit(Event::Checked { outcome: o.clone() });
        shared
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(o);
        Error::ValidationFailed {
            check,
            detail: format!(
                "batch {}: {detail}; nothing of the batch was written",
                batch.id
            ),
        }
    }

    async fn one_batch(
        &self,
        shared: &Shared<'_>,
        batch: &Batch,
        token: u64,
        attempt: u32,
    ) -> Result<()> {
        let run_id = &shared.job.run_id;
        self.emit(Event::BatchStarted {
            batch: batch.id.clone(),
            attempt,
        });
        let t0 = Instant::now();
        let write = self.write_batch(shared, batch, token);
        tokio::pin!(write);
        let beat = self.heartbeat(run_id, &batch.id, token);
        tokio::pin!(beat);
        let written = tokio::select! {
            r = &mut write => r,
            () = &mut beat => write.await,
        };
        let written = written.map_err(|e| self.refused(shared, batch, e))?;
        self.finish_batch(shared, batch, token, written, t0, Duration::ZERO)
            .await
    }

    /// What follows a batch's write: its ledger mark (when the write
    /// could not make it), its per-batch checks, and its report. `t0` is
    /// when this batch's own part began, and `share` its part of a commit
    /// group's transaction before it.
    async fn finish_batch(
        &self,
        shared: &Shared<'_>,
        batch: &Batch,
        token: u64,
        written: WriteOutcome,
        t0: Instant,
        share: Duration,
    ) -> Result<()> {
        let run_id = &shared.job.run_id;
        if !written.ledger_marked {
            self.retried
                .transition(
                    run_id,
                    &batch.id,
                    Some(token),
                    BatchState::Written,
                    BatchUpdate {
                        rows_before: Some(written.rows_before),
                        rows_written: Some(written.rows_written),
                        ..BatchUpdate::reason("written")
                    },
                )
                .await?;
        }
        // Per-batch checks.
        let cctx = CheckContext {
            warehouse: self.warehouse.as_ref(),
            table: &shared.write_table,
            ledger: self.retried.as_ref(),
            run_id: &shared.job.run_id,
            plan: &shared.job.plan,
            diff: shared.diff.as_ref().map(|(o, n)| (o, n)),
        };
        let check = BatchCheck {
            batch,
            written: &written,
        };
        let mut blocking_failure = None;
        for v in &shared.validators {
            // A guard that passed before the commit may say all there is.
            let checked = match v.guarded_outcome(&batch.id) {
                Some(o) => Ok(o),
                None => v.check_batch(&cctx, &check).await,
            };
            let o = match checked {
                Ok(o) => o,
                Err(e) => Outcome {
                    check: v.name(),
                    batch: Some(batch.id.clone()),
                    status: crate::validate::Status::Error,
                    blocking: v.blocking(),
                    observed: 0.0,
                    expected: None,
                    threshold: None,
                    detail: e.to_string(),
                    sample: Vec::new(),
                    query: String::new(),
                },
            };
            self.emit(Event::Checked { outcome: o.clone() });
            if o.is_blocking_failure() && blocking_failure.is_none() {
                blocking_failure = Some(Error::ValidationFailed {
                    check: o.check.clone(),
                    detail: format!("batch {}: {}", batch.id, o.detail),
                });
            }
            shared
                .outcomes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(o);
        }
        if let Some(e) = blocking_failure {
            self.retried
                .transition(
                    run_id,
                    &batch.id,
                    None,
                    BatchState::Failed,
                    BatchUpdate {
                        error: Some(e.to_string()),
                        ..BatchUpdate::reason("blocking check failed")
                    },
                )
                .await?;
            return Err(e);
        }
        if !shared.validators.is_empty() {
            self.retried
                .transition(
                    run_id,
                    &batch.id,
                    None,
                    BatchState::Validated,
                    BatchUpdate::reason("checks passed"),
                )
                .await?;
        }
        let elapsed = t0.elapsed() + share;
        let done = shared.done.fetch_add(1, Ordering::SeqCst) + 1;
        shared.this_run.fetch_add(1, Ordering::SeqCst);
        let rows = shared
            .rows_written
            .fetch_add(written.rows_written, Ordering::SeqCst)
            + written.rows_written;
        shared
            .rows_before
            .fetch_add(written.rows_before, Ordering::SeqCst);
        shared
            .slice
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((batch.id.clone(), written.rows_written, elapsed));
        let busy = {
            let mut b = shared.busy.lock().unwrap_or_else(|e| e.into_inner());
            *b += elapsed;
            *b
        };
        let eta = {
            let mut m = shared.ewma.lock().unwrap_or_else(|e| e.into_inner());
            m.observe(elapsed.as_secs_f64());
            let remaining = match shared.only {
                Some(ids) => ids
                    .len()
                    .saturating_sub(shared.this_run.load(Ordering::SeqCst)),
                None => shared.total.saturating_sub(done),
            };
            m.eta(remaining, self.options.concurrency)
        };
        let workers = self.options.concurrency.max(1) as f64;
        let rows_per_sec = if busy.is_zero() {
            0.0
        } else {
            rows as f64 * workers / busy.as_secs_f64()
        };
        self.emit(Event::BatchFinished {
            batch: batch.id.clone(),
            rows_before: written.rows_before,
            rows_written: written.rows_written,
            elapsed,
            done,
            total: shared.total,
            rows_per_sec,
            eta,
        });
        Ok(())
    }

    /// Exposes the new data (staging swap, view move). A no-op for
    /// in-place strategies. Refused while batches are missing.
    pub async fn cutover(&self, job: &Backfill) -> Result<()> {
        let run_id = &job.run_id;
        let run = self.retried.run(run_id).await?;
        if run.fingerprint != job.fingerprint() {
            return Err(self.mismatch(job, &run.fingerprint).await);
        }
        let missing = gaps(&self.retried.batches(run_id).await?);
        if !missing.is_empty() {
            return Err(Error::NotAllowed(format!(
                "cut-over with {} batch(es) not written",
                missing.len()
            )));
        }
        if run.status == RunStatus::CutOver {
            return Ok(());
        }
        // A run failed by its end-of-run checks is refused for that reason.
        self.require_validation(job).await?;
        if run.status != RunStatus::Completed {
            return Err(Error::NotAllowed(format!(
                "cut-over of a run that is {}",
                run.status.as_str()
            )));
        }
        self.require_approval(job).await?;
        self.freeze_before_cutover(job).await?;
        let (columns, _) = self.target_columns(job).await?;
        let ctx = self.context(job, &columns);
        self.check_copy_baseline(job, &ctx).await?;
        let now = self.retried.now();
        if job.brief.strategy == StrategySpec::StagingSwap {
            // Intent first: the old table will be kept beside the target as
            // the rollback handle, with an owner and an expiry. Recorded
            // before the swap, so that a swap whose own record is lost
            // still leaves the handle known to cleanup (rollback reads the
            // engine to learn whether the swap happened).
            let retention =
                jiff::SignedDuration::from_hours(24 * i64::from(job.brief.rollback.retention_days));
            self.retried
                .record_asset(&Asset {
                    run_id: run_id.clone(),
                    kind: AssetKind::KeptOld,
                    table: ctx.kept_old_table()?,
                    owner: job.brief.operator.clone(),
                    created_at: now,
                    expires_at: now.checked_add(retention).unwrap_or(jiff::Timestamp::MAX),
                    dropped_at: None,
                })
                .await?;
        }
        strategy_for(&job.brief.strategy).cutover(&ctx).await?;
        if job.brief.strategy == StrategySpec::StagingSwap {
            // The stage is now the target.
            self.retried
                .asset_dropped(run_id, &ctx.stage_table()?, now)
                .await?;
        }
        self.retried
            .set_run_status(run_id, RunStatus::CutOver, Some("cut over"))
            .await?;
        let key = self.warehouse.resolve(job.target()).await?;
        self.retried.unlock_target(&key, run_id).await?;
        self.maintenance(job, false).await?;
        Ok(())
    }

    fn context<'a>(&'a self, job: &'a Backfill, columns: &'a [Ident]) -> RunContext<'a> {
        let now = self.retried.now();
        RunContext {
            warehouse: self.warehouse.as_ref(),
            run_id: &job.run_id,
            target: job.target(),
            source: &job.source,
            staged_source: false,
            columns,
            keep_pre_image: job.brief.rollback.keep_pre_image,
            owner: &job.brief.operator,
            now,
            expires_at: now,
            guards: &[],
            scope: None,
        }
    }

    /// Drops expired temporary tables that runs created (see
    /// [`crate::cleanup`]); with `dry_run`, only reports them.
    pub async fn cleanup(
        &self,
        options: &crate::cleanup::CleanupOptions,
    ) -> Result<crate::cleanup::CleanupReport> {
        crate::cleanup::cleanup(self.warehouse.as_ref(), self.retried.as_ref(), options).await
    }

    /// Restores the exact prior state of the target and marks the run
    /// rolled back. Batches whose pre-image was never taken (never
    /// written) are left alone.
    pub async fn rollback(&self, job: &Backfill) -> Result<()> {
        let run_id = &job.run_id;
        let run = self.retried.run(run_id).await?;
        if run.status == RunStatus::RolledBack {
            return Ok(());
        }
        let rb = &job.brief.rollback;
        if job.brief.strategy.overwrites_in_place() && !rb.keep_pre_image {
            return Err(Error::NotAllowed(format!(
                "run {run_id} kept no pre-image of {}; restore it from {}",
                job.target(),
                rb.restore_point
                    .as_deref()
                    .unwrap_or("the restore point its brief names")
            )));
        }
        if run.fingerprint != job.fingerprint() {
            return Err(self.mismatch(job, &run.fingerprint).await);
        }
        // Restoring this run's pre-images over a later run's writes would
        // lose them: later runs on the target are rolled back first.
        let key = self.warehouse.resolve(job.target()).await?;
        let later: Vec<String> = self
            .retried
            .runs_on(&key)
            .await?
            .into_iter()
            .filter(|r| {
                &r.run_id != run_id
                    && r.started_at > run.started_at
                    && r.status != RunStatus::RolledBack
            })
            .map(|r| format!("{} ({})", r.run_id, r.status.as_str()))
            .collect();
        if !later.is_empty() {
            return Err(Error::NotAllowed(format!(
                "run {run_id} cannot be rolled back while later runs on {key} stand: {}. \
                 Rolling it back would put its pre-images over their writes; roll those back \
                 first, latest first",
                later.join(", ")
            )));
        }
        // Nobody writes the target while it is restored: no other run (the
        // lock), and no other worker of this run, in any process (each
        // reads the steering before its next claim).
        self.retried.lock_target(&key, run_id).await?;
        self.retried
            .steer(run_id, Steering::Cancel, &self.options.worker)
            .await?;
        let (columns, _) = self.target_columns(job).await?;
        let ctx = self.context(job, &columns);
        let records = self.retried.batches(run_id).await?;
        // A pending batch that was ever claimed may have landed: the rest
        // of a commit group handed back after its commit was cut off, or a
        // batch an operator released. Restores are marker-guarded, so one
        // that never landed is left as it is.
        let claimed: std::collections::HashSet<BatchId> = self
            .retried
            .transitions(run_id)
            .await?
            .into_iter()
            .filter(|t| t.to == BatchState::Running.as_str())
            .filter_map(|t| t.batch_id)
            .collect();
        let touched: Vec<&crate::ledger::BatchRecord> = records
            .iter()
            .filter(|b| match b.state {
                BatchState::RolledBack => false,
                BatchState::Pending => claimed.contains(&b.batch.id),
                _ => true,
            })
            .collect();
        let written: Vec<Batch> = touched.iter().map(|b| b.batch.clone()).collect();
        strategy_for(&job.brief.strategy)
            .rollback(&ctx, &written, run.status == RunStatus::CutOver)
            .await?;
        for b in touched {
            if b.state.can_move_to(BatchState::RolledBack) {
                self.retried
                    .transition(
                        run_id,
                        &b.batch.id,
                        None,
                        BatchState::RolledBack,
                        BatchUpdate::reason("rolled back"),
                    )
                    .await?;
            }
        }
        self.retried
            .set_run_status(run_id, RunStatus::RolledBack, Some("rolled back"))
            .await?;
        self.retried.unlock_target(&key, run_id).await?;
        self.maintenance(job, false).await?;
        Ok(())
    }
}

/// The per-batch checks of a job's brief.
fn validators_of(job: &Backfill) -> Vec<Box<dyn Validator>> {
    job.brief
        .validation
        .checks
        .iter()
        .filter_map(|c| c.validator())
        .collect()
}

fn scope_bounds(plan: &Plan) -> (Option<crate::Value>, Option<crate::Value>) {
    let lo = plan.batches.first().and_then(|b| b.start.clone());
    let hi = plan.batches.last().and_then(|b| b.end.clone());
    (lo, hi)
}
