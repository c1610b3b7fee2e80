//! Tests of the runner on the fake warehouse: throttling and pausing
//! through load signals, bounded concurrency, blocking validation,
//! progress events, test slices, resume safety and a realistic fixture run.
//!
//! Nothing here sleeps to wait for a result: tests read events from a
//! channel fed by the runner's observer, steer runs with the control
//! handle, and use `Faulty::slow_writes` only to make batches overlap.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backfill_core::ledger::{BatchState, Ledger, RunStatus};
use backfill_core::runner::{Backfill, Event, Load, LoadSignal, Reading, RunOptions, Runner};
use backfill_core::warehouse::{Checksum, Warehouse};
use backfill_core::{
    BatchId, Bounds, CheckSpec, Error, Expectation, Grain, Ident, Plan, Planner, Predicate, Result,
    RunId, Scope, Source, Status, StrategySpec, TableRef, Value,
};
use backfill_testkit::conformance::{
    self, fast_options, job_on, seed_table, setup, source_rows, Case, Env, Pattern,
};
use backfill_testkit::fake::FakeWarehouse;
use backfill_testkit::fixtures::{self, orders_dataset, DatasetConfig, REVENUE, REVENUE_CORRECTED};
use backfill_testkit::Faulty;
use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Options that commit every batch on its own: for tests that count batch
/// boundaries (signals read, pauses taken, batches in flight), which
/// commit groups would otherwise merge. Grouping has its own tests.
fn per_batch() -> RunOptions {
    RunOptions {
        max_group: 1,
        ..fast_options()
    }
}

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("valid identifier")
}

/// A fresh env on a fake warehouse, keeping a handle on the fake so tests
/// can read [`FakeWarehouse::write_count`].
fn fake_env() -> (Env, FakeWarehouse) {
    let fake = FakeWarehouse::new();
    (conformance::fake_env_on(fake.clone()), fake)
}

/// The conformance case (5 daily batches, partition overwrite) on a fresh
/// fake.
async fn overwrite_case(run: &str) -> (Case, FakeWarehouse) {
    let (env, fake) = fake_env();
    (setup(env, Pattern::Overwrite, run).await, fake)
}

/// Sends every event the runner emits into a channel.
fn recorded(runner: Runner) -> (Runner, UnboundedReceiver<Event>) {
    let (tx, rx) = unbounded_channel();
    let runner = runner.on_event(move |e| {
        let _ = tx.send(e.clone());
    });
    (runner, rx)
}

/// Every event already sent (the run has returned, so all were).
fn drain(rx: &mut UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Receives events until one matches `want`; returns everything received,
/// the match last.
async fn until(rx: &mut UnboundedReceiver<Event>, want: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        match rx.recv().await {
            Some(e) => {
                let hit = want(&e);
                seen.push(e);
                if hit {
                    return seen;
                }
            }
            None => panic!("events ended before the awaited one; saw {seen:#?}"),
        }
    }
}

fn throttle_reasons(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Throttled { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn finished(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::BatchFinished { .. }))
        .collect()
}

fn checked(events: &[Event]) -> Vec<backfill_core::Outcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Checked { outcome } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

/// Batch ids and states in plan order.
async fn states(ledger: &Arc<dyn Ledger>, run: &RunId) -> Vec<(String, BatchState)> {
    ledger
        .batches(run)
        .await
        .expect("batches")
        .into_iter()
        .map(|b| (b.batch.id.0, b.state))
        .collect()
}

async fn run_status(ledger: &Arc<dyn Ledger>, run: &RunId) -> RunStatus {
    ledger.run(run).await.expect("run").status
}

async fn checksum(w: &dyn Warehouse, t: &TableRef) -> Checksum {
    w.checksum(t, &Predicate::All).await.expect("checksum")
}

/// Counts batches in flight from `BatchStarted` / `BatchFinished` /
/// final `BatchFailed`, and the most ever in flight at once.
#[derive(Default)]
struct InFlight {
    now: usize,
    max: usize,
    /// In flight at each `Paused` event.
    at_pause: Vec<usize>,
}

fn tracked(runner: Runner) -> (Runner, Arc<Mutex<InFlight>>, UnboundedReceiver<Event>) {
    let state = Arc::new(Mutex::new(InFlight::default()));
    let (tx, rx) = unbounded_channel();
    let s = state.clone();
    let runner = runner.on_event(move |e| {
        {
            let mut f = s.lock().unwrap_or_else(|p| p.into_inner());
            match e {
                Event::BatchStarted { .. } => {
                    f.now += 1;
                    f.max = f.max.max(f.now);
                }
                Event::BatchFinished { .. }
                | Event::BatchFailed {
                    will_retry: false, ..
                } => f.now -= 1,
                Event::Paused { .. } => {
                    let n = f.now;
                    f.at_pause.push(n);
                }
                _ => {}
            }
        }
        let _ = tx.send(e.clone());
    });
    (runner, state, rx)
}

// ---------------------------------------------------------------------------
// Test load signals
// ---------------------------------------------------------------------------

