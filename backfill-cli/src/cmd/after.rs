//! After the data: validate, approve, cut over, roll back, refresh,
//! clean up, the change note and the definition of done.

use std::fmt::Write;
use std::path::Path;

use backfill_core::cleanup::CleanupOptions;
use backfill_core::RunId;
use serde_json::json;

use crate::exit::Exit;
use crate::output::Report;
use crate::{Ctx, Failure};

/// Which after-run step.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// The end-of-run checks.
    Validate,
    /// Expose the new data.
    Cutover,
    /// Restore the prior state.
    Rollback,
    /// Downstream refreshes.
    Refresh,
    /// The change note.
    Note,
    /// The definition of done.
    Done,
}

/// Runs one after-run step of the brief's run.
pub async fn step(ctx: &Ctx, path: &Path, step: Step) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    let s = ctx.session(&file.settings.ledger_schema, 4).await?;
    let runner = ctx.runner(&s, &file);
    let job = &file.job;
    Ok(match step {
        Step::Validate => {
            let v = runner.validate(job).await?;
            let exit = if v.passed() {
                Exit::Success
            } else {
                Exit::CheckFailed
            };
            let text = format!(
                "{v}validation {}\n",
                if v.passed() { "passed" } else { "FAILED" }
            );
            Report::new(exit, &v, text)
        }
        Step::Cutover => {
            runner.cutover(job).await?;
            Report::new(
                Exit::Success,
                json!({"run": job.run_id, "cut_over": true}),
                format!("run {} cut over: readers see the new data\n", job.run_id),
            )
        }
        Step::Rollback => {
            runner.rollback(job).await?;
            Report::new(
                Exit::Success,
                json!({"run": job.run_id, "rolled_back": true}),
                format!(
                    "run {} rolled back: the target holds its prior state\n",
                    job.run_id
                ),
            )
        }
        Step::Refresh => {
            let r = runner.refresh(job, &file.refresh_actions()).await?;
            let text = format!(
                "refreshed: {}\nalready refreshed: {}\n",
                join(&r.refreshed),
                join(&r.already)
            );
            Report::new(Exit::Success, &r, text)
        }
        Step::Note => {
            let n = runner.change_note(job).await?;
            let md = n.markdown();
            Report::new(Exit::Success, &n, md)
        }
        Step::Done => {
            let d = runner.done_status(job).await?;
            let mut t = String::new();
            for (item, missing) in &d.items {
                match missing {
                    None => {
                        let _ = writeln!(t, "  [x] {item:?}");
                    }
                    Some(m) => {
                        let _ = writeln!(t, "  [ ] {item:?}: {m}");
                    }
                }
            }
            let done = d.is_done();
            let _ = writeln!(
                t,
                "run {} is {}",
                job.run_id,
                if done { "done" } else { "NOT done" }
            );
            let exit = if done {
                Exit::Success
            } else {
                Exit::Incomplete
            };
            Report::new(exit, json!({"done": done, "items": d.items}), t)
        }
    })
}

fn join(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Records a reviewer's approval.
pub async fn approve(
    ctx: &Ctx,
    path: &Path,
    reviewer: &str,
    note: &str,
) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    // The approval is recorded in the reviewer's name: it must be the
    // reviewer who runs the command, so that an operator cannot approve
    // their own run by typing someone else's name.
    if !backfill_core::brief::same_person(&ctx.actor, reviewer) {
        return Err(Failure::Core(backfill_core::Error::Approval(format!(
            "the approval would be recorded as {reviewer}, but the command runs as {}: the \
             reviewer approves as themselves (--as {reviewer}, or BACKFILL_USER)",
            ctx.actor
        ))));
    }
    let s = ctx.session(&file.settings.ledger_schema, 4).await?;
    let runner = ctx.runner(&s, &file);
    let a = runner.approve(&file.job, reviewer, note).await?;
    let text = format!(
        "run {} approved by {} at {}: {}\n",
        file.job.run_id, a.reviewer, a.at, a.note
    );
    Ok(Report::new(Exit::Success, &a, text))
}

/// Drops expired working tables (or lists them).
pub async fn cleanup(
    ctx: &Ctx,
    run: Option<String>,
    dry_run: bool,
    schema: &str,
) -> Result<Report, Failure> {
    let s = ctx.session(schema, 2).await?;
    let run = run.map(RunId::new).transpose()?;
    let options = CleanupOptions {
        dry_run,
        run,
        now: None,
    };
    let r =
        backfill_core::cleanup::cleanup(s.warehouse.as_ref(), s.ledger.as_ref(), &options).await?;
    let exit = if r.failed.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    };
    let text = r.to_string();
    Ok(Report::new(exit, &r, text))
}

/// Accepts the run's drift as the caller, with a reason.
pub async fn accept_drift(ctx: &Ctx, path: &Path, why: &str) -> Result<Report, Failure> {
    let (_, file) = ctx.load(path)?;
    let s = ctx.session(&file.settings.ledger_schema, 4).await?;
    let runner = ctx.runner(&s, &file);
    let drift = runner.accept_drift(&file.job, &ctx.actor, why).await?;
    let mut t = format!(
        "accepted {} change(s) for run {} as {}: {why}\n",
        drift.len(),
        file.job.run_id,
        ctx.actor
    );
    for d in &drift {
        let _ = writeln!(t, "  {d}");
    }
    let _ = writeln!(t, "the next `backfill run` goes on");
    Ok(Report::new(
        Exit::Success,
        json!({"run": file.job.run_id, "by": ctx.actor, "why": why, "accepted": drift}),
        t,
    ))
}
