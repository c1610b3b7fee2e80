//! `run`: start or resume, with progress for people or JSON lines for
//! programs, and the DuckDB control and status files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backfill_core::{Event, Ledger, RunId, RunReport, RunStatus};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::channel::{self, Request};
use crate::db::{Db, Opened};
use crate::exit::Exit;
use crate::output::{self, int, Format, Report};
use crate::{db, Ctx, Failure};

/// What `run` was asked.
pub struct RunArgs {
    /// The brief file.
    pub brief: PathBuf,
    /// Workers, overriding the brief.
    pub concurrency: Option<usize>,
    /// Batches to write before stopping.
    pub until: Option<usize>,
    /// Check and show; write nothing.
    pub dry_run: bool,
}

/// What the status file holds: the running process's last view.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Live {
    /// The run.
    pub run: String,
    /// The process running it.
    pub pid: u32,
    /// Who runs it.
    pub worker: String,
    /// When this was written (RFC 3339).
    pub updated_at: String,
    /// Whether the process has finished (it no longer holds the file).
    pub finished: bool,
    /// The run's status when it finished.
    pub status: Option<RunStatus>,
    /// Batches done.
    pub done: usize,
    /// Batches in the plan.
    pub total: usize,
    /// Rows written by this process.
    pub rows_written: u64,
    /// Rows per second.
    pub rows_per_sec: f64,
    /// Seconds to go, estimated.
    pub eta_seconds: Option<f64>,
    /// Why the run waits, if it does.
    pub throttled: Option<String>,
    /// Why it paused, if it did.
    pub paused: Option<String>,
    /// The last events, newest last.
    pub last_events: Vec<Event>,
}

const LAST_EVENTS: usize = 10;

/// Starts or resumes the run.
pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<Report, Failure> {
    if args.dry_run {
        return dry_run(ctx, &args.brief).await;
    }
    let (_, mut file) = ctx.load(&args.brief)?;
    if let Some(n) = args.concurrency {
        if n == 0 {
            return Err(Failure::Usage("--concurrency must be at least 1".into()));
        }
        file.settings.concurrency = n;
    }
    let database = ctx.db()?.clone();
    let pool = file.settings.concurrency + 2;
    let session = match db::open(&database, &file.settings.ledger_schema, pool).await? {
        Opened::Ready(s) => s,
        Opened::Busy(p) => {
            return Err(Failure::Core(backfill_core::Error::TargetLocked {
                target: file.job.target().to_string(),
                holder: format!(
                    "another process holding {} (see `backfill status {}`)",
                    p.display(),
                    file.job.run_id
                ),
            }))
        }
    };
    let job = &file.job;
    let duck_path = match &database {
        Db::DuckDb(p) => Some(p.clone()),
        Db::Postgres(_) | Db::Spark { .. } => None,
    };
    // A request left while no process held the file applies now.
    if let Some(path) = &duck_path {
        apply_request(path, &job.run_id, session.ledger.as_ref()).await?;
    }
    let live = Arc::new(Mutex::new(Live {
        run: job.run_id.to_string(),
        pid: std::process::id(),
        worker: ctx.actor.clone(),
        total: job.plan.batches.len(),
        ..Live::default()
    }));
    let runner = ctx.runner(&session, &file);
    let control = runner.control();
    let written = Arc::new(AtomicUsize::new(0));
    let until = args.until;
    let show = Show::new(ctx.format, job.plan.batches.len());
    let hook_live = live.clone();
    let hook_path = duck_path.clone();
    let hook_show = show.clone();
    if let Some(path) = &duck_path {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        l.updated_at = jiff::Timestamp::now().to_string();
        let _ = channel::write_atomic(&channel::status_path(path), &*l);
    }
    let runner = runner.on_event(move |e| {
        // The status file first: whoever saw the event can read it.
        if let Some(path) = &hook_path {
            let mut l = hook_live.lock().unwrap_or_else(|e| e.into_inner());
            observe(&mut l, e);
            let _ = channel::write_atomic(&channel::status_path(path), &*l);
        }
        hook_show.event(e);
        if let Event::BatchFinished { .. } = e {
            let n = written.fetch_add(1, Ordering::SeqCst) + 1;
            if until == Some(n) {
                control.cancel();
            }
        }
    });
    // DuckDB: watch the control file while the run holds the database.
    let watcher = duck_path.clone().map(|path| {
        let ledger = session.ledger.clone();
        let run = job.run_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = apply_request(&path, &run, ledger.as_ref()).await {
                    eprintln!("backfill run: could not apply a control request: {e}");
                }
            }
        })
    });
    let result = runner.run(job).await;
    if let Some(w) = watcher {
        w.abort();
    }
    show.finish();
    if let Some(path) = &duck_path {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        l.finished = true;
        l.status = result.as_ref().ok().map(|r| r.status);
        l.updated_at = jiff::Timestamp::now().to_string();
        let _ = channel::write_atomic(&channel::status_path(path), &*l);
    }
    let report = result?;
    Ok(outcome(&report))
}