/// One scripted answer of a [`Scripted`] signal.
#[derive(Clone, Debug)]
enum Step {
    Throttle(&'static str),
    /// An `Ok` reading observed an hour ago.
    Stale,
    /// The probe itself fails.
    Fail,
    /// The probe never answers.
    Hang,
}

/// Answers from a script, then `Ok` (fresh) forever.
struct Scripted {
    name: &'static str,
    steps: Mutex<VecDeque<Step>>,
    reads: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, steps: &[Step]) -> Arc<Self> {
        Arc::new(Scripted {
            name,
            steps: Mutex::new(steps.iter().cloned().collect()),
            reads: AtomicUsize::new(0),
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LoadSignal for Scripted {
    fn name(&self) -> String {
        self.name.to_string()
    }

    async fn read(&self) -> Result<Reading> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let step = self
            .steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match step {
            None => Ok(Reading::now(Load::Ok)),
            Some(Step::Throttle(why)) => Ok(Reading::now(Load::Throttle(why.to_string()))),
            Some(Step::Stale) => Ok(Reading {
                load: Load::Ok,
                observed_at: Timestamp::now()
                    .checked_sub(SignedDuration::from_hours(1))
                    .expect("an hour ago"),
            }),
            Some(Step::Fail) => Err(Error::engine("probe connection refused")),
            Some(Step::Hang) => std::future::pending::<Result<Reading>>().await,
        }
    }
}

/// `Ok` for the first `ok_reads` reads, then critical until calmed.
struct Critical {
    ok_reads: usize,
    reads: AtomicUsize,
    calm: AtomicBool,
}

impl Critical {
    fn new(ok_reads: usize) -> Arc<Self> {
        Arc::new(Critical {
            ok_reads,
            reads: AtomicUsize::new(0),
            calm: AtomicBool::new(false),
        })
    }

    fn calm(&self) {
        self.calm.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl LoadSignal for Critical {
    fn name(&self) -> String {
        "disk".into()
    }

    async fn read(&self) -> Result<Reading> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.ok_reads || self.calm.load(Ordering::SeqCst) {
            Ok(Reading::now(Load::Ok))
        } else {
            Ok(Reading::now(Load::Critical("disk 97% full".into())))
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Throttling through load signals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_signal_names_itself_and_the_lag_then_completes() {
    let (case, _) = overwrite_case("throttle").await;
    let lag = Scripted::new(
        "replica_lag",
        &[
            Step::Throttle("replica lag 30s"),
            Step::Throttle("replica lag 30s"),
        ],
    );
    let (runner, mut rx) = recorded(
        case.runner()
            .with_options(per_batch())
            .with_signal(lag.clone()),
    );
    let report = runner.run(&case.job).await.expect("run");
    let events = drain(&mut rx);

    let reasons = throttle_reasons(&events);
    assert_eq!(reasons.len(), 2, "{events:#?}");
    for r in &reasons {
        assert!(r.contains("replica_lag"), "names the signal: {r}");
        assert!(r.contains("replica lag 30s"), "carries the lag: {r}");
    }
    // Both throttles came before the first batch.
    let first_start = events
        .iter()
        .position(|e| matches!(e, Event::BatchStarted { .. }))
        .expect("a batch started");
    let last_throttle = events
        .iter()
        .rposition(|e| matches!(e, Event::Throttled { .. }))
        .expect("throttled");
    assert!(last_throttle < first_start, "{events:#?}");
    // Read at every gate: the two throttled ones, then before each batch.
    assert!(lag.reads() >= 2 + 5, "{} reads", lag.reads());
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_done, 5);
    assert!(!report.throttled.is_zero(), "throttled time is reported");
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_failing_and_silent_signals_throttle() {
    let (case, _) = overwrite_case("failclosed").await;
    let stale = Scripted::new("lag_probe", &[Step::Stale]);
    let failing = Scripted::new("lock_probe", &[Step::Fail]);
    let silent = Scripted::new("slow_probe", &[Step::Hang]);
    let options = RunOptions {
        signal_max_age: Duration::from_secs(5),
        signal_timeout: Duration::from_millis(50),
        ..fast_options()
    };
    let (runner, mut rx) = recorded(
        case.runner()
            .with_options(options)
            .with_signal(stale.clone())
            .with_signal(failing.clone())
            .with_signal(silent.clone()),
    );
    let report = runner.run(&case.job).await.expect("run");
    let reasons = throttle_reasons(&drain(&mut rx));

    // Signals are read in order and the first throttle wins, so each
    // scripted failure shows up in its own gate.
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons[0].contains("lag_probe") && reasons[0].contains("stale"),
        "stale reading: {}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("lock_probe")
            && reasons[1].contains("signal failed")
            && reasons[1].contains("probe connection refused"),
        "failed signal: {}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("slow_probe") && reasons[2].contains("no reading"),
        "timed-out signal: {}",
        reasons[2]
    );
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, 5);
}

/// On a current-thread runtime the runner task runs from announcing the
/// pause to parking in `wait_while_paused` before this test sees the
/// event, so `resume` never lands in between (that race is
/// `resume_right_after_critical_pause_is_announced`).
#[tokio::test(flavor = "current_thread")]
async fn critical_signal_pauses_until_resumed() {
    let (case, _) = overwrite_case("critical").await;
    let disk = Critical::new(2);
    let (runner, mut rx) = recorded(
        case.runner()
            .with_options(per_batch())
            .with_signal(disk.clone()),
    );
    let control = runner.control();
    let job = case.job.clone();
    let r2 = runner.clone();
    let handle = tokio::spawn(async move { r2.run(&job).await });

    let seen = until(&mut rx, |e| matches!(e, Event::Paused { .. })).await;
    let Some(Event::Paused { reason }) = seen.last() else {
        unreachable!()
    };
    assert!(
        reason.contains("disk") && reason.contains("97% full"),
        "{reason}"
    );
    assert_eq!(finished(&seen).len(), 2, "paused after two batches");
    let ledger = &case.env.ledger;
    assert_eq!(
        run_status(ledger, &case.job.run_id).await,
        RunStatus::Paused
    );
    let st = states(ledger, &case.job.run_id).await;
    assert_eq!(st.iter().filter(|(_, s)| s.is_done()).count(), 2, "{st:?}");
    assert!(
        !st.iter().any(|(_, s)| *s == BatchState::Running),
        "no batch left running: {st:?}"
    );

    // Resumed while the signal is still critical: it is read again and
    // the run pauses again, writing nothing.
    control.resume();
    let seen = until(&mut rx, |e| matches!(e, Event::Paused { .. })).await;
    assert!(matches!(seen.first(), Some(Event::Resumed)), "{seen:#?}");
    assert!(finished(&seen).is_empty(), "{seen:#?}");
    assert_eq!(
        run_status(ledger, &case.job.run_id).await,
        RunStatus::Paused
    );

    // The load drops; resume finishes the plan.
    disk.calm();
    control.resume();
    let report = handle.await.expect("join").expect("run");
    let rest = drain(&mut rx);
    assert!(matches!(rest.first(), Some(Event::Resumed)), "{rest:#?}");
    assert_eq!(finished(&rest).len(), 3);
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(
        run_status(ledger, &case.job.run_id).await,
        RunStatus::Completed
    );
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

/// An orchestrator that resumes as soon as it sees `Paused` (from the
/// observer, or from another thread at the wrong moment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_right_after_critical_pause_is_announced() {
    let (case, _) = overwrite_case("quickresume").await;
    let disk = Critical::new(2);
    let runner = case.runner().with_signal(disk.clone());
    let control = runner.control();
    let ledger = case.env.ledger.clone();
    let run_id = case.job.run_id.clone();
    let (tx, mut rx) = unbounded_channel();
    let runner = runner.on_event(move |e| {
        // The ledger status at every batch start.
        let status = match e {
            Event::BatchStarted { .. } => futures::executor::block_on(ledger.run(&run_id))
                .ok()
                .map(|r| r.status),
            _ => None,
        };
        if let Event::Paused { .. } = e {
            disk.calm();
            control.resume();
        }
        let _ = tx.send((e.clone(), status));
    });
    let report = runner.run(&case.job).await.expect("run");
    let events: Vec<(Event, Option<RunStatus>)> =
        std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    let paused = events
        .iter()
        .position(|(e, _)| matches!(e, Event::Paused { .. }))
        .expect("paused");
    let resumed = events.iter().position(|(e, _)| matches!(e, Event::Resumed));
    assert!(
        resumed.is_some_and(|r| r > paused),
        "a Resumed event follows the pause: {events:#?}"
    );
    for (e, status) in &events[paused..] {
        if let Event::BatchStarted { batch, .. } = e {
            assert_eq!(
                *status,
                Some(RunStatus::Running),
                "batch {batch} started while the ledger said the run is paused"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Bounded concurrency
// ---------------------------------------------------------------------------

fn slow_runner(case: &Case) -> Runner {
    let faulty = Faulty::new(case.env.warehouse.clone());
    faulty.slow_writes(Duration::from_millis(30));
    Runner::new(Arc::new(faulty), case.env.ledger.clone()).with_options(per_batch())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_concurrency_is_one_batch_at_a_time() {
    let (case, _) = overwrite_case("serial").await;
    let runner = slow_runner(&case);
    assert_eq!(runner.options().concurrency, 1);
    let (runner, flight, mut rx) = tracked(runner);
    let report = runner.run(&case.job).await.expect("run");
    {
        let f = flight.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(f.max, 1, "never more than one batch in flight");
        assert_eq!(f.now, 0);
    }
    // One batch after another, in plan order.
    let order: Vec<BatchId> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::BatchStarted { batch, .. } | Event::BatchFinished { batch, .. } => Some(batch),
            _ => None,
        })
        .collect();
    let expected: Vec<BatchId> = case
        .job
        .plan
        .batches
        .iter()
        .flat_map(|b| [b.id.clone(), b.id.clone()])
        .collect();
    assert_eq!(order, expected);
    assert_eq!(report.batches_done, 5);
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_three_keeps_exactly_three_in_flight() {
    let (case, _) = overwrite_case("parallel3").await;
    let (runner, flight, mut rx) = tracked(slow_runner(&case).concurrency(3));
    let report = runner.run(&case.job).await.expect("run");
    {
        let f = flight.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(f.max, 3, "three batches overlap, never more");
        assert_eq!(f.now, 0);
    }
    let events = drain(&mut rx);
    let done: BTreeSet<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::BatchFinished { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    assert_eq!(done, (1..=5).collect(), "each batch counted once");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, 5);
    let st = states(&case.env.ledger, &case.job.run_id).await;
    assert!(st.iter().all(|(_, s)| s.is_done()), "{st:?}");
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

/// A critical signal with three workers: `Paused` must mean the run is at
/// a batch boundary, i.e. nothing is still being written.
#[tokio::test(flavor = "current_thread")]
async fn critical_pause_with_concurrency_waits_for_in_flight_batches() {
    let (case, _) = overwrite_case("critical3").await;
    let disk = Critical::new(2);
    let runner = slow_runner(&case).concurrency(3).with_signal(disk.clone());
    let control = runner.control();
    let (runner, flight, mut rx) = tracked(runner);
    let job = case.job.clone();
    let handle = tokio::spawn(async move { runner.run(&job).await });
    until(&mut rx, |e| matches!(e, Event::Paused { .. })).await;
    let at_pause = flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .at_pause
        .clone();
    disk.calm();
    control.resume();
    let report = handle.await.expect("join").expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(
        at_pause,
        vec![0],
        "batches were still in flight when Paused was announced"
    );
}

// ---------------------------------------------------------------------------
// 3. Blocking validation
// ---------------------------------------------------------------------------

/// The corrected source plus a second copy of order 17, on the third day
/// in scope (2026-03-05).
async fn source_with_duplicate(case: &Case) -> Source {
    let mut rows = source_rows();
    let dup = rows
        .iter()
        .find(|r| r[0] == Value::Int(17))
        .cloned()
        .expect("row 17");
    assert_eq!(dup[1], Value::Date(date(2026, 3, 5)));
    rows.push(dup);
    Source::Table(seed_table(&case.env, "facts_dup", &rows).await)
}

fn with_checks(mut job: Backfill, checks: Vec<CheckSpec>) -> Backfill {
    job.brief.validation.checks = checks;
    job
}

fn unique_id(blocking: bool) -> CheckSpec {
    CheckSpec::Unique {
        keys: vec![ident("id")],
        blocking,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_unique_check_stops_the_run_at_the_duplicate() {
    let (case, _) = overwrite_case("dupblock").await;
    let source = source_with_duplicate(&case).await;
    let job = with_checks(
        job_on(&case.env, Pattern::Overwrite, "dupblock", source),
        vec![unique_id(true)],
    );
    let (runner, mut rx) = recorded(case.runner());
    let err = runner.run(&job).await.expect_err("validation fails");
    match &err {
        Error::ValidationFailed { check, detail } => {
            assert_eq!(check, "unique(id)");
            assert!(detail.contains("2026-03-05"), "{detail}");
        }
        other => panic!("expected ValidationFailed, got {other:?}"),
    }
    let st = states(&case.env.ledger, &job.run_id).await;
    let want = [
        ("2026-03-03", BatchState::Validated),
        ("2026-03-04", BatchState::Validated),
        ("2026-03-05", BatchState::Failed),
        ("2026-03-06", BatchState::Pending),
        ("2026-03-07", BatchState::Pending),
    ];
    let want: Vec<(String, BatchState)> = want.iter().map(|(i, s)| (i.to_string(), *s)).collect();
    assert_eq!(st, want);
    let failed = case
        .env
        .ledger
        .batches(&job.run_id)
        .await
        .expect("batches")
        .into_iter()
        .find(|b| b.state == BatchState::Failed)
        .expect("failed batch");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unique(id)")),
        "{:?}",
        failed.error
    );
    assert_eq!(
        run_status(&case.env.ledger, &job.run_id).await,
        RunStatus::Failed
    );

    let events = drain(&mut rx);
    let outcomes = checked(&events);
    let statuses: Vec<Status> = outcomes.iter().map(|o| o.status).collect();
    assert_eq!(statuses, vec![Status::Pass, Status::Pass, Status::Fail]);
    let fail = &outcomes[2];
    assert_eq!(fail.batch, Some(BatchId::from("2026-03-05")));
    assert!(fail.blocking);
    assert_eq!(fail.observed, 1.0);
    assert_eq!(fail.sample, vec!["17".to_string()], "names the duplicate");
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Failed
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_unique_check_warns_and_completes() {
    let (case, _) = overwrite_case("dupwarn").await;
    let source = source_with_duplicate(&case).await;
    let job = with_checks(
        job_on(&case.env, Pattern::Overwrite, "dupwarn", source),
        vec![unique_id(false)],
    );
    let (runner, mut rx) = recorded(case.runner());
    let report = runner.run(&job).await.expect("warnings do not stop");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_done, 5);
    let outcomes = checked(&drain(&mut rx));
    let statuses: Vec<Status> = outcomes.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        vec![
            Status::Pass,
            Status::Pass,
            Status::Warn,
            Status::Pass,
            Status::Pass
        ]
    );
    assert_eq!(outcomes[2].sample, vec!["17".to_string()]);
    assert!(!outcomes[2].blocking);
    assert_eq!(report.outcomes, outcomes, "the report has every outcome");
    assert_eq!(report.failures().count(), 0);
    let st = states(&case.env.ledger, &job.run_id).await;
    assert!(st.iter().all(|(_, s)| s.is_done()), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_row_count_passes_then_fails_on_a_dropped_row() {
    // The corrected source drops order 13 on 2026-03-04; 2026-03-03 keeps
    // its four rows.
    let (case, _) = overwrite_case("rowcount").await;
    let job = with_checks(
        case.job.clone(),
        vec![CheckSpec::RowCount {
            expect: Expectation::Unchanged,
            blocking: true,
        }],
    );
    let (runner, mut rx) = recorded(case.runner());
    let err = runner.run(&job).await.expect_err("dropped row");
    assert!(
        matches!(&err, Error::ValidationFailed { check, detail }
            if check == "row_count" && detail.contains("2026-03-04")),
        "{err:?}"
    );
    let outcomes = checked(&drain(&mut rx));
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(outcomes[0].batch, Some(BatchId::from("2026-03-03")));
    assert_eq!(outcomes[0].status, Status::Pass);
    assert_eq!(
        (outcomes[0].expected, outcomes[0].observed),
        (Some(4.0), 4.0)
    );
    assert_eq!(outcomes[1].batch, Some(BatchId::from("2026-03-04")));
    assert_eq!(outcomes[1].status, Status::Fail);
    assert_eq!(
        (outcomes[1].expected, outcomes[1].observed),
        (Some(4.0), 3.0)
    );
    let st = states(&case.env.ledger, &job.run_id).await;
    assert_eq!(st[0].1, BatchState::Validated);
    assert_eq!(st[1].1, BatchState::Failed);
    assert!(st[2..].iter().all(|(_, s)| *s == BatchState::Pending));
}

/// A check on a column the target does not have is an input error the
/// runner can see before writing, like an unknown scope column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_unknown_column_is_refused_before_any_write() {
    let (case, fake) = overwrite_case("badcheck").await;
    let job = with_checks(
        case.job.clone(),
        vec![CheckSpec::Unique {
            keys: vec![ident("no_such_column")],
            blocking: true,
        }],
    );
    let err = case.runner().run(&job).await.expect_err("unknown column");
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err:?}");
    assert_eq!(fake.write_count(), 0, "nothing written");
}

// ---------------------------------------------------------------------------
// 4. Progress
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_up_with_eta_and_rows() {
    let (case, _) = overwrite_case("progress").await;
    let (runner, mut rx) = recorded(case.runner());
    let report = runner.run(&case.job).await.expect("run");
    let events = drain(&mut rx);
    assert_eq!(
        events.first(),
        Some(&Event::RunStarted {
            total: 5,
            done: 0,
            resumed: false
        })
    );
    let mut dones = Vec::new();
    let mut etas = Vec::new();
    let mut rows = 0;
    for e in finished(&events) {
        let Event::BatchFinished {
            done,
            total,
            eta,
            rows_written,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(*total, 5);
        dones.push(*done);
        etas.push(eta.expect("an ETA after every batch"));
        rows += rows_written;
    }
    assert_eq!(dones, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        etas.last(),
        Some(&Duration::ZERO),
        "nothing left at the end"
    );
    assert_eq!(rows, report.rows_written);
    // 4 + 3 (one dropped) + 5 (one added) + 4 + 4.
    assert_eq!(report.rows_written, 20);
    assert_eq!(
        events.last(),
        Some(&Event::RunFinished {
            status: RunStatus::Completed
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_started_says_resumed_after_a_cancel() {
    let (case, _) = overwrite_case("resumed").await;
    let runner = case.runner().with_options(per_batch());
    let ctl = runner.control();
    let (tx, mut rx) = unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let runner = runner.on_event(move |e| {
        if matches!(e, Event::BatchFinished { .. }) && count.fetch_add(1, Ordering::SeqCst) == 1 {
            ctl.cancel();
        }
        let _ = tx.send(e.clone());
    });
    let first = runner.run(&case.job).await.expect("cancelled run");
    assert_eq!(first.status, RunStatus::Cancelled, "{first}");
    let events = drain(&mut rx);
    assert_eq!(
        events.first(),
        Some(&Event::RunStarted {
            total: 5,
            done: 0,
            resumed: false
        })
    );
    assert_eq!(finished(&events).len(), 2);

    let (again, mut rx) = recorded(case.runner());
    let second = again.run(&case.job).await.expect("resume");
    let events = drain(&mut rx);
    assert_eq!(
        events.first(),
        Some(&Event::RunStarted {
            total: 5,
            done: 2,
            resumed: true
        })
    );
    let dones: Vec<usize> = finished(&events)
        .into_iter()
        .map(|e| match e {
            Event::BatchFinished { done, .. } => *done,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(dones, vec![3, 4, 5], "done counts on from the ledger");
    assert_eq!(second.batches_this_run, 3);
    assert_eq!(second.status, RunStatus::Completed);
    assert_eq!(first.rows_written + second.rows_written, 20);
}

// ---------------------------------------------------------------------------
// 5. Test slice
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_slice_runs_exactly_the_named_batches_and_extrapolates() {
    let (case, fake) = overwrite_case("slice").await;
    let runner = case.runner();
    let ids = vec![BatchId::from("2026-03-04"), BatchId::from("2026-03-06")];

    // An unknown id anywhere in the list is refused before anything runs.
    let bad = vec![ids[0].clone(), BatchId::from("2026-12-25")];
    let err = runner
        .test_slice(&case.job, &bad)
        .await
        .expect_err("unknown batch");
    assert!(
        matches!(&err, Error::InvalidPlan(m) if m.contains("2026-12-25")),
        "{err:?}"
    );
    assert_eq!(fake.write_count(), 0, "nothing written");
    assert!(matches!(
        case.env.ledger.run(&case.job.run_id).await,
        Err(Error::RunNotFound(_))
    ));

    let est = runner.test_slice(&case.job, &ids).await.expect("slice");
    assert_eq!(fake.write_count(), 2);
    let st = states(&case.env.ledger, &case.job.run_id).await;
    for (id, s) in &st {
        let named = ids.iter().any(|b| &b.0 == id);
        assert_eq!(s.is_done(), named, "{id}: {s}");
        if !named {
            assert_eq!(*s, BatchState::Pending, "{id}");
        }
    }
    assert_eq!(est.plan_batches, 5);
    assert_eq!(est.batches.len(), 2);
    let ran: BTreeSet<&BatchId> = est.batches.iter().map(|(b, _, _)| b).collect();
    assert_eq!(ran, ids.iter().collect());
    // 2026-03-04 lost a row (3 written), 2026-03-06 has 4.
    let rows: u64 = est.batches.iter().map(|(_, r, _)| r).sum();
    assert_eq!(rows, 7);
    assert_eq!(est.mean_rows, 3.5);
    assert_eq!(est.estimated_rows, (est.mean_rows * 5.0).round() as u64);
    assert_eq!(est.estimated_rows, 18);
    assert!(est.estimated_total >= est.mean_batch);

    // The real run writes only the other three.
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.batches_this_run, 3);
    assert_eq!(fake.write_count(), 5);
    assert_eq!(report.status, RunStatus::Completed);
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_slice_estimate_carries_the_slice_check_outcomes() {
    let (case, _) = overwrite_case("sliceout").await;
    let ids = vec![BatchId::from("2026-03-04"), BatchId::from("2026-03-06")];
    let est = case
        .runner()
        .test_slice(&case.job, &ids)
        .await
        .expect("slice");
    // The brief declares one check (unique(id)): one outcome per batch.
    let checked: BTreeSet<Option<BatchId>> = est.outcomes.iter().map(|o| o.batch.clone()).collect();
    assert_eq!(est.outcomes.len(), 2, "{:#?}", est.outcomes);
    assert_eq!(checked, ids.into_iter().map(Some).collect());
    assert!(est.outcomes.iter().all(|o| o.status == Status::Pass));
}

// ---------------------------------------------------------------------------
// 6. Resume safety and refused input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_a_changed_source_or_strategy_is_refused() {
    let (case, fake) = overwrite_case("changed").await;
    let runner = case.runner();
    runner
        .test_slice(&case.job, &[BatchId::from("2026-03-03")])
        .await
        .expect("start the run");
    let writes = fake.write_count();
    assert_eq!(writes, 1);
    let held = checksum(case.env.warehouse.as_ref(), &case.target).await;
    let stored = case
        .env
        .ledger
        .run(&case.job.run_id)
        .await
        .expect("run")
        .fingerprint;

    // The same rows under another name is still another source.
    let other = seed_table(&case.env, "facts_fix_v2", &source_rows()).await;
    let mut changed_source = case.job.clone();
    changed_source.source = Source::Table(other);
    let mut changed_strategy = case.job.clone();
    changed_strategy.brief.strategy = StrategySpec::Merge {
        keys: vec![ident("id")],
    };
    let changed_code = case.job.clone().code_version("v2");

    let cases = [
        (&changed_source, "source"),
        (&changed_strategy, "strategy"),
        (&changed_code, "code_version"),
    ];
    for (job, part) in cases {
        let err = runner.run(job).await.expect_err("different plan");
        match err {
            Error::FingerprintMismatch {
                run,
                stored: s,
                given,
                changed,
            } => {
                assert_eq!(changed, vec![part.to_string()]);
                assert_eq!(run, "changed");
                assert_eq!(s, stored);
                assert_eq!(given, job.fingerprint());
                assert_ne!(given, stored);
            }
            other => panic!("expected FingerprintMismatch, got {other:?}"),
        }
        assert_eq!(fake.write_count(), writes, "nothing written");
        assert_eq!(
            checksum(case.env.warehouse.as_ref(), &case.target).await,
            held
        );
    }
    let st = states(&case.env.ledger, &case.job.run_id).await;
    assert_eq!(st.iter().filter(|(_, s)| s.is_done()).count(), 1, "{st:?}");

    // The original plan still resumes.
    let report = runner.run(&case.job).await.expect("resume");
    assert_eq!(report.batches_this_run, 4);
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        case.expected().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_brief_sections_are_all_listed_and_nothing_is_written() {
    let (case, fake) = overwrite_case("blank").await;
    let original = checksum(case.env.warehouse.as_ref(), &case.target).await;
    let tables = fake.tables();
    let mut job = case.job.clone();
    job.brief.reason = String::new();
    job.brief.rollback.description = "   ".into();
    job.brief.operations.pause = String::new();
    job.brief.validation.checks.clear();

    let err = case.runner().run(&job).await.expect_err("preflight");
    let Error::Preflight(findings) = &err else {
        panic!("expected Preflight, got {err:?}");
    };
    let blocking: BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.blocking)
        .map(|f| f.section.as_str())
        .collect();
    assert_eq!(
        blocking,
        ["operations.pause", "reason", "rollback", "validation"]
            .into_iter()
            .collect(),
        "{findings:#?}"
    );
    assert_eq!(
        findings,
        &job.brief.preflight().findings,
        "every finding, not just the first"
    );
    let text = err.to_string();
    for section in &blocking {
        assert!(text.contains(section), "{text}");
    }
    assert_eq!(fake.write_count(), 0, "nothing written");
    assert_eq!(fake.tables(), tables, "no pre-image or other table created");
    assert_eq!(
        checksum(case.env.warehouse.as_ref(), &case.target).await,
        original
    );
    assert!(matches!(
        case.env.ledger.run(&job.run_id).await,
        Err(Error::RunNotFound(_))
    ));
    // The refused run took no lock: a complete brief on the target runs.
    case.runner().run(&case.job).await.expect("complete brief");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_run_ids_and_identifiers_is_a_typed_error() {
    for bad in [
        "fix'; DROP TABLE facts; --",
        "fix\"; drop table facts",
        "fix; drop",
        "Fix",
        "../fix",
        "",
        "a_run_id_that_is_longer_than_32_chars",
    ] {
        assert!(
            matches!(RunId::new(bad), Err(Error::InvalidIdentifier { .. })),
            "run id {bad:?}"
        );
    }
    for bad in [
        "facts\"; DROP TABLE facts; --",
        "facts; drop table x",
        "day' OR '1'='1",
        "1day",
        "",
    ] {
        assert!(
            matches!(Ident::new(bad), Err(Error::InvalidIdentifier { .. })),
            "ident {bad:?}"
        );
        assert!(
            matches!(TableRef::parse(bad), Err(Error::InvalidIdentifier { .. })),
            "table {bad:?}"
        );
    }
    assert!(matches!(
        TableRef::parse("public.facts\"; drop"),
        Err(Error::InvalidIdentifier { .. })
    ));
    assert!(matches!(
        Scope::new(
            TableRef::parse("facts").expect("table"),
            "day\" >= 0; DELETE FROM facts; --",
            Bounds::dates(date(2026, 3, 1), date(2026, 3, 2)),
            "UTC",
        ),
        Err(Error::InvalidIdentifier { .. })
    ));
    let facts = TableRef::parse("facts").expect("table");
    assert!(matches!(
        facts.sibling("\"; drop table facts"),
        Err(Error::InvalidIdentifier { .. })
    ));
}

// ---------------------------------------------------------------------------
// 7. Realistic fixture run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_overwrite_over_dst_and_month_ends_then_rollback() {
    let ds = orders_dataset(&DatasetConfig::default());
    let (env, fake) = fake_env();
    fixtures::load(&fake, &ds, None).await.expect("load");
    let revenue = TableRef::parse(REVENUE).expect("table");
    let corrected = TableRef::parse(REVENUE_CORRECTED).expect("table");
    let w = env.warehouse.as_ref();
    let original = checksum(w, &revenue).await;
    let want = checksum(w, &corrected).await;
    assert_ne!(original, want, "the fix changes something");

    let tz = &ds.config.time_zone;
    assert_eq!(tz, "America/New_York");
    let dst = date(2026, 3, 8);
    assert_eq!(ds.dst_days, vec![dst]);
    assert_eq!(ds.month_ends.len(), 3);

    let scope = Scope::new(
        revenue.clone(),
        "order_date",
        Bounds::dates(ds.config.start, ds.end),
        tz,
    )
    .expect("scope");
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).expect("plan");
    assert_eq!(plan.batches.len(), ds.config.days as usize);
    let mut brief = conformance::brief(scope, StrategySpec::PartitionOverwrite);
    brief.validation.checks = vec![
        CheckSpec::Unique {
            keys: vec![ident("order_id")],
            blocking: true,
        },
        CheckSpec::RowCount {
            expect: Expectation::Unchanged,
            blocking: true,
        },
    ];
    let job = Backfill::new(
        RunId::new("refunds_fix").expect("run id"),
        brief,
        plan.clone(),
        Source::Table(corrected.clone()),
    );

    // The DST day is exactly one batch covering exactly that date.
    let covering: Vec<&backfill_core::Batch> = plan
        .batches
        .iter()
        .filter(|b| {
            let v = Value::Date(dst);
            b.predicate.matches(&|c: &Ident| {
                if c.as_str() == "order_date" {
                    v.clone()
                } else {
                    Value::Null
                }
            })
        })
        .collect();
    assert_eq!(covering.len(), 1);
    assert_eq!(covering[0].id, BatchId::from("2026-03-08"));
    assert_eq!(covering[0].start, Some(Value::Date(dst)));
    assert_eq!(covering[0].end, Some(Value::Date(date(2026, 3, 9))));

    let (runner, mut rx) = recorded(
        Runner::new(env.warehouse.clone(), env.ledger.clone()).with_options(fast_options()),
    );
    let report = runner.run(&job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_done, plan.batches.len());
    assert_eq!(report.rows_written, ds.revenue.len() as u64);
    assert_eq!(report.outcomes.len(), 2 * plan.batches.len());
    assert!(
        report.outcomes.iter().all(|o| o.status == Status::Pass),
        "{report}"
    );

    let records = env.ledger.batches(&job.run_id).await.expect("batches");
    assert!(
        records.iter().all(|b| b.state == BatchState::Validated),
        "every batch validated"
    );
    // Every day, DST day and month-ends included, wrote exactly its orders.
    let per_day: Vec<(BatchId, u64)> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::BatchFinished {
                batch,
                rows_written,
                ..
            } => Some((batch, rows_written)),
            _ => None,
        })
        .collect();
    let expected: Vec<(BatchId, u64)> = ds
        .orders_per_day
        .iter()
        .map(|(d, n)| (BatchId(d.to_string()), *n as u64))
        .collect();
    assert_eq!(per_day, expected);
    for d in ds.month_ends.iter().chain(&ds.dst_days) {
        assert!(per_day.iter().any(|(b, n)| b.0 == d.to_string() && *n > 0));
    }

    assert_eq!(checksum(w, &revenue).await, want, "revenue is corrected");

    runner.rollback(&job).await.expect("rollback");
    assert_eq!(
        checksum(w, &revenue).await,
        original,
        "rollback restores history"
    );
    assert_eq!(
        run_status(&env.ledger, &job.run_id).await,
        RunStatus::RolledBack
    );
}

// ---------------------------------------------------------------------------
// Crash recovery: liveness, heartbeats, attempt caps, releases, cancel
// ---------------------------------------------------------------------------

/// The overwrite case on a fake whose ledger is a [`MemoryLedger`] the test
/// keeps, so it can stand in for another (dead) process.
async fn memory_case(run: &str) -> (Case, backfill_core::MemoryLedger) {
    let (mut env, _) = fake_env();
    let mem = backfill_core::MemoryLedger::new();
    env.ledger = Arc::new(mem.clone());
    (setup(env, Pattern::Overwrite, run).await, mem)
}

/// A batch held by a process that died is taken back at once, though its
/// lease has an hour to go; the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_batch_is_taken_back_without_waiting() {
    let (case, mem) = memory_case("dead_holder").await;
    let job = &case.job;
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(fast_options());
    // Another process claims the first batch, then dies.
    let other = mem.other_instance("process-2");
    backfill_testkit::conformance::end_to_end::die_inside_first_batch(&other, job).await;
    let first = job.plan.batches[0].id.clone();
    // While it lives, its batch is left alone.
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.gaps, vec![first.clone()]);
    assert_eq!(report.held.len(), 1);
    assert_eq!(
        report.held[0].liveness,
        backfill_core::ledger::Liveness::Alive
    );
    assert!(
        report.to_string().contains("incomplete: 4 of 5 batches"),
        "{report}"
    );
    assert!(
        report.to_string().contains("held by worker doomed (alive"),
        "{report}"
    );
    mem.declare_dead("process-2");
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, 1);
    let log = mem.transitions(&job.run_id).await.unwrap();
    assert!(
        log.iter().any(|t| t.batch_id.as_ref() == Some(&first)
            && t.reason
                .contains("holder doomed (instance process-2) is dead")),
        "{log:#?}"
    );
}

/// A worker renews its lease while a slow batch runs, so no other worker
/// takes the batch over, however short the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_slow_batch_from_being_taken_over() {
    let (case, mem) = memory_case("heartbeat").await;
    let faulty = Faulty::new(case.env.warehouse.clone());
    faulty.slow_writes(Duration::from_millis(120));
    let options = RunOptions {
        lease: Duration::from_millis(60),
        concurrency: 2,
        ..fast_options()
    };
    let runner = Runner::new(Arc::new(faulty), case.env.ledger.clone()).with_options(options);
    let report = runner.run(&case.job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    let log = mem.transitions(&case.job.run_id).await.unwrap();
    assert!(
        !log.iter().any(|t| t.reason.contains("taken over")),
        "a live worker's batch was taken over: {log:#?}"
    );
    for b in mem.batches(&case.job.run_id).await.unwrap() {
        assert_eq!(b.attempts, 1, "{b:?}");
    }
}

/// A batch claimed as often as the run allows is given up, with its
/// history; resume leaves it failed until an operator releases it, with
/// who and why in the log; then a plain run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claimed_too_often_waits_for_an_operator() {
    let (case, mem) = memory_case("given_up").await;
    let job = &case.job;
    let options = RunOptions {
        max_batch_attempts: 1,
        ..fast_options()
    };
    let runner =
        Runner::new(case.env.warehouse.clone(), case.env.ledger.clone()).with_options(options);
    let other = mem.other_instance("process-2");
    backfill_testkit::conformance::end_to_end::die_inside_first_batch(&other, job).await;
    mem.declare_dead("process-2");
    let first = job.plan.batches[0].id.clone();
    let err = runner.run(job).await.unwrap_err();
    assert!(
        matches!(&err, Error::AttemptsExhausted { batch, attempts: 1 } if *batch == first.to_string()),
        "{err}"
    );
    let rec = |bs: Vec<backfill_core::ledger::BatchRecord>| {
        bs.into_iter().find(|b| b.batch.id == first).unwrap()
    };
    let b = rec(mem.batches(&job.run_id).await.unwrap());
    assert_eq!(b.state, BatchState::Failed);
    assert!(
        b.error.as_deref().unwrap_or("").contains("given up"),
        "{b:?}"
    );
    // A plain rerun writes the rest but leaves the given-up batch alone.
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.gaps, vec![first.clone()]);
    assert_eq!(
        rec(mem.batches(&job.run_id).await.unwrap()).state,
        BatchState::Failed
    );
    let refused = runner.release(job, &first, "", "").await.unwrap_err();
    assert!(matches!(refused, Error::NotAllowed(_)), "{refused}");
    runner
        .release(job, &first, "grace", "the source is fixed")
        .await
        .unwrap();
    let log = mem.transitions(&job.run_id).await.unwrap();
    assert!(log
        .iter()
        .any(|t| t.reason == "released by grace: the source is fixed"));
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(rec(mem.batches(&job.run_id).await.unwrap()).attempts, 1);
}

/// A cancel stops this call only: the target is free meanwhile, and a
/// plain `run` on the same runner resumes and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_frees_its_target_and_resumes_with_a_plain_run() {
    let (case, mem) = memory_case("cancelled").await;
    let job = &case.job;
    let runner =
        Runner::new(case.env.warehouse.clone(), case.env.ledger.clone()).with_options(per_batch());
    let control = runner.control();
    let runner = runner.on_event(move |e| {
        if matches!(e, Event::BatchFinished { done: 2, .. }) {
            control.cancel();
        }
    });
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled, "{report}");
    assert_eq!(report.batches_done, 2);
    // The target is free: another run may take it, and give it back.
    let other = RunId::new("another").unwrap();
    mem.lock_target(job.target(), &other).await.unwrap();
    mem.unlock_target(job.target(), &other).await.unwrap();
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, 3);
}

/// A transient error on a ledger call is retried like a write's, instead
/// of failing the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_ledger_errors_are_retried() {
    let (case, mem) = memory_case("flaky_ledger").await;
    let flaky = Arc::new(FlakyLedger {
        inner: mem.clone(),
        claims: AtomicUsize::new(0),
    });
    let runner =
        Runner::new(case.env.warehouse.clone(), flaky.clone()).with_options(fast_options());
    let report = runner.run(&case.job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert!(
        flaky.claims.load(Ordering::SeqCst) > 5,
        "claims were retried"
    );
}

/// A memory ledger whose every other claim fails with a transient error.
struct FlakyLedger {
    inner: backfill_core::MemoryLedger,
    claims: AtomicUsize,
}

#[async_trait]
impl Ledger for FlakyLedger {
    async fn lock_target(&self, t: &TableRef, r: &RunId) -> Result<()> {
        self.inner.lock_target(t, r).await
    }
    async fn unlock_target(&self, t: &TableRef, r: &RunId) -> Result<()> {
        self.inner.unlock_target(t, r).await
    }
    async fn begin_run(
        &self,
        r: &backfill_core::ledger::RunRecord,
        b: &[backfill_core::Batch],
    ) -> Result<backfill_core::ledger::RunStart> {
        self.inner.begin_run(r, b).await
    }
    async fn run(&self, r: &RunId) -> Result<backfill_core::ledger::RunRecord> {
        self.inner.run(r).await
    }
    async fn runs_on(&self, t: &TableRef) -> Result<Vec<backfill_core::ledger::RunRecord>> {
        self.inner.runs_on(t).await
    }
    async fn set_run_status(&self, r: &RunId, s: RunStatus, n: Option<&str>) -> Result<()> {
        self.inner.set_run_status(r, s, n).await
    }
    async fn claim(
        &self,
        r: &RunId,
        w: &str,
        l: Duration,
        o: Option<&[BatchId]>,
    ) -> Result<Option<backfill_core::ledger::Claim>> {
        if self.claims.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            return Err(Error::transient("connection reset"));
        }
        self.inner.claim(r, w, l, o).await
    }
    async fn steer(&self, r: &RunId, to: backfill_core::ledger::Steering, who: &str) -> Result<()> {
        self.inner.steer(r, to, who).await
    }
    async fn steering(&self, r: &RunId) -> Result<backfill_core::ledger::Steering> {
        self.inner.steering(r).await
    }
    async fn renew(&self, r: &RunId, b: &BatchId, t: u64, l: Duration) -> Result<()> {
        self.inner.renew(r, b, t, l).await
    }
    async fn release(&self, r: &RunId, b: &BatchId, who: &str, why: &str) -> Result<()> {
        self.inner.release(r, b, who, why).await
    }
    async fn liveness(
        &self,
        l: &backfill_core::ledger::Lease,
    ) -> Result<backfill_core::ledger::Liveness> {
        self.inner.liveness(l).await
    }
    fn instance(&self) -> &str {
        self.inner.instance()
    }
    async fn transition(
        &self,
        r: &RunId,
        b: &BatchId,
        t: Option<u64>,
        to: BatchState,
        u: backfill_core::ledger::BatchUpdate,
    ) -> Result<()> {
        self.inner.transition(r, b, t, to, u).await
    }
    async fn batches(&self, r: &RunId) -> Result<Vec<backfill_core::ledger::BatchRecord>> {
        self.inner.batches(r).await
    }
    async fn transitions(&self, r: &RunId) -> Result<Vec<backfill_core::ledger::Transition>> {
        self.inner.transitions(r).await
    }
    async fn record_asset(&self, a: &backfill_core::ledger::Asset) -> Result<()> {
        self.inner.record_asset(a).await
    }
    async fn assets(&self, r: Option<&RunId>) -> Result<Vec<backfill_core::ledger::Asset>> {
        self.inner.assets(r).await
    }
    async fn asset_dropped(&self, r: &RunId, t: &TableRef, at: Timestamp) -> Result<()> {
        self.inner.asset_dropped(r, t, at).await
    }
    async fn put_document(&self, r: &RunId, n: &str, b: &serde_json::Value) -> Result<()> {
        self.inner.put_document(r, n, b).await
    }
    async fn put_document_if_absent(
        &self,
        r: &RunId,
        n: &str,
        b: &serde_json::Value,
    ) -> Result<bool> {
        self.inner.put_document_if_absent(r, n, b).await
    }
    async fn document(&self, r: &RunId, n: &str) -> Result<Option<serde_json::Value>> {
        self.inner.document(r, n).await
    }
    fn now(&self) -> Timestamp {
        self.inner.now()
    }
}

/// A pause set in the ledger (as another process, an operator's terminal,
/// would) stops claims at the next batch boundary: no batch is claimed
/// after the steering is logged, the call returns `paused`, a plain run
/// while paused writes nothing, and after a resume a plain run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_the_ledger_stops_claims_at_the_next_boundary() {
    use backfill_core::ledger::Steering;
    let (case, mem) = memory_case("steered").await;
    let job = &case.job;
    let steer = mem.clone();
    let run_id = job.run_id.clone();
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(per_batch())
        .on_event(move |e| {
            if matches!(e, Event::BatchFinished { done: 2, .. }) {
                futures::executor::block_on(steer.steer(&run_id, Steering::Pause, "grace"))
                    .unwrap();
            }
        });
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Paused, "{report}");
    assert_eq!(report.batches_done, 2);
    let log = mem.transitions(&job.run_id).await.unwrap();
    let paused_at = log
        .iter()
        .position(|t| t.to == "steering:pause" && t.reason == "steered by grace")
        .expect("the steering is logged");
    assert!(
        !log[paused_at..].iter().any(|t| t.to == "running"),
        "a batch was claimed after the pause: {log:#?}"
    );
    // Still paused: a plain run writes nothing.
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Paused);
    assert_eq!(report.batches_this_run, 0);
    mem.steer(&job.run_id, Steering::Run, "grace")
        .await
        .unwrap();
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, 3);
}

