//! Before the run: preflight, plan, announce, test slice.

use std::fmt::Write;

use backfill_core::blast::{self, BlastRadius};
use backfill_core::{note, BatchId, Value};
use serde::Serialize;
use serde_json::json;

use crate::brief_file::FileFinding;
use crate::db::{self, Opened};
use crate::exit::Exit;
use crate::output::{int, Report};
use crate::{Ctx, Failure};

/// Every finding: the file's, the brief's, and with a database the
/// engine's (the target and its columns, undeclared dependents).
pub async fn preflight(ctx: &Ctx, path: &std::path::Path) -> Result<Report, Failure> {
    let (text, file) = ctx.load(path)?;
    let mut findings = file.preflight(&text);
    let mut engine_checked = false;
    if let Some(database) = &ctx.db {
        match db::open(database, &file.settings.ledger_schema, 2).await? {
            Opened::Ready(s) => {
                engine_checked = true;
                let target = &file.job.brief.scope.target;
                match s.warehouse.describe(target).await? {
                    None => findings.push(FileFinding {
                        path: "scope.target".into(),
                        line: None,
                        column: None,
                        message: format!("no table {target} in the database"),
                        blocking: true,
                    }),
                    Some(schema) => {
                        let column = &file.job.brief.scope.batch_column;
                        if schema.column(column).is_none() {
                            findings.push(FileFinding {
                                path: "scope.batch_column".into(),
                                line: None,
                                column: None,
                                message: format!("{target} has no column {column}"),
                                blocking: true,
                            });
                        }
                        let radius =
                            blast::blast_radius(s.warehouse.as_ref(), &file.job.brief).await?;
                        for f in radius.findings(file.job.brief.risk) {
                            findings.push(FileFinding {
                                path: f.section,
                                line: None,
                                column: None,
                                message: f.message,
                                blocking: f.blocking,
                            });
                        }
                    }
                }
            }
            Opened::Busy(p) => findings.push(FileFinding {
                path: String::new(),
                line: None,
                column: None,
                message: format!(
                    "{} is held by a run in flight; the engine checks were skipped",
                    p.display()
                ),
                blocking: false,
            }),
        }
    }
    let blocking = findings.iter().filter(|f| f.blocking).count();
    let mut text_out = String::new();
    for f in &findings {
        let _ = writeln!(text_out, "{f}");
    }
    let _ = writeln!(
        text_out,
        "preflight {}: {blocking} blocking, {} warning(s){}",
        if blocking == 0 { "passed" } else { "refused" },
        findings.len() - blocking,
        if engine_checked {
            ""
        } else {
            " (brief only; pass --db for the engine's checks)"
        }
    );
    let exit = if blocking == 0 {
        Exit::Success
    } else {
        Exit::BadInput
    };
    Ok(Report::new(
        exit,
        json!({
            "run": file.job.run_id,
            "passed": blocking == 0,
            "engine_checked": engine_checked,
            "findings": findings,
        }),
        text_out,
    ))
}

/// One batch as `plan` shows it.
#[derive(Serialize)]
struct PlannedBatch {
    id: BatchId,
    seq: u32,
    start: Option<String>,
    end: Option<String>,
    estimated_rows: Option<u64>,
}

