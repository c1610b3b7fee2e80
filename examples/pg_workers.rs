//! Several workers share one backfill run on PostgreSQL.
//!
//! Each worker has its own connection pool and its own runner; they share
//! only the ledger tables, where `SELECT … FOR UPDATE SKIP LOCKED` hands
//! each batch to exactly one of them and a fencing token refuses the
//! commit of a worker whose lease was taken over. Run it against the
//! throwaway server:
//!
//! ```text
//! ./scripts/with-postgres.sh cargo run --example pg_workers --features postgres
//! ```

use std::sync::Arc;

use backfill::jiff::civil::date;
use backfill::ledger::Ledger;
use backfill::postgres::PgWarehouse;
use backfill::runner::RunOptions;
use backfill::warehouse::Warehouse;
use backfill::{
    Backfill, Bounds, Brief, CheckSpec, Dependencies, Dependency, Grain, Ident, Operations, Plan,
    Planner, Predicate, RiskClass, RollbackPlan, RunId, Runner, Scope, Source, StrategySpec,
    TableRef, ValidationPlan,
};

const WORKERS: usize = 4;

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("BACKFILL_PG_URL") else {
        eprintln!(
            "BACKFILL_PG_URL is not set. Run:\n  ./scripts/with-postgres.sh cargo run --example pg_workers --features postgres"
        );
        std::process::exit(2);
    };
    if let Err(e) = run(&url).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let setup = PgWarehouse::connect(url).await?;
    setup
        .execute_batch(
            "DROP SCHEMA IF EXISTS workers_demo CASCADE;
             CREATE SCHEMA workers_demo;
             CREATE TABLE workers_demo.sales AS
             SELECT g AS sale_id, DATE '2026-01-01' + (g % 90) AS sale_date, (g % 97)::bigint AS amount
             FROM generate_series(1, 200000) AS g;
             CREATE TABLE workers_demo.sales_fixed AS
             SELECT sale_id, sale_date, amount * 2 AS amount FROM workers_demo.sales;",
        )
        .await?;
    let target = TableRef::parse("workers_demo.sales")?;
    let scope = Scope::new(
        target.clone(),
        "sale_date",
        Bounds::dates(date(2026, 1, 1), date(2026, 4, 1)),
        "UTC",
    )?;
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day })?;
    let job = Backfill::new(
        RunId::new("double_amounts")?,
        brief(scope),
        plan,
        Source::Table(TableRef::parse("workers_demo.sales_fixed")?),
    );
    println!(
        "{} daily batches, {WORKERS} workers, one shared ledger",
        job.plan.batches.len()
    );

    let mut handles = Vec::new();
    for n in 0..WORKERS {
        let job = job.clone();
        let url = url.to_string();
        handles.push(tokio::spawn(async move {
            let wh = PgWarehouse::connect(&url).await?;
            let ledger = wh.ledger("workers_demo_ledger").await?;
            let options = RunOptions {
                worker: format!("worker-{n}"),
                ..RunOptions::default()
            };
            let runner = Runner::new(Arc::new(wh), Arc::new(ledger)).with_options(options);
            let report = runner.run(&job).await?;
            Ok::<_, backfill::Error>((n, report.batches_this_run))
        }));
    }
    for h in handles {
        let (n, batches) = h.await??;
        println!("  worker-{n} wrote {batches} batch(es)");
    }

    let ledger = setup.ledger("workers_demo_ledger").await?;
    let log = ledger.transitions(&job.run_id).await?;
    let written = log.iter().filter(|t| t.to == "written").count();
    let report = Runner::new(Arc::new(setup.clone()), Arc::new(ledger))
        .run(&job)
        .await?;
    let keys = setup
        .key_report(&target, &[Ident::new("sale_id")?], &Predicate::All, 5)
        .await?;
    println!(
        "ledger: {written} batches written once each ({} in the plan); run {}",
        job.plan.batches.len(),
        report.status.as_str()
    );
    println!(
        "table: {} rows, {} duplicate keys, {} null keys",
        keys.rows, keys.duplicate_keys, keys.null_keys
    );
    if written != job.plan.batches.len() || keys.duplicate_keys > 0 {
        return Err("a batch was written twice or a key is duplicated".into());
    }
    Ok(())
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
            recovery: "A dead worker's day is taken over after its lease expires.".into(),
        },
    }
}
