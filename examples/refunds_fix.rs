//! The refunds fix: six months of net revenue were overstated because the
//! pipeline stopped joining refunds. This example repairs that history on
//! an embedded DuckDB file, the safe way:
//!
//! brief → preflight → plan → test slice → run in batches → validate →
//! change summary.
//!
//! ```text
//! ./scripts/demo.sh                    # run (or resume, or confirm done)
//! ./scripts/demo.sh --stop-after 40    # stop part-way; run again to resume
//! ./scripts/demo.sh --fresh            # start over with a new database
//! ./scripts/demo.sh --orders 200000    # a smaller dataset
//! ```

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backfill::duckdb::{duckdb, DuckDbWarehouse};
use backfill::inspect::{Aggregate, Dim, Metric, Period};
use backfill::jiff::civil::date;
use backfill::ledger::Ledger;
use backfill::note;
use backfill::runner::RunOptions;
use backfill::warehouse::Warehouse;
use backfill::{
    Amount, Backfill, BatchId, Bounds, Brief, CheckSpec, Dependencies, Dependency, Event,
    Expectation, Grain, Ident, Operations, Plan, Planner, Predicate, RiskClass, RollbackPlan,
    RunId, RunStatus, Runner, Scope, Source, StrategySpec, TableRef, ValidationPlan,
};
use backfill_cli::demo;

const RUN_ID: &str = "refunds_2026h1";
const ZONE: &str = "America/New_York";

struct Args {
    db: PathBuf,
    fresh: bool,
    stop_after: Option<usize>,
    orders: u64,
}

fn args() -> Args {
    let mut a = Args {
        db: PathBuf::from("refunds_fix.duckdb"),
        fresh: false,
        stop_after: None,
        orders: 1_200_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fresh" => a.fresh = true,
            "--stop-after" => a.stop_after = it.next().and_then(|v| v.parse().ok()),
            "--orders" => a.orders = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.orders),
            "--db" => a.db = it.next().map(PathBuf::from).unwrap_or(a.db),
            other => {
                eprintln!("unknown argument {other}; see the example's header for usage");
                std::process::exit(2);
            }
        }
    }
    a
}

