//! Several workers share one backfill run on PostgreSQL.
//!
//! Each worker has its own connection pool and its own runner; they share
//! only the ledger tables, where `SELECT … FOR UPDATE SKIP LOCKED` hands
//! each batch to exactly one of them and a fencing token refuses the
//! commit of a worker whose lease was taken over. A worker holds a session
//! lock while it lives, so when one is killed the others (or the next run)
//! take its batch back at once. Run it against the throwaway server:
//!
//! ```text
//! ./scripts/with-postgres.sh cargo run --example pg_workers --features postgres
//! ./scripts/with-postgres.sh cargo run --example pg_workers --features postgres -- --processes
//! ```
//!
//! The data is set up once and the ledger kept, so a run that was killed
//! resumes when run again; `--reset` starts over. With `--processes` each
//! worker is a separate process (kill one with `kill -9` and run again).

use std::sync::Arc;

use backfill::jiff::civil::date;
use backfill::ledger::{Ledger, Liveness, RunStatus};
use backfill::postgres::PgWarehouse;
use backfill::runner::RunOptions;
use backfill::warehouse::Warehouse;
use backfill::{
    Backfill, Bounds, Brief, CheckSpec, Dependencies, Dependency, Grain, Ident, Operations, Plan,
    Planner, Predicate, RiskClass, RollbackPlan, RunId, Runner, Scope, Source, StrategySpec,
    TableRef, ValidationPlan,
};