/// Applies a pending control request for `run` to the ledger's steering.
async fn apply_request(path: &Path, run: &RunId, ledger: &dyn Ledger) -> backfill_core::Result<()> {
    let request: Option<Request> = channel::take_request(path, run)
        .map_err(|e| backfill_core::Error::engine(format!("control file: {e}")))?;
    if let Some(r) = request {
        if let Some(to) = r.steering() {
            ledger.steer(run, to, &r.by).await?;
        }
    }
    Ok(())
}

/// The exit and the words for a run's report: complete only when every
/// batch is written and no blocking check failed.
fn outcome(report: &RunReport) -> Report {
    let blocking = report.failures().count()
        + report
            .validation
            .as_ref()
            .map_or(0, |v| v.blocking_failures().count());
    let (exit, headline) = match report.status {
        _ if blocking > 0 => (
            Exit::CheckFailed,
            format!("{blocking} blocking check(s) failed; see `backfill status` and roll back or fix"),
        ),
        RunStatus::Completed | RunStatus::CutOver if report.gaps.is_empty() => (
            Exit::Success,
            if report.nothing_to_do() {
                format!(
                    "nothing to do: all {} batches were already written",
                    report.batches_total
                )
            } else {
                format!(
                    "complete: {}/{} batches written ({} this time, {} rows)",
                    report.batches_done,
                    report.batches_total,
                    report.batches_this_run,
                    int(report.rows_written)
                )
            },
        ),
        RunStatus::Paused => (
            Exit::Incomplete,
            format!(
                "paused between commit groups: {}/{} batches written; `backfill resume {}` then `backfill run` to go on",
                report.batches_done, report.batches_total, report.run_id
            ),
        ),
        RunStatus::Cancelled => (
            Exit::Incomplete,
            format!(
                "stopped: {}/{} batches written; the run is resumable with `backfill run`",
                report.batches_done, report.batches_total
            ),
        ),
        RunStatus::Running => (
            Exit::Incomplete,
            format!(
                "incomplete: {}/{} batches written; the rest are in other workers' hands",
                report.batches_done, report.batches_total
            ),
        ),
        _ => (
            Exit::Failure,
            format!(
                "{}: {}/{} batches written",
                report.status.as_str(),
                report.batches_done,
                report.batches_total
            ),
        ),
    };
    Report::new(
        exit,
        json!({"headline": headline, "report": report}),
        format!("{report}{headline}\n"),
    )
}