fn t(name: &str) -> TableRef {
    TableRef::parse(name).expect("valid table name")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(args()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.fresh {
        for suffix in ["", ".wal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", args.db.display()));
        }
    }
    let new_db = !args.db.exists();
    let wh = DuckDbWarehouse::open(&args.db)?;
    println!("== refunds fix on {} ==", args.db.display());
    if new_db {
        let t0 = Instant::now();
        wh.execute_batch(demo::refunds_sql(args.orders)).await?;
        println!(
            "generated {} orders over 12 months in {:.1}s (refunds on ~5%, weekends, month-ends, DST on 2026-03-08)",
            fmt_int(count(&wh, "shop.orders").await?),
            t0.elapsed().as_secs_f64()
        );
    }
    let ledger = Arc::new(wh.ledger("backfill").await?);
    let revenue = t("analytics.revenue");

    // 1. The brief. Preflight refuses it while any part is blank.
    let scope = Scope::new(
        revenue.clone(),
        "order_date",
        Bounds::dates(date(2026, 1, 1), date(2026, 7, 1)),
        ZONE,
    )?;
    let mut brief = brief(scope.clone());
    let rollback_plan = std::mem::take(&mut brief.rollback.description);
    let refused = brief.preflight();
    println!("\n-- preflight with a blank rollback plan --");
    for f in refused.blocking() {
        println!("  BLOCKED {}: {}", f.section, f.message);
    }
    brief.rollback.description = rollback_plan;
    let pf = brief.preflight().into_result()?;
    println!(
        "-- preflight with the brief complete: passed ({} warning(s)) --",
        pf.findings.len()
    );
    for f in &pf.findings {
        println!("  note {}: {}", f.section, f.message);
    }

    // 2. Plan: one batch per business day in New York.
    let plan = Plan::build(scope, Planner::Windows { grain: Grain::Day })?;
    println!(
        "\nplan: {} daily batches, {} .. {} ({ZONE}), fingerprint {}",
        plan.batches.len(),
        plan.batches[0].id,
        plan.batches[plan.batches.len() - 1].id,
        &plan.fingerprint[..12]
    );
    let job = Backfill::new(
        RunId::new(RUN_ID)?,
        brief,
        plan,
        Source::query(demo::CORRECTED),
    )
    .code_version("revenue-model v2.3.1 (refunds joined on order_id)");

    let existing = ledger.run(&job.run_id).await.ok();
    let done = match &existing {
        Some(_) => ledger
            .batches(&job.run_id)
            .await?
            .iter()
            .filter(|b| b.state.is_done())
            .count(),
        None => 0,
    };
    let options = RunOptions {
        stage_source: true,
        worker: "refunds-example".into(),
        ..RunOptions::default()
    };
    let runner = Runner::new(Arc::new(wh.clone()), ledger.clone()).with_options(options);

    // 3. Test slice: month-end, the DST day, a known incident day.
    if existing.is_none() {
        let slice: Vec<BatchId> = ["2026-01-31", "2026-03-08", "2026-04-15"]
            .map(BatchId::from)
            .to_vec();
        let est = runner.test_slice(&job, &slice).await?;
        println!("\n-- test slice --");
        for (id, rows, took) in &est.batches {
            println!(
                "  {id}: {} rows in {:.0} ms",
                fmt_int(*rows),
                took.as_secs_f64() * 1e3
            );
        }
        println!(
            "  estimate for all {} batches: {:.1}s, ~{} rows",
            est.plan_batches,
            est.estimated_total.as_secs_f64(),
            fmt_int(est.estimated_rows)
        );
        // The announcement for stakeholders, before the real run.
        println!("\n-- announcement (Markdown) --");
        let engine = note::batch_estimates(&wh, &job).await?;
        let announcement = note::announcement(&job, Some(&est))
            .with_engine_estimate(&engine)
            .scheduled("now, from this example (a real run names its window)");
        print!("{}", announcement.markdown());
    } else if let Some(r) = &existing {
        println!(
            "\nledger: run {} is {} with {done}/{} batches done; continuing its stored plan",
            r.run_id,
            r.status.as_str(),
            job.plan.batches.len()
        );
    }

    // 4. Run in batches, with snapshots and a progress display.
    let finished = Arc::new(AtomicUsize::new(0));
    let control = runner.control();
    let stop_after = args.stop_after;
    let tty = std::io::stderr().is_terminal();
    let fin = finished.clone();
    let runner = runner.on_event(move |e| match e {
        Event::BatchFinished {
            batch,
            done,
            total,
            rows_per_sec,
            eta,
            ..
        } => {
            let n = fin.fetch_add(1, Ordering::SeqCst) + 1;
            progress(tty, batch, *done, *total, *rows_per_sec, *eta);
            if stop_after == Some(n) {
                control.cancel();
            }
        }
        Event::Throttled { reason } => eprintln!("  throttled: {reason}"),
        Event::Paused { reason } => eprintln!("  paused: {reason}"),
        _ => {}
    });
    println!("\n-- backfill: partition overwrite, pre-images kept --");
    let report = runner.run(&job).await?;
    if tty {
        eprintln!();
    }
    match report.status {
        RunStatus::Cancelled => {
            println!(
                "stopped after {} batch(es) as asked; {} remain. Run the same command again to resume.",
                report.batches_this_run,
                report.gaps.len()
            );
            return Ok(());
        }
        _ if !report.gaps.is_empty() => {
            // Another process holds a batch (or the run was stopped): no
            // validation, reconciliation or change note on half a run.
            print!("{report}");
            println!(
                "incomplete: {} of {} batches written; run the same command again to resume",
                report.batches_done, report.batches_total
            );
            std::process::exit(3);
        }
        _ if report.nothing_to_do() => {
            println!(
                "nothing to do: run {RUN_ID} already wrote all {} batches; the table is unchanged",
                report.batches_total
            );
        }
        _ => println!(
            "wrote {} batches this time ({} rows) in {:.1}s; {}/{} done",
            report.batches_this_run,
            fmt_int(report.rows_written),
            report.elapsed.as_secs_f64(),
            report.batches_done,
            report.batches_total
        ),
    }

    // 5. Validate: per-day checks ran with each batch; the end-of-run
    // checks ran on the whole scope against the baseline captured before
    // the first write.
    let failed = report.failures().count();
    println!("\n-- validation --");
    if !report.outcomes.is_empty() {
        println!(
            "  per-day checks this run: {} passed, {failed} failed (row counts unchanged, order_id unique)",
            report.outcomes.len() - failed
        );
    }
    let validation = match report.validation.clone() {
        Some(v) => v,
        None => runner.validate(&job).await?,
    };
    print!("{validation}");
    // The change is the refunds, month by month: the reconciliation's
    // changed-rows part must be minus the month's refunds.
    let refunds = refunds_by_month(&wh).await?;
    let mut all_ok = validation.passed() && failed == 0;
    let mut delta = Amount::default();
    if let Some((_, _, rows)) = validation.reconciliations().next() {
        for r in rows {
            let month = r.key.first().map(|v| v.to_string()).unwrap_or_default();
            let expected = refunds
                .iter()
                .find(|(m, _)| month.starts_with(m.as_str()))
                .map(|(_, a)| -*a)
                .unwrap_or_default();
            let ok = r.changed == expected && r.unexplained()?.is_zero();
            all_ok &= ok;
            delta = delta.checked_add(r.delta()?)?;
            println!(
                "  {month}: changed rows {} = minus refunds {}  {}",
                r.changed,
                -expected,
                if ok { "explained" } else { "NOT EXPLAINED" }
            );
        }
    }
    println!("  validation {}", if all_ok { "passed" } else { "FAILED" });

    // 6. What changed, for the people who read these numbers: Markdown
    // for a channel (and `serde_json::to_string(&summary)` for tools).
    let summary = note::change_note(ledger.as_ref(), &job).await?;
    println!("\n-- change note (Markdown) --");
    print!("{}", summary.markdown());
    println!(
        "\nnet revenue restated by {} over six months",
        fmt_signed(delta.to_f64())
    );
    let sum = wh.checksum(job.target(), &Predicate::All).await?;
    println!(
        "revenue table checksum: {} rows, {} (the same after any resume)",
        sum.rows, sum.hash
    );
    if !all_ok {
        return Err("validation failed".into());
    }
    Ok(())
}