/// A cancel set in the ledger stops the run at the next boundary and
/// frees its target; a plain run afterwards clears it and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_the_ledger_stops_the_run_and_a_plain_run_resumes() {
    use backfill_core::ledger::Steering;
    let (case, mem) = memory_case("steered_cancel").await;
    let job = &case.job;
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(fast_options());
    runner
        .test_slice(job, &[job.plan.batches[0].id.clone()])
        .await
        .unwrap();
    mem.steer(&job.run_id, Steering::Cancel, "ops")
        .await
        .unwrap();
    assert_eq!(mem.steering(&job.run_id).await.unwrap(), Steering::Cancel);
    // The cancel is what a plain run clears: it resumes and finishes.
    let report = runner.run(job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(mem.steering(&job.run_id).await.unwrap(), Steering::Run);
}

// ---------------------------------------------------------------------------
// Exactness: findings of the exactness review
// ---------------------------------------------------------------------------

/// A run started keeping pre-images and resumed without them would roll
/// back only part: the rollback setting is part of the run's fingerprint,
/// so such a resume is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_another_rollback_setting_is_refused() {
    let (case, _) = memory_case("rollback_setting").await;
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(fast_options());
    let first = case.job.plan.batches[0].id.clone();
    runner.test_slice(&case.job, &[first]).await.unwrap();
    let mut changed = case.job.clone();
    changed.brief.rollback.keep_pre_image = false;
    changed.brief.rollback.restore_point = Some("nightly snapshot 2026-03-09".into());
    let err = runner.run(&changed).await.unwrap_err();
    assert!(matches!(err, Error::FingerprintMismatch { .. }), "{err}");
}

