//! Watching and steering a run from any terminal: `status`, `pause`,
//! `resume`, `cancel`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use backfill_core::ledger::{Liveness, Steering};
use backfill_core::rules::{RulePeriod, RULES_DOCUMENT};
use backfill_core::runner::Approval;
use backfill_core::{BatchState, RunId, ValidationReport};
use serde_json::json;

use super::run::Live;
use crate::channel::{self, Request};
use crate::db::{self, Db, Opened};
use crate::exit::Exit;
use crate::output::{int, Report};
use crate::{Ctx, Failure};

/// Which run `status` shows: the argument, else the brief's.
pub fn pick_run(
    run: Option<String>,
    brief: Option<&Path>,
) -> Result<(RunId, Option<String>), Failure> {
    if let Some(r) = run {
        return Ok((RunId::new(r)?, None));
    }
    let Some(path) = brief else {
        return Err(Failure::Usage(
            "which run? name it (`backfill status RUN`) or pass the brief file with -f".into(),
        ));
    };
    let (_, file) = crate::brief_file::load(path).map_err(Failure::Brief)?;
    Ok((file.job.run_id.clone(), Some(file.settings.ledger_schema)))
}

/// The run's state, from the ledger; from the status file while a
/// DuckDB run holds its database.
pub async fn status(ctx: &Ctx, run: &RunId, schema: &str) -> Result<Report, Failure> {
    let database = ctx.db()?;
    let session = match db::open(database, schema, 2).await? {
        Opened::Ready(s) => s,
        Opened::Busy(path) => return live_status(&path, run),
    };
    let ledger = session.ledger.as_ref();
    let record = ledger.run(run).await?;
    let batches = ledger.batches(run).await?;
    let steering = ledger.steering(run).await?;
    let transitions = ledger.transitions(run).await?;
    let assets = ledger.assets(Some(run)).await?;
    let validation: Option<ValidationReport> =
        match ledger.document(run, ValidationReport::DOCUMENT).await? {
            Some(v) => serde_json::from_value(v).ok(),
            None => None,
        };
    let rules: Vec<RulePeriod> = match ledger.document(run, RULES_DOCUMENT).await? {
        Some(v) => serde_json::from_value(v).unwrap_or_default(),
        None => Vec::new(),
    };
    let approval: Option<Approval> = match ledger.document(run, Approval::DOCUMENT).await? {
        Some(v) => serde_json::from_value(v).ok(),
        None => None,
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for b in &batches {
        *counts.entry(b.state.to_string()).or_default() += 1;
    }
    let failed: Vec<_> = batches
        .iter()
        .filter(|b| b.state == BatchState::Failed)
        .map(|b| json!({"batch": b.batch.id, "attempts": b.attempts, "error": b.error}))
        .collect();
    let mut leases = Vec::new();
    for b in batches.iter().filter(|b| b.state == BatchState::Running) {
        if let Some(l) = &b.lease {
            let liveness = ledger.liveness(l).await.unwrap_or(Liveness::Unknown);
            leases.push(json!({
                "batch": b.batch.id, "worker": l.worker, "instance": l.instance,
                "expires_at": l.expires_at, "liveness": liveness,
            }));
        }
    }
    // Rolled-back batches are not gaps: the run was undone on purpose.
    let gaps: Vec<_> = batches
        .iter()
        .filter(|b| !b.state.is_done() && b.state != BatchState::RolledBack)
        .map(|b| b.batch.id.clone())
        .collect();
    let done = batches.iter().filter(|b| b.state.is_done()).count();
    let rows: u64 = batches.iter().map(|b| b.rows_written).sum();
    let last: Vec<_> = transitions.iter().rev().take(10).rev().cloned().collect();
    let verdict = validation
        .as_ref()
        .map(|v| if v.passed() { "passed" } else { "failed" });
    let mut t = String::new();
    let _ = writeln!(
        t,
        "run {} on {}: {} (steering: {})",
        record.run_id,
        record.target,
        record.status.as_str(),
        steering.as_str()
    );
    let _ = writeln!(
        t,
        "  batches: {done}/{} done, {} rows written; {}",
        batches.len(),
        int(rows),
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(n) = record.notes.last() {
        let _ = writeln!(t, "  last note: {n}");
    }
    for f in &failed {
        let _ = writeln!(t, "  FAILED {}: {}", f["batch"], f["error"]);
    }
    for l in &leases {
        let _ = writeln!(
            t,
            "  batch {} held by {} until {} ({})",
            l["batch"], l["worker"], l["expires_at"], l["liveness"]
        );
    }
    if !gaps.is_empty() {
        let shown: Vec<String> = gaps.iter().take(5).map(|g| g.to_string()).collect();
        let _ = writeln!(
            t,
            "  gaps: {} not written: {}",
            gaps.len(),
            shown.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "  validation: {}; approval: {}",
        verdict.unwrap_or("not run"),
        approval
            .as_ref()
            .map(|a| format!("by {} at {}", a.reviewer, a.at))
            .unwrap_or_else(|| "none".into())
    );
    for r in &rules {
        let _ = writeln!(
            t,
            "  rule {}: {} .. {}, {} batch(es): {}",
            r.name,
            r.from,
            r.until,
            r.batches.len(),
            r.reason
        );
    }
    for a in &assets {
        let _ = writeln!(
            t,
            "  asset {} {} (owner {}, expires {}{})",
            a.kind.as_str(),
            a.table,
            a.owner,
            a.expires_at,
            if a.dropped_at.is_some() {
                ", dropped"
            } else {
                ""
            }
        );
    }
    for tr in &last {
        let _ = writeln!(
            t,
            "  {} {} {} -> {}: {}",
            tr.at,
            tr.batch_id.as_ref().map(|b| b.0.as_str()).unwrap_or("run"),
            tr.from,
            tr.to,
            tr.reason
        );
    }
    let complete = done == batches.len();
    let exit = if validation.as_ref().is_some_and(|v| !v.passed()) {
        Exit::CheckFailed
    } else if complete {
        Exit::Success
    } else {
        Exit::Incomplete
    };
    Ok(Report::new(
        exit,
        json!({
            "source": "ledger",
            "run": record,
            "steering": steering.as_str(),
            "counts": counts,
            "done": done,
            "total": batches.len(),
            "complete": complete,
            "rows_written": rows,
            "failed": failed,
            "leases": leases,
            "gaps": gaps,
            "last_events": last,
            "validation": verdict,
            "approval": approval,
            "rules": rules,
            "assets": assets,
        }),
        t,
    ))
}

/// Status while a DuckDB run holds its database: the status file.
fn live_status(path: &Path, run: &RunId) -> Result<Report, Failure> {
    let live: Option<Live> = channel::read(&channel::status_path(path))
        .map_err(|e| backfill_core::Error::engine(format!("status file: {e}")))?;
    let Some(live) = live.filter(|l| l.run == run.as_str()) else {
        return Err(Failure::Core(backfill_core::Error::NotAllowed(format!(
            "{} is held by another process and has no status file for run {run}",
            path.display()
        ))));
    };
    let t = format!(
        "run {run}: in flight in process {} (by {}), from its status file at {}\n  batches: {}/{} done, {} rows written this invocation{}{}{}\n",
        live.pid,
        live.worker,
        live.updated_at,
        live.done,
        live.total,
        int(live.rows_written),
        live.eta_seconds
            .map(|s| format!(", ~{s:.0} s to go"))
            .unwrap_or_default(),
        live.throttled
            .as_ref()
            .map(|r| format!("; throttled: {r}"))
            .unwrap_or_default(),
        live.paused
            .as_ref()
            .map(|r| format!("; paused: {r}"))
            .unwrap_or_default(),
    );
    Ok(Report::new(
        Exit::Incomplete,
        json!({"source": "status_file", "live": live, "complete": false}),
        t,
    ))
}

/// Pause, resume or cancel: in the ledger, or through the control file
/// while a DuckDB run holds its database.
pub async fn steer(ctx: &Ctx, run: &str, schema: &str, to: Steering) -> Result<Report, Failure> {
    let run = RunId::new(run)?;
    let database = ctx.db()?;
    let what = match to {
        Steering::Pause => "pause",
        Steering::Run => "resume",
        Steering::Cancel => "cancel",
    };
    match db::open(database, schema, 2).await? {
        Opened::Ready(s) => {
            // Fails with RunNotFound for an unknown run.
            let record = s.ledger.run(&run).await?;
            s.ledger.steer(&run, to, &ctx.actor).await?;
            let after = match to {
                Steering::Pause => {
                    "workers stop claiming at their next commit-group boundary; `backfill resume` lifts it"
                }
                Steering::Run => "the next `backfill run` goes on",
                Steering::Cancel => {
                    "workers stop at their next commit-group boundary; the run stays resumable"
                }
            };
            Ok(Report::new(
                Exit::Success,
                json!({"run": run, "steering": to.as_str(), "via": "ledger", "status": record.status}),
                format!("{what} recorded for run {run} in the ledger: {after}\n"),
            ))
        }
        Opened::Busy(path) => {
            let Db::DuckDb(_) = database else {
                unreachable!("only a DuckDB file is ever busy")
            };
            let request = Request {
                run: run.clone(),
                steer: to.as_str().to_string(),
                by: ctx.actor.clone(),
                at: jiff::Timestamp::now().to_string(),
            };
            channel::write_atomic(&channel::control_path(&path), &request)
                .map_err(|e| backfill_core::Error::engine(format!("control file: {e}")))?;
            Ok(Report::new(
                Exit::Success,
                json!({"run": run, "steering": to.as_str(), "via": "control_file",
                       "file": channel::control_path(&path)}),
                format!(
                    "{what} requested for run {run}: the process holding {} records it in the ledger \
                     and it takes effect at the next commit-group boundary\n",
                    path.display()
                ),
            ))
        }
    }
}