fn ident(name: &str) -> Ident {
    Ident::new(name).expect("a valid identifier")
}

fn brief(scope: Scope) -> Brief {
    Brief {
        title: "Restate H1 2026 net revenue with refunds".into(),
        reason: "From January to June 2026 the revenue model stopped joining refunds, so refunds \
                 were counted as zero and net revenue was overstated."
            .into(),
        operator: "ada.lovelace".into(),
        reviewer: "grace.hopper".into(),
        risk: RiskClass::MetricChangingRepair,
        scope,
        dependencies: Dependencies {
            direct: vec![Dependency::new(
                "finance monthly revenue dashboard",
                "finance-data",
            )],
            indirect: vec![Dependency::new(
                "growth net-revenue tiles",
                "growth-analytics",
            )],
            human: vec![Dependency::new("finance leadership", "cfo-office")],
        },
        strategy: StrategySpec::PartitionOverwrite,
        idempotency: "Each day is deleted and re-inserted from the corrected logic in one \
                      transaction; repeating a day gives the same rows."
            .into(),
        validation: ValidationPlan {
            emptiness: Default::default(),
            drift: Default::default(),
            checks: vec![
                CheckSpec::RowCount {
                    expect: Expectation::Unchanged,
                    blocking: true,
                },
                CheckSpec::Unique {
                    keys: vec![ident("order_id")],
                    blocking: true,
                },
                CheckSpec::Coverage {
                    empty_allowed: 0,
                    blocking: true,
                },
                CheckSpec::Completeness {
                    by: vec![Dim::period(ident("order_date"), Period::Month)],
                    keys: vec![ident("order_id")],
                    expect: Expectation::Unchanged,
                    blocking: true,
                },
                CheckSpec::NullRate {
                    columns: vec![ident("net"), ident("customer_id")],
                    max_increase: 0.0,
                    blocking: true,
                },
                CheckSpec::Reconcile {
                    metric: Metric {
                        name: "net revenue".into(),
                        aggregate: Aggregate::Sum(ident("net")),
                        by: vec![Dim::period(ident("order_date"), Period::Month)],
                    },
                    keys: vec![ident("order_id")],
                    expect: Expectation::MaxChangePercent(5.0),
                    tolerance: None,
                    blocking: true,
                },
                CheckSpec::RowDiff {
                    keys: vec![ident("order_id")],
                    columns: vec![],
                    sample: 3,
                    max_changed: None,
                    partition: Some(Dim::period(ident("order_date"), Period::Month)),
                    blocking: true,
                },
                CheckSpec::Schema { blocking: true },
                CheckSpec::Size,
            ],
            description: "Row counts per day unchanged, order_id unique, and monthly net revenue \
                          moves by exactly the refunds of the month."
                .into(),
        },
        rollback: RollbackPlan {
            description:
                "Every day's pre-image is kept for 14 days; Runner::rollback restores them.".into(),
            keep_pre_image: true,
            retention_days: 14,
            restore_point: None,
        },
        expected_impact:
            "Net revenue for January to June 2026 drops by the refunds of those months \
                          (about 3%); gross revenue and order counts do not change."
                .into(),
        operations: Operations {
            rerun: "Run the same command: finished days are skipped, the table does not change."
                .into(),
            pause: "The control handle pauses or cancels between days; no day is half-written."
                .into(),
            recovery:
                "Run again: the ledger continues the stored plan from the first unfinished day."
                    .into(),
        },
    }
}