/// `run --dry-run`: the preflight with the engine's checks, and the plan.
async fn dry_run(ctx: &Ctx, path: &Path) -> Result<Report, Failure> {
    let checked = super::before::preflight(ctx, path).await?;
    if checked.exit != Exit::Success {
        return Ok(checked);
    }
    let planned = super::before::plan(ctx, path).await?;
    Ok(Report {
        exit: Exit::Success,
        data: json!({"dry_run": true, "preflight": checked.data, "plan": planned.data}),
        text: format!(
            "{}{}dry run: nothing was written; `backfill run` without --dry-run starts it\n",
            checked.text, planned.text
        ),
    })
}

fn observe(l: &mut Live, e: &Event) {
    l.updated_at = jiff::Timestamp::now().to_string();
    match e {
        Event::RunStarted { total, done, .. } => {
            l.total = *total;
            l.done = *done;
        }
        Event::BatchFinished {
            rows_written,
            done,
            total,
            rows_per_sec,
            eta,
            ..
        } => {
            l.done = *done;
            l.total = *total;
            l.rows_written += rows_written;
            l.rows_per_sec = *rows_per_sec;
            l.eta_seconds = eta.map(|d| d.as_secs_f64());
            l.throttled = None;
        }
        Event::Throttled { reason } => l.throttled = Some(reason.clone()),
        Event::Paused { reason } => l.paused = Some(reason.clone()),
        Event::Resumed => l.paused = None,
        Event::RunFinished { status } => l.status = Some(*status),
        _ => {}
    }
    l.last_events.push(e.clone());
    if l.last_events.len() > LAST_EVENTS {
        l.last_events.remove(0);
    }
}

/// How progress is shown: a bar on a terminal, JSON lines for programs,
/// a line per batch otherwise.
#[derive(Clone)]
enum Show {
    Bar(ProgressBar),
    Json,
    Lines,
}

impl Show {
    fn new(format: Format, total: usize) -> Show {
        match format {
            Format::Json => Show::Json,
            Format::Text if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::new(total as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} batches  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Show::Bar(bar)
            }
            Format::Text => Show::Lines,
        }
    }

    fn event(&self, e: &Event) {
        match self {
            Show::Json => println!("{}", output::event_line(e)),
            Show::Bar(bar) => match e {
                Event::RunStarted { done, .. } => bar.set_position(*done as u64),
                Event::BatchFinished {
                    done,
                    rows_per_sec,
                    eta,
                    ..
                } => {
                    bar.set_position(*done as u64);
                    bar.set_message(format!(
                        "{} rows/s{}",
                        int(*rows_per_sec as u64),
                        eta.map(|d| format!(", ~{:.0} s to go", d.as_secs_f64()))
                            .unwrap_or_default()
                    ));
                }
                Event::Throttled { reason } => bar.set_message(format!("throttled: {reason}")),
                Event::Paused { reason } => bar.set_message(format!("paused: {reason}")),
                Event::BatchFailed { batch, error, .. } => {
                    bar.println(format!("batch {batch} failed: {error}"))
                }
                _ => {}
            },
            Show::Lines => match e {
                Event::RunStarted {
                    total,
                    done,
                    resumed,
                } => eprintln!(
                    "{} run: {done}/{total} batches already done",
                    if *resumed { "resuming" } else { "starting" }
                ),
                Event::BatchFinished {
                    batch,
                    rows_written,
                    done,
                    total,
                    eta,
                    ..
                } => eprintln!(
                    "batch {batch}: {} rows ({done}/{total}){}",
                    int(*rows_written),
                    eta.map(|d| format!(", ~{:.0} s to go", d.as_secs_f64()))
                        .unwrap_or_default()
                ),
                Event::BatchFailed {
                    batch,
                    error,
                    will_retry,
                } => eprintln!(
                    "batch {batch} failed{}: {error}",
                    if *will_retry { " (will retry)" } else { "" }
                ),
                Event::Throttled { reason } => eprintln!("throttled: {reason}"),
                Event::Paused { reason } => eprintln!("paused: {reason}"),
                _ => {}
            },
        }
    }

    fn finish(&self) {
        if let Show::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