/// The plan: batches with bounds in the scope's zone, row estimates and
/// the blast radius. Opens no ledger and writes nothing.
pub async fn plan(ctx: &Ctx, path: &std::path::Path) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    let job = &file.job;
    let zone = &job.brief.scope.time_zone;
    let mut estimates = None;
    let mut radius: Option<BlastRadius> = None;
    if let Some(database) = &ctx.db {
        let warehouse = db::open_warehouse(database).await?;
        estimates = Some(note::batch_estimates(warehouse.as_ref(), job).await?);
        radius = Some(blast::blast_radius(warehouse.as_ref(), &job.brief).await?);
    }
    let batches: Vec<PlannedBatch> = job
        .plan
        .batches
        .iter()
        .enumerate()
        .map(|(i, b)| PlannedBatch {
            id: b.id.clone(),
            seq: b.seq,
            start: b.start.as_ref().map(|v| in_zone(v, zone)),
            end: b.end.as_ref().map(|v| in_zone(v, zone)),
            estimated_rows: estimates.as_ref().map(|e| e[i].1),
        })
        .collect();
    let declared = blast::declared(&job.brief);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "run {}: {} batch(es) of {} by {}, bounds in {zone}, fingerprint {}",
        job.run_id,
        batches.len(),
        job.target(),
        job.brief.strategy.name(),
        &job.fingerprint()[..12]
    );
    let shown: Vec<&PlannedBatch> = if batches.len() > 12 {
        batches[..6]
            .iter()
            .chain(&batches[batches.len() - 6..])
            .collect()
    } else {
        batches.iter().collect()
    };
    for (i, b) in shown.iter().enumerate() {
        if batches.len() > 12 && i == 6 {
            let _ = writeln!(t, "  … {} more …", batches.len() - 12);
        }
        let _ = writeln!(
            t,
            "  {:>5}  {:<24} {} .. {}{}",
            b.seq,
            b.id.to_string(),
            b.start.as_deref().unwrap_or("-"),
            b.end.as_deref().unwrap_or("-"),
            b.estimated_rows
                .map(|r| format!("  ~{} rows", int(r)))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &estimates {
        let total: u64 = e.iter().map(|(_, n)| n).sum();
        let _ = writeln!(t, "estimated rows replaced: {}", int(total));
    }
    let _ = writeln!(t, "blast radius:");
    for a in &declared {
        let _ = writeln!(t, "  declared {}: {} ({})", a.kind, a.name, a.owner);
    }
    match &radius {
        Some(r) => {
            if r.discovered.is_empty() {
                let _ = writeln!(t, "  in the engine: no view or other relation reads it");
            }
            for d in &r.discovered {
                let _ = writeln!(t, "  in the engine: {:?} {}", d.kind, d.relation);
            }
            for d in &r.undeclared {
                let _ = writeln!(
                    t,
                    "  NOT DECLARED in the brief: {:?} {}",
                    d.kind, d.relation
                );
            }
        }
        None => {
            let _ = writeln!(t, "  (pass --db to add the engine's own dependents)");
        }
    }
    let _ = writeln!(t, "nothing was written");
    Ok(Report::new(
        Exit::Success,
        json!({
            "run": job.run_id,
            "target": job.target(),
            "time_zone": zone,
            "strategy": job.brief.strategy,
            "fingerprint": job.fingerprint(),
            "count": batches.len(),
            "batches": batches,
            "blast_radius": {
                "declared": declared,
                "discovered": radius.as_ref().map(|r| &r.discovered),
                "undeclared": radius.as_ref().map(|r| &r.undeclared),
            },
        }),
        t,
    ))
}

/// A bound as people read it: an instant in the scope's zone.
fn in_zone(v: &Value, zone: &str) -> String {
    match v {
        Value::Timestamp(ts) => jiff::tz::TimeZone::get(zone)
            .map(|tz| ts.to_zoned_datetime(tz).to_string())
            .unwrap_or_else(|_| ts.to_string()),
        other => other.to_string(),
    }
}

/// The announcement for the people a run affects.
pub async fn announce(ctx: &Ctx, path: &std::path::Path) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    let mut a = note::announcement(&file.job, None);
    if let Some(database) = &ctx.db {
        let warehouse = db::open_warehouse(database).await?;
        let e = note::batch_estimates(warehouse.as_ref(), &file.job).await?;
        a = a.with_engine_estimate(&e);
    }
    let md = a.markdown();
    Ok(Report::new(Exit::Success, &a, md))
}

/// The test slice: the named batches written for real, and the estimate
/// for the whole plan.
pub async fn slice(
    ctx: &Ctx,
    path: &std::path::Path,
    batches: Vec<String>,
) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    let ids: Vec<BatchId> = if batches.is_empty() {
        file.slice.clone()
    } else {
        batches.into_iter().map(BatchId).collect()
    };
    if ids.is_empty() {
        return Err(Failure::Usage(
            "no test slice: name batches with --batches, or list them under `slice` in the brief"
                .into(),
        ));
    }
    for id in &ids {
        if file.job.plan.batch(id).is_none() {
            return Err(Failure::Usage(format!("batch {id} is not in the plan")));
        }
    }
    let s = ctx.session(&file.settings.ledger_schema, 4).await?;
    let runner = ctx.runner(&s, &file);
    let est = runner.test_slice(&file.job, &ids).await?;
    let mut t = String::from("test slice:\n");
    for (id, rows, took) in &est.batches {
        let _ = writeln!(
            t,
            "  {id}: {} rows in {:.0} ms",
            int(*rows),
            took.as_secs_f64() * 1e3
        );
    }
    let failed = est
        .outcomes
        .iter()
        .filter(|o| o.is_blocking_failure())
        .count();
    let _ = writeln!(
        t,
        "estimate for all {} batches: {:.1} s, ~{} rows; checks on the slice: {} passed, {failed} failed",
        est.plan_batches,
        est.estimated_total.as_secs_f64(),
        int(est.estimated_rows),
        est.outcomes.len() - failed
    );
    let exit = if failed > 0 {
        Exit::CheckFailed
    } else {
        Exit::Success
    };
    Ok(Report::new(exit, &est, t))
}
