//! # backfill-cli
//!
//! The `backfill` command: the runbook from a shell or an orchestrator,
//! without writing Rust. Every subcommand reads one brief file (YAML or
//! TOML) and a database (`--db` or `BACKFILL_DB`: a DuckDB file, or a
//! PostgreSQL connection string):
//!
//! ```text
//! backfill preflight -f brief.yaml          every finding, with where in the file
//! backfill plan -f brief.yaml               batches, estimates, blast radius; writes nothing
//! backfill slice -f brief.yaml              the test slice and the run's estimate
//! backfill run -f brief.yaml                start or resume
//! backfill status RUN                       from any terminal, while it runs
//! backfill pause|resume|cancel RUN          at the next commit-group boundary, in every process
//! backfill validate|approve|cutover|rollback|refresh|note|done -f brief.yaml
//! backfill cleanup [--dry-run]
//! ```
//!
//! `--output json` prints one JSON document (schema [`output::SCHEMA`]);
//! `run` prints JSON lines of events before it. Exit codes are in
//! [`exit::Exit`].
#![warn(missing_docs)]

pub mod args;
pub mod brief_file;
pub mod channel;
mod cmd;
pub mod db;
pub mod demo;
pub mod exit;
pub mod output;

use std::path::Path;

use backfill_core::runner::RunOptions;
use backfill_core::{Error, Runner};
use serde_json::json;

use crate::args::{Cli, Command};
use crate::brief_file::{BriefFile, FileFinding};
use crate::db::{Db, Session};
use crate::exit::Exit;
use crate::output::Format;

/// Why a command could not do what was asked.
#[derive(Debug)]
pub enum Failure {
    /// The brief file is wrong: every finding.
    Brief(Vec<FileFinding>),
    /// The library refused or failed.
    Core(Error),
    /// The command line is incomplete.
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl Failure {
    fn exit(&self) -> Exit {
        match self {
            Failure::Brief(_) | Failure::Usage(_) => Exit::BadInput,
            Failure::Core(e) => Exit::of(e),
        }
    }
}

/// What every command has: where, how to print, and who acts.
pub struct Ctx {
    /// The database, if given.
    pub db: Option<Db>,
    /// Words or JSON.
    pub format: Format,
    /// Who acts.
    pub actor: String,
}

impl Ctx {
    fn db(&self) -> Result<&Db, Failure> {
        self.db.as_ref().ok_or_else(|| {
            Failure::Usage(
                "no database: pass --db (a DuckDB file, a PostgreSQL connection string or a \
                 Spark Connect URL) or set BACKFILL_DB"
                    .into(),
            )
        })
    }

    fn load(&self, path: &Path) -> Result<(String, BriefFile), Failure> {
        brief_file::load(path).map_err(Failure::Brief)
    }

    async fn session(&self, schema: &str, pool: usize) -> Result<Session, Failure> {
        Ok(db::open_ready(self.db()?, schema, pool).await?)
    }

    /// A runner over the brief's settings, acting as the caller.
    fn runner(&self, s: &Session, file: &BriefFile) -> Runner {
        let defaults = RunOptions::default();
        let options = RunOptions {
            concurrency: file.settings.concurrency,
            stage_source: file.settings.stage_source,
            stage_queries: file.settings.stage_queries,
            worker: self.actor.clone(),
            max_batches: file.settings.max_batches.unwrap_or(defaults.max_batches),
            max_group: file.settings.max_group.unwrap_or(defaults.max_group),
            group_target: file
                .settings
                .group_target_ms
                .map_or(defaults.group_target, std::time::Duration::from_millis),
            ..defaults
        };
        Runner::new(s.warehouse.clone(), s.ledger.clone()).with_options(options)
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main(cli: Cli) -> u8 {
    let actor = cli
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let ctx = Ctx {
        db: cli
            .db
            .as_deref()
            .map(|d| Db::parse(d, cli.ledger.as_deref())),
        format: cli.format(),
        actor,
    };
    let name = cli.command.name();
    let result = cmd::dispatch(&ctx, cli.command).await;
    let exit = match result {
        Ok(report) => output::emit(ctx.format, name, report),
        Err(failure) => fail(ctx.format, name, failure),
    };
    exit.code()
}

impl Cli {
    fn format(&self) -> Format {
        self.output
    }
}

impl Command {
    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Preflight(_) => "preflight",
            Command::Plan(_) => "plan",
            Command::Announce(_) => "announce",
            Command::Slice { .. } => "slice",
            Command::Run { .. } => "run",
            Command::Status { .. } => "status",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Cancel(_) => "cancel",
            Command::AcceptDrift { .. } => "accept-drift",
            Command::Validate(_) => "validate",
            Command::Approve { .. } => "approve",
            Command::Cutover(_) => "cutover",
            Command::Rollback(_) => "rollback",
            Command::Refresh(_) => "refresh",
            Command::Cleanup { .. } => "cleanup",
            Command::Note(_) => "note",
            Command::Done(_) => "done",
            Command::Demo { .. } => "demo",
        }
    }
}

/// Prints a failure (stderr in words, stdout in JSON) and returns its exit.
fn fail(format: Format, command: &str, failure: Failure) -> Exit {
    let exit = failure.exit();
    let (kind, message, findings) = match &failure {
        Failure::Brief(f) => (
            "brief",
            format!(
                "the brief file has {} problem(s); nothing was written",
                f.iter().filter(|f| f.blocking).count()
            ),
            f.clone(),
        ),
        Failure::Core(Error::Preflight(found)) => (
            "preflight",
            "preflight refused the brief; nothing was written".to_string(),
            found
                .iter()
                .map(|f| FileFinding {
                    path: f.section.clone(),
                    line: None,
                    column: None,
                    message: f.message.clone(),
                    blocking: f.blocking,
                })
                .collect(),
        ),
        Failure::Core(e) => ("error", e.to_string(), Vec::new()),
        Failure::Usage(m) => ("usage", m.clone(), Vec::new()),
    };
    match format {
        Format::Json => {
            let doc = json!({
                "schema": output::SCHEMA,
                "command": command,
                "exit": {"code": exit.code(), "name": exit.name()},
                "error": {"kind": kind, "message": message, "findings": findings},
            });
            println!("{doc}");
        }
        Format::Text => {
            eprintln!("backfill {command}: {message}");
            for f in &findings {
                eprintln!("  {f}");
            }
        }
    }
    exit
}