/// The four-eyes rule compares identities as people write them (case and
/// spacing aside), against the operator the ledger recorded for the run,
/// not the caller's copy of the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_compares_identities_against_the_ledger() {
    let (env, _) = fake_env();
    let case = setup(env, Pattern::Staging, "four_eyes").await;
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(fast_options());
    runner.run(&case.job).await.unwrap();
    let operator = case.job.brief.operator.clone();
    let err = runner
        .approve(
            &case.job,
            &format!(" {} ", operator.to_uppercase()),
            "looks fine",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Approval(_)), "{err}");
    let mut copy = case.job.clone();
    copy.brief.operator = "someone.else".into();
    let err = runner
        .approve(&copy, &operator, "looks fine")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Approval(_)), "{err}");
    runner
        .approve(&case.job, "grace", "looks fine")
        .await
        .unwrap();
}

/// The definition of done counts the dependents the brief declares, not
/// the refreshes a caller happened to give: refreshing nothing leaves a
/// declared dashboard not refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_nothing_does_not_make_a_run_done() {
    use backfill_core::done::DoneItem;
    let (case, _) = memory_case("refresh_nothing").await;
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(fast_options());
    runner.run(&case.job).await.unwrap();
    runner.refresh(&case.job, &[]).await.unwrap();
    let status = runner.done_status(&case.job).await.unwrap();
    assert!(
        status
            .missing()
            .any(|(i, m)| i == DoneItem::DownstreamRefreshed && m.contains("facts dashboard")),
        "{status:?}"
    );
}

/// A run whose preparation fails after the run is recorded (here its
/// baseline capture) wrote nothing and does not hold its target: another
/// run may take it, and the failed run still resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_wrote_nothing_does_not_keep_its_target() {
    let (case, mem) = memory_case("wrote_nothing").await;
    let job = with_checks(case.job.clone(), vec![CheckSpec::Size]);
    let faulty = Faulty::new(case.env.warehouse.clone());
    let runner =
        Runner::new(Arc::new(faulty.clone()), case.env.ledger.clone()).with_options(fast_options());
    // The first question is the blast radius (before the run is
    // recorded); the second is the baseline capture.
    faulty.fail_nth(backfill_testkit::FaultPoint::DuringInspect, 2);
    let err = runner.run(&job).await.unwrap_err();
    assert!(matches!(err, Error::InjectedFault(_)), "{err}");
    assert!(mem.run(&job.run_id).await.is_ok(), "the run was recorded");
    let other = RunId::new("another").unwrap();
    mem.lock_target(job.target(), &other).await.unwrap();
    mem.unlock_target(job.target(), &other).await.unwrap();
    let report = runner.run(&job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
}
