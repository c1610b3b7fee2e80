//! The refunds workload: `orders` over twelve months with refunds on about
//! 5% of them, and a revenue fact with one row per order whose history has
//! `net = gross`. The fix restates six months (181 daily batches) with
//! `net = gross - refunds`.
//!
//! - **P1**: the library's partition overwrite with the ledger and the
//!   guard, no pre-image (the brief names an outside restore point), no
//!   per-batch checks, against one hand-written transaction;
//! - **P1b**: the same run against the same 181 days looped by hand, one
//!   transaction each;
//! - **P2**: the same with pre-images, per-batch row counts and uniqueness,
//!   and the end-of-run reconciliation with a row diff;
//! - **P6**: the Rust heap's peak during the P1 run (the rows stay in the
//!   engine, so it must not grow with the table), and the process's
//!   resident growth beside it;
//! - **P7** (Postgres): 1 against 4 workers sharing one run whose batches
//!   wait on I/O, with every claim checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backfill::inspect::{Aggregate, Dim, Metric, Period};
use backfill::jiff::civil::{date, Date};
use backfill::ledger::Ledger;
use backfill::runner::RunOptions;
use backfill::warehouse::Warehouse;
use backfill::{
    Backfill, Bounds, Brief, CheckSpec, Dependencies, Dependency, Expectation, Grain, Operations,
    Plan, Planner, RiskClass, RollbackPlan, RunId, RunReport, Runner, Scope, Source, StrategySpec,
    ValidationPlan,
};

use super::{heap, ident, table_in, Engine};

/// The corrected logic: refunds summed per order and joined (the
/// refunds fix of `backfill demo` and the README).
pub use backfill_cli::demo::CORRECTED;

pub const LEDGER: &str = "bench_ledger";

/// The six months restated: 2026-01-01 (inclusive) to 2026-07-01.
fn scope_dates() -> (Date, Date) {
    (date(2026, 1, 1), date(2026, 7, 1))
}

/// Orders, refunds and the buggy fact, all generated in the engine.
pub fn setup_sql(e: &Engine, orders: u64) -> String {
    let per_day = (orders / 365).max(1);
    match e {
        Engine::Duck(_) => format!(
            "DROP SCHEMA IF EXISTS shop CASCADE;
             CREATE SCHEMA shop;
             CREATE TABLE shop.orders AS
             SELECT CAST(row_number() OVER (ORDER BY d, k) AS BIGINT) AS order_id,
                    d AS order_date,
                    CAST(100 + hash(d, k) % 60000 AS BIGINT) AS customer_id,
                    CAST(5 + (hash(k, d, 1) % 20000) / 100.0 AS DECIMAL(18,2)) AS gross
             FROM (SELECT DATE '2025-07-01' + CAST(i AS INTEGER) AS d FROM range(365) AS t(i)) AS days,
                  range({per_day}) AS r(k);
             CREATE TABLE shop.refunds AS
             SELECT order_id,
                    CAST(round(gross * (30 + hash(order_id, 7) % 71) / 100.0, 2) AS DECIMAL(18,2)) AS amount
             FROM shop.orders WHERE hash(order_id, 5) % 100 < 5;"
        ),
        Engine::Pg(_) => format!(
            "DROP SCHEMA IF EXISTS shop CASCADE;
             CREATE SCHEMA shop;
             CREATE TABLE shop.orders AS
             SELECT row_number() OVER (ORDER BY d, k)::bigint AS order_id,
                    d AS order_date,
                    (100 + abs(hashint8(k * 1000 + (d - DATE '2025-07-01'))) % 60000)::bigint AS customer_id,
                    (5 + (abs(hashint8(k * 7919 + (d - DATE '2025-07-01'))) % 20000) / 100.0)::numeric(18,2) AS gross
             FROM (SELECT (DATE '2025-07-01' + i)::date AS d FROM generate_series(0, 364) AS i) AS days,
                  generate_series(0::bigint, {per_day} - 1) AS k;
             CREATE TABLE shop.refunds AS
             SELECT order_id,
                    round(gross * (30 + abs(hashint8(order_id + 7)) % 71) / 100.0, 2)::numeric(18,2) AS amount
             FROM shop.orders WHERE abs(hashint8(order_id + 5)) % 100 < 5;
             CREATE INDEX ON shop.refunds (order_id);
             ANALYZE shop.orders; ANALYZE shop.refunds;"
        ),
    }
}