const WORKERS: usize = 4;
const LEDGER: &str = "workers_demo_ledger";

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("BACKFILL_PG_URL") else {
        eprintln!(
            "BACKFILL_PG_URL is not set. Run:\n  ./scripts/with-postgres.sh cargo run --example pg_workers --features postgres"
        );
        std::process::exit(2);
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A worker process started by `--processes`.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--worker")
        .and_then(|i| args.get(i + 1))
    {
        match worker(&url, n).await {
            Ok(batches) => println!("  worker-{n} wrote {batches} batch(es)"),
            Err(e) => {
                eprintln!("worker-{n}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let reset = args.iter().any(|a| a == "--reset");
    let processes = args.iter().any(|a| a == "--processes");
    match run(&url, reset, processes).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(3),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn job() -> Result<Backfill, backfill::Error> {
    let scope = Scope::new(
        TableRef::parse("workers_demo.sales")?,
        "sale_date",
        Bounds::dates(date(2026, 1, 1), date(2026, 4, 1)),
        "UTC",
    )?;
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day })?;
    Ok(Backfill::new(
        RunId::new("double_amounts")?,
        brief(scope),
        plan,
        Source::Table(TableRef::parse("workers_demo.sales_fixed")?),
    ))
}

/// One worker: its own pool, ledger handle and runner.
async fn worker(url: &str, n: &str) -> Result<usize, backfill::Error> {
    let wh = PgWarehouse::connect(url).await?;
    let ledger = wh.ledger(LEDGER).await?;
    let options = RunOptions {
        worker: format!("worker-{n}"),
        ..RunOptions::default()
    };
    let runner = Runner::new(Arc::new(wh), Arc::new(ledger)).with_options(options);
    Ok(runner.run(&job()?).await?.batches_this_run)
}

/// Sets the data up once (or again with `reset`), runs the workers, and
/// says what it checked; `Ok(false)` when the run is not complete.
async fn run(url: &str, reset: bool, processes: bool) -> Result<bool, Box<dyn std::error::Error>> {
    let setup = PgWarehouse::connect(url).await?;
    if reset {
        setup
            .execute_batch(&format!(
                "DROP SCHEMA IF EXISTS workers_demo CASCADE; DROP SCHEMA IF EXISTS {LEDGER} CASCADE;"
            ))
            .await?;
    }
    // Set up once: a rerun resumes the same data the ledger describes.
    setup
        .execute_batch(
            "CREATE SCHEMA IF NOT EXISTS workers_demo;
             CREATE TABLE IF NOT EXISTS workers_demo.sales AS
             SELECT g AS sale_id, DATE '2026-01-01' + (g % 90) AS sale_date, (g % 97)::bigint AS amount
             FROM generate_series(1, 200000) AS g;
             CREATE TABLE IF NOT EXISTS workers_demo.sales_fixed AS
             SELECT sale_id, sale_date, amount * 2 AS amount FROM workers_demo.sales;",
        )
        .await?;
    let job = job()?;
    println!(
        "{} daily batches, {WORKERS} workers {}, one shared ledger",
        job.plan.batches.len(),
        if processes { "(processes)" } else { "(tasks)" }
    );
    if processes {
        let exe = std::env::current_exe()?;
        let children: Vec<_> = (0..WORKERS)
            .map(|n| {
                std::process::Command::new(&exe)
                    .args(["--worker", &n.to_string()])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut c in children {
            let status = c.wait()?;
            if !status.success() {
                println!("  a worker ended with {status}");
            }
        }
    } else {
        let handles: Vec<_> = (0..WORKERS)
            .map(|n| tokio::spawn(async move { (n, worker_task(n).await) }))
            .collect();
        for h in handles {
            match h.await? {
                (n, Ok(batches)) => println!("  worker-{n} wrote {batches} batch(es)"),
                (n, Err(e)) => println!("  worker-{n} failed: {e}"),
            }
        }
    }

    // What the ledger and the table say now.
    let ledger = setup.ledger(LEDGER).await?;
    let batches = ledger.batches(&job.run_id).await?;
    let done = batches.iter().filter(|b| b.state.is_done()).count();
    let log = ledger.transitions(&job.run_id).await?;
    let written = log.iter().filter(|t| t.to == "written").count();
    // Workers settle the run's status as they finish; once every batch is
    // done, a last run (which writes nothing) records the final one.
    let status = if done == job.plan.batches.len() {
        Runner::new(Arc::new(setup.clone()), Arc::new(ledger.clone()))
            .run(&job)
            .await?
            .status
    } else {
        ledger.run(&job.run_id).await?.status
    };
    let target = job.target();
    let keys = setup
        .key_report(target, &[Ident::new("sale_id")?], &Predicate::All, 5)
        .await?;
    let now = setup.checksum(target, &Predicate::All).await?;
    let fixed = setup
        .checksum(
            &TableRef::parse("workers_demo.sales_fixed")?,
            &Predicate::All,
        )
        .await?;
    println!(
        "ledger: run {}, {done} of {} batches done, {written} batch writes committed",
        status.as_str(),
        job.plan.batches.len()
    );
    for b in batches.iter().filter(|b| !b.state.is_done()) {
        match &b.lease {
            Some(l) if b.state == backfill::BatchState::Running => {
                let alive = match ledger.liveness(l).await? {
                    Liveness::Alive => "alive",
                    Liveness::Dead => "dead: the next run takes it back",
                    Liveness::Unknown => "liveness unknown",
                };
                println!(
                    "  batch {} is held by {} ({alive}, lease until {})",
                    b.batch.id, l.worker, l.expires_at
                )
            }
            _ => println!("  batch {} is {}", b.batch.id, b.state),
        }
    }
    println!(
        "table: {} rows, {} duplicate keys, {} null keys; equals the corrected source: {}",
        keys.rows,
        keys.duplicate_keys,
        keys.null_keys,
        if now == fixed { "yes" } else { "no" }
    );
    let complete = done == job.plan.batches.len()
        && matches!(status, RunStatus::Completed | RunStatus::CutOver);
    if !complete {
        println!("incomplete: run the same command again to resume");
        return Ok(false);
    }
    if now != fixed || keys.duplicate_keys > 0 {
        return Err("the run is complete but the table does not equal the corrected source".into());
    }
    println!("done: every day written, the table equals the corrected source");
    Ok(true)
}

async fn worker_task(n: usize) -> Result<usize, backfill::Error> {
    let url = std::env::var("BACKFILL_PG_URL").unwrap_or_default();
    worker(&url, &n.to_string()).await
}

fn brief(scope: Scope) -> Brief {
    Brief {
        title: "Double the amounts of Q1 2026".into(),
        reason: "Amounts were loaded in the wrong unit.".into(),
        operator: "ops.one".into(),
        reviewer: "ops.two".into(),
        risk: RiskClass::MetricChangingRepair,
        scope,
        dependencies: Dependencies {
            direct: vec![Dependency::new("sales dashboard", "bi")],
            indirect: vec![],
            human: vec![Dependency::new("sales leadership", "sales-ops")],
        },
        strategy: StrategySpec::PartitionOverwrite,
        idempotency: "Each day is replaced in one transaction.".into(),
        validation: ValidationPlan {
            emptiness: Default::default(),
            drift: Default::default(),
            checks: vec![CheckSpec::Unique {
                keys: vec![Ident::new("sale_id").expect("ident")],
                blocking: true,
            }],
            description: "sale_id stays unique.".into(),
        },
        rollback: RollbackPlan {
            description: "Runner::rollback restores the kept pre-images.".into(),
            keep_pre_image: true,
            retention_days: 7,
            restore_point: None,
        },
        expected_impact: "Q1 amounts double.".into(),
        operations: Operations {
            rerun: "Rerun any worker; finished days are skipped.".into(),
            pause: "Each worker's control handle pauses at a day boundary.".into(),
            recovery: "A dead worker's day is taken back at once: its session lock is gone.".into(),
        },
    }
}