async fn count(wh: &DuckDbWarehouse, table: &str) -> backfill::Result<u64> {
    wh.count(&t(table), &Predicate::All).await
}

/// Refunds per order month over the scope: what the restatement should
/// take out of each month's net revenue.
async fn refunds_by_month(wh: &DuckDbWarehouse) -> backfill::Result<Vec<(String, Amount)>> {
    let rows = wh
        .with_connection(|c| {
            let mut s = c.prepare(
                "SELECT strftime(o.order_date, '%Y-%m'), CAST(sum(r.amount) AS VARCHAR)
                 FROM shop.refunds AS r JOIN shop.orders AS o USING (order_id)
                 WHERE o.order_date >= DATE '2026-01-01' AND o.order_date < DATE '2026-07-01'
                 GROUP BY 1 ORDER BY 1",
            )?;
            let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(m, a)| (m, a.parse().unwrap_or_default()))
        .collect())
}

fn progress(
    tty: bool,
    batch: &BatchId,
    done: usize,
    total: usize,
    rate: f64,
    eta: Option<Duration>,
) {
    let width = 30;
    let filled = (done * width) / total.max(1);
    let line = format!(
        "  [{}{}] {done:>3}/{total} {batch}  {}/s  ETA {}",
        "=".repeat(filled),
        " ".repeat(width - filled),
        fmt_int(rate as u64),
        eta.map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    );
    if tty {
        eprint!("\r{line}");
        let _ = std::io::stderr().flush();
    } else if done.is_multiple_of(30) || done == total {
        eprintln!("{line}");
    }
}

fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_money(x: f64) -> String {
    let cents = (x.abs() * 100.0).round() as u64;
    format!(
        "{}{}.{:02}",
        if x < 0.0 { "-" } else { "" },
        fmt_int(cents / 100),
        cents % 100
    )
}

fn fmt_signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{}", fmt_money(x))
    } else {
        fmt_money(x)
    }
}