/// The buggy fact (`net = gross` everywhere), recreated before every
/// measured run, and a fresh ledger schema. On Postgres the fact has the
/// primary key and the date index such a table has.
pub fn reset_sql(e: &Engine) -> String {
    let create = "DROP SCHEMA IF EXISTS analytics CASCADE;
         DROP SCHEMA IF EXISTS bench_ledger CASCADE;
         CREATE SCHEMA analytics;
         CREATE TABLE analytics.revenue AS
         SELECT order_id, order_date, customer_id, gross,
                CAST(0 AS DECIMAL(18,2)) AS refunds, gross AS net
         FROM shop.orders ORDER BY order_date, order_id;";
    match e {
        Engine::Duck(_) => create.to_string(),
        Engine::Pg(_) => format!(
            "{create}
             ALTER TABLE analytics.revenue ADD PRIMARY KEY (order_id);
             CREATE INDEX ON analytics.revenue (order_date);
             ANALYZE analytics.revenue;"
        ),
    }
}

fn day_range(from: Date, to: Date) -> String {
    format!("order_date >= DATE '{from}' AND order_date < DATE '{to}'")
}

/// One hand-written transaction: delete the six months, insert them
/// corrected.
pub fn hand_single() -> String {
    let (s, e) = scope_dates();
    let r = day_range(s, e);
    format!(
        "BEGIN;
         DELETE FROM analytics.revenue WHERE {r};
         INSERT INTO analytics.revenue SELECT * FROM ({CORRECTED}) AS c WHERE {r};
         COMMIT;"
    )
}

/// The same day by day, one transaction per day.
pub fn hand_days() -> Vec<String> {
    let (mut d, end) = scope_dates();
    let mut out = Vec::new();
    while d < end {
        let next = d.tomorrow().expect("date");
        let r = day_range(d, next);
        out.push(format!(
            "BEGIN;
             DELETE FROM analytics.revenue WHERE {r};
             INSERT INTO analytics.revenue SELECT * FROM ({CORRECTED}) AS c WHERE {r};
             COMMIT;"
        ));
        d = next;
    }
    out
}

/// The corrected six months evaluated once into a table sorted by day
/// (indexed on Postgres), as the library stages its source, then the
/// per-day transactions that move only each day's slice: the library's
/// data work by hand, without its ledger and checks.
pub fn hand_staged(e: &Engine) -> (String, Vec<String>) {
    let (s, end) = scope_dates();
    let r = day_range(s, end);
    let index = match e {
        Engine::Duck(_) => "",
        Engine::Pg(_) => "CREATE INDEX ON shop.staged (order_date); ANALYZE shop.staged;",
    };
    let stage = format!(
        "DROP TABLE IF EXISTS shop.staged;
         CREATE TABLE shop.staged AS SELECT * FROM ({CORRECTED}) AS c WHERE {r} ORDER BY order_date;
         {index}"
    );
    let days = hand_days()
        .into_iter()
        .map(|d| d.replace(&format!("({CORRECTED}) AS c"), "shop.staged AS c"))
        .collect();
    (stage, days)
}

/// What a run keeps and checks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// P1: ledger and guard; an outside restore point, only a size report.
    Bare,
    /// P2: pre-images, per-batch counts and uniqueness, reconciliation and
    /// row diff at the end.
    Full,
}

