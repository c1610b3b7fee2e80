//! The subcommands.

mod after;
mod before;
mod run;
mod watch;

use backfill_core::ledger::Steering;

use crate::args::Command;
use crate::output::Report;
use crate::{Ctx, Failure};

/// Runs one subcommand.
pub async fn dispatch(ctx: &Ctx, command: Command) -> Result<Report, Failure> {
    use after::Step;
    match command {
        Command::Preflight(b) => before::preflight(ctx, &b.brief).await,
        Command::Plan(b) => before::plan(ctx, &b.brief).await,
        Command::Announce(b) => before::announce(ctx, &b.brief).await,
        Command::Slice { brief, batches } => before::slice(ctx, &brief.brief, batches).await,
        Command::Run {
            brief,
            concurrency,
            until,
            dry_run,
        } => {
            run::run(
                ctx,
                run::RunArgs {
                    brief: brief.brief,
                    concurrency,
                    until,
                    dry_run,
                },
            )
            .await
        }
        Command::Status {
            run,
            brief,
            ledger_schema,
        } => {
            let (run, schema) = watch::pick_run(run, brief.as_deref())?;
            watch::status(ctx, &run, schema.as_deref().unwrap_or(&ledger_schema)).await
        }
        Command::Pause(a) => watch::steer(ctx, &a.run, &a.ledger_schema, Steering::Pause).await,
        Command::Resume(a) => watch::steer(ctx, &a.run, &a.ledger_schema, Steering::Run).await,
        Command::Cancel(a) => watch::steer(ctx, &a.run, &a.ledger_schema, Steering::Cancel).await,
        Command::AcceptDrift { brief, why } => after::accept_drift(ctx, &brief.brief, &why).await,
        Command::Validate(b) => after::step(ctx, &b.brief, Step::Validate).await,
        Command::Approve {
            brief,
            reviewer,
            note,
        } => after::approve(ctx, &brief.brief, &reviewer, &note).await,
        Command::Cutover(b) => after::step(ctx, &b.brief, Step::Cutover).await,
        Command::Rollback(b) => after::step(ctx, &b.brief, Step::Rollback).await,
        Command::Refresh(b) => after::step(ctx, &b.brief, Step::Refresh).await,
        Command::Cleanup {
            run,
            dry_run,
            ledger_schema,
        } => after::cleanup(ctx, run, dry_run, &ledger_schema).await,
        Command::Note(b) => after::step(ctx, &b.brief, Step::Note).await,
        Command::Done(b) => after::step(ctx, &b.brief, Step::Done).await,
        Command::Demo { orders } => demo(ctx, orders).await,
    }
}

/// `demo`: a new DuckDB file with the refunds dataset.
async fn demo(ctx: &Ctx, orders: u64) -> Result<Report, Failure> {
    let crate::db::Db::DuckDb(path) = ctx.db()? else {
        return Err(Failure::Usage(
            "the demo creates a DuckDB file: pass --db with a new file's path".into(),
        ));
    };
    crate::demo::create_refunds(path, orders).await?;
    Ok(Report::new(
        crate::exit::Exit::Success,
        serde_json::json!({"db": path, "orders": orders}),
        format!(
            "created {} with about {orders} orders (shop.orders, shop.refunds) and \
             analytics.revenue, whose 2026 H1 net revenue ignores refunds; try \
             `backfill preflight -f examples/refunds_fix.yaml --db {}`\n",
            path.display(),
            path.display()
        ),
    ))
}
