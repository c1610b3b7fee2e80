//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Safe backfills from a brief file: preflight, plan, run, watch, steer,
/// validate, approve, cut over, roll back, tell people.
#[derive(Debug, Parser)]
#[command(name = "backfill", version, after_help = crate::exit::TABLE)]
pub struct Cli {
    /// The database: a DuckDB file, a PostgreSQL connection string
    /// (`postgresql://…` or `host=… dbname=…`), or a Spark Connect URL
    /// (`sc://host:15002`, Delta tables), whose ledger is at --ledger.
    #[arg(long, env = "BACKFILL_DB", global = true)]
    pub db: Option<String>,
    /// Where the ledger lives when --db is Spark, which keeps none: a
    /// PostgreSQL connection string (other terminals steer and read the
    /// run there).
    #[arg(long, env = "BACKFILL_LEDGER", global = true)]
    pub ledger: Option<String>,
    /// Words for people, or JSON (schema `backfill.cli/1`).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: Format,
    /// Who is acting, as the ledger records it.
    #[arg(long = "as", env = "BACKFILL_USER", global = true)]
    pub actor: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The brief file a command reads.
#[derive(Debug, Args)]
pub struct BriefArg {
    /// The brief file (YAML or TOML).
    #[arg(long, short = 'f', env = "BACKFILL_BRIEF")]
    pub brief: PathBuf,
}

/// The subcommands, in runbook order.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every finding about the brief, blocking and warning, with where
    /// in the file; with --db, also what the engine shows (tables,
    /// columns, undeclared dependents).
    Preflight(BriefArg),
    /// The batches, their bounds in the scope's zone, row estimates and
    /// the blast radius. Writes nothing.
    Plan(BriefArg),
    /// The before-run announcement (Markdown, or JSON with --output json).
    Announce(BriefArg),
    /// Runs the test slice (the brief's `slice`, or --batches) and
    /// estimates the whole run.
    Slice {
        /// The brief file.
        #[command(flatten)]
        brief: BriefArg,
        /// Batch ids, comma separated.
        #[arg(long, value_delimiter = ',')]
        batches: Vec<String>,
    },
    /// Starts or resumes the run.
    Run {
        /// The brief file.
        #[command(flatten)]
        brief: BriefArg,
        /// Workers in this process (overrides the brief's run_options).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Stop after this many batches written by this invocation (the
        /// run stays resumable).
        #[arg(long)]
        until: Option<usize>,
        /// Check everything and show what would run; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The run's state from the ledger: counts, failures, leases, gaps,
    /// last events, validation, approval, assets.
    Status {
        /// The run (default: the brief's).
        run: Option<String>,
        /// The brief file, for its run id and ledger schema.
        #[arg(long, short = 'f', env = "BACKFILL_BRIEF")]
        brief: Option<PathBuf>,
        /// The ledger's schema.
        #[arg(long, default_value = "backfill")]
        ledger_schema: String,
    },
    /// Pauses the run at the next commit-group boundary, in every process.
    Pause(SteerArgs),
    /// Lifts a pause or a cancel; the next `run` goes on.
    Resume(SteerArgs),
    /// Stops the run at the next commit-group boundary; it stays resumable.
    Cancel(SteerArgs),
    /// Accepts the drift that paused the run (as `--as`, with a reason):
    /// what the run depends on now becomes its baseline, and the pause is
    /// lifted.
    AcceptDrift {
        /// The brief file.
        #[command(flatten)]
        brief: BriefArg,
        /// Why the change is acceptable.
        #[arg(long)]
        why: String,
    },
    /// Runs the end-of-run checks and keeps the report.
    Validate(BriefArg),
    /// Records a reviewer's approval of the validated run.
    Approve {
        /// The brief file.
        #[command(flatten)]
        brief: BriefArg,
        /// The reviewer (not the operator).
        #[arg(long)]
        reviewer: String,
        /// What the reviewer says.
        #[arg(long)]
        note: String,
    },
    /// Exposes the new data (staging swap, parallel version).
    Cutover(BriefArg),
    /// Restores the exact prior state of the target.
    Rollback(BriefArg),
    /// Refreshes the brief's downstream refreshes, in dependency order.
    Refresh(BriefArg),
    /// Drops expired working tables and pre-images.
    Cleanup {
        /// Only this run's assets.
        run: Option<String>,
        /// Report what would be dropped; drop nothing.
        #[arg(long)]
        dry_run: bool,
        /// The ledger's schema.
        #[arg(long, default_value = "backfill")]
        ledger_schema: String,
    },
    /// The change note (Markdown, or JSON with --output json).
    Note(BriefArg),
    /// The definition-of-done checklist.
    Done(BriefArg),
    /// Creates a sample DuckDB database (--db, a new file) to try the
    /// runbook on: the refunds fix of `examples/refunds_fix.yaml`.
    Demo {
        /// Orders to generate over a year.
        #[arg(long, default_value_t = 1_200_000)]
        orders: u64,
    },
}

/// Which run to steer.
#[derive(Debug, Args)]
pub struct SteerArgs {
    /// The run.
    pub run: String,
    /// The ledger's schema.
    #[arg(long, default_value = "backfill")]
    pub ledger_schema: String,
}