pub fn job(run: &str, safety: Safety, source: Source) -> Backfill {
    let (s, e) = scope_dates();
    let scope = Scope::new(
        table_in("analytics", "revenue"),
        "order_date",
        Bounds::dates(s, e),
        "UTC",
    )
    .expect("scope");
    let order_id = || vec![ident("order_id")];
    let checks = match safety {
        Safety::Bare => vec![CheckSpec::Size],
        Safety::Full => vec![
            CheckSpec::RowCount {
                expect: Expectation::Unchanged,
                blocking: true,
            },
            CheckSpec::Unique {
                keys: order_id(),
                blocking: true,
            },
            CheckSpec::Reconcile {
                metric: Metric {
                    name: "net revenue".into(),
                    aggregate: Aggregate::Sum(ident("net")),
                    by: vec![Dim::period(ident("order_date"), Period::Month)],
                },
                keys: order_id(),
                expect: Expectation::MaxChangePercent(10.0),
                tolerance: None,
                blocking: true,
            },
            CheckSpec::RowDiff {
                keys: order_id(),
                columns: vec![],
                sample: 3,
                max_changed: None,
                partition: None,
                blocking: true,
            },
        ],
    };
    daily_job(run, scope, safety, checks, source)
}

/// A daily-batch partition overwrite of `scope` with a complete brief.
pub fn daily_job(
    run: &str,
    scope: Scope,
    safety: Safety,
    checks: Vec<CheckSpec>,
    source: Source,
) -> Backfill {
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).expect("plan");
    let brief = Brief {
        title: "Restate history".into(),
        reason: "The history was computed with a bug.".into(),
        operator: "bench.operator".into(),
        reviewer: "bench.reviewer".into(),
        risk: RiskClass::MetricChangingRepair,
        scope,
        dependencies: Dependencies {
            direct: vec![Dependency::new("revenue dashboard", "finance-data")],
            indirect: vec![],
            human: vec![Dependency::new("finance", "cfo-office")],
        },
        strategy: StrategySpec::PartitionOverwrite,
        idempotency: "Each day is replaced in one transaction.".into(),
        validation: ValidationPlan {
            emptiness: Default::default(),
            drift: Default::default(),
            checks,
            description: "What the checks say.".into(),
        },
        rollback: RollbackPlan {
            description: "Pre-images, or the benchmark recreates the table.".into(),
            keep_pre_image: safety == Safety::Full,
            retention_days: 1,
            restore_point: (safety == Safety::Bare)
                .then(|| "the benchmark's own copy of the data".to_string()),
        },
        expected_impact: "Net revenue drops by the refunds of each month.".into(),
        operations: Operations {
            rerun: "Run again; done days are skipped.".into(),
            pause: "Pause between days.".into(),
            recovery: "Resume from the ledger.".into(),
        },
    };
    Backfill::new(RunId::new(run).expect("run id"), brief, plan, source)
}

/// Runs `job` to completion with a fresh ledger and default options
/// (which stage a query source once per run), or with the query read by
/// each batch when `per_batch` says so; returns the time of
/// `Runner::run` alone, its report, and the heap and resident peaks it
/// added.
pub async fn library_run(
    e: &Engine,
    job: &Backfill,
    per_batch: bool,
) -> (Duration, RunReport, heap::Held) {
    let options = RunOptions {
        stage_queries: !per_batch,
        ..RunOptions::default()
    };
    library_run_with(e, job, options).await
}

/// [`library_run`] with the given options (the worker's name is the
/// harness's).
pub async fn library_run_with(
    e: &Engine,
    job: &Backfill,
    options: RunOptions,
) -> (Duration, RunReport, heap::Held) {
    let (w, ledger): (Arc<dyn Warehouse>, Arc<dyn Ledger>) = match e {
        Engine::Duck(w) => (
            Arc::new(w.clone()),
            Arc::new(w.ledger(LEDGER).await.expect("ledger")),
        ),
        Engine::Pg(w) => (
            Arc::new(w.clone()),
            Arc::new(w.ledger(LEDGER).await.expect("ledger")),
        ),
    };
    let started = Arc::new(std::sync::Mutex::new(None));
    let mark = started.clone();
    let runner = Runner::new(w, ledger)
        .with_options(RunOptions {
            worker: "bench".into(),
            ..options
        })
        .on_event(move |e| {
            if let backfill::Event::RunStarted { .. } = e {
                *mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        });
    let base = heap::reset_peak();
    let resident = heap::reset_resident();
    let t = Instant::now();
    let report = runner.run(job).await.expect("library run");
    let took = t.elapsed();
    if let Some(s) = *started.lock().unwrap_or_else(|e| e.into_inner()) {
        eprintln!(
            "  {}: {:.0} ms before the first batch (checks, baseline, staging), {:.0} ms after",
            job.run_id,
            (s - t).as_secs_f64() * 1e3,
            s.elapsed().as_secs_f64() * 1e3
        );
    }
    let held = heap::Held {
        heap: heap::peak().saturating_sub(base),
        resident: heap::resident_peak().saturating_sub(resident),
    };
    (took, report, held)
}

/// The table's content as (rows, sum of net, sum of refunds) over the
/// scope, to check every method ends with the same table.
pub async fn fingerprint(e: &Engine) -> (u64, String, String) {
    let (s, end) = scope_dates();
    let rows = e
        .query(&format!(
            "SELECT count(*), CAST(sum(net) AS VARCHAR), CAST(sum(refunds) AS VARCHAR)
             FROM analytics.revenue WHERE {}",
            day_range(s, end)
        ))
        .await;
    let r = &rows[0];
    (super::count(&r[0]), r[1].to_string(), r[2].to_string())
}

/// P7's tables: a small fact over 90 days and its corrected copy.
pub const P7_SETUP: &str = "
    DROP SCHEMA IF EXISTS p7 CASCADE;
    DROP SCHEMA IF EXISTS bench_ledger CASCADE;
    CREATE SCHEMA p7;
    CREATE TABLE p7.sales AS
    SELECT g AS sale_id, DATE '2026-01-01' + (g % 90) AS sale_date, (g % 97)::bigint AS amount
    FROM generate_series(1, 90000) AS g;
    CREATE INDEX ON p7.sales (sale_date);
    CREATE TABLE p7.fixed AS SELECT sale_id, sale_date, amount * 2 AS amount FROM p7.sales;
    ANALYZE p7.sales; ANALYZE p7.fixed;";

/// P7's job: 90 daily batches whose source waits `wait_ms` on every read,
/// standing for a slow remote read (the batch is I/O-bound).
pub fn p7_job(run: &str, wait_ms: u64) -> Backfill {
    let scope = Scope::new(
        table_in("p7", "sales"),
        "sale_date",
        Bounds::dates(date(2026, 1, 1), date(2026, 4, 1)),
        "UTC",
    )
    .expect("scope");
    let source = format!(
        "SELECT f.sale_id, f.sale_date, f.amount FROM p7.fixed AS f
         CROSS JOIN (SELECT pg_sleep({:.3})) AS io",
        wait_ms as f64 / 1000.0
    );
    let checks = vec![CheckSpec::Unique {
        keys: vec![ident("sale_id")],
        blocking: true,
    }];
    daily_job(run, scope, Safety::Bare, checks, Source::query(source))
}

/// Ledger check for P7: (batches, claims, writes).
pub async fn claims(ledger: &dyn Ledger, run: &RunId) -> (usize, usize, usize) {
    let log = ledger.transitions(run).await.expect("transitions");
    // Run-level moves (the run's own status) are logged beside them.
    let batch_moves = |to: &str| {
        log.iter()
            .filter(|t| t.batch_id.is_some() && t.to == to)
            .count()
    };
    let claimed = batch_moves("running");
    let written = batch_moves("written");
    let batches = ledger.batches(run).await.expect("batches").len();
    (batches, claimed, written)
}
