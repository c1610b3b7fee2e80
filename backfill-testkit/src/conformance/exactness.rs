//! Conformance cases for exactness: configurations in which a backfill
//! could lose data, or touch more than its scope, are refused before any
//! write, and nothing of an unfinished run is thrown away.

use backfill_core::cleanup::{CleanupOptions, Kept};
use backfill_core::jiff::SignedDuration;
use backfill_core::ledger::{AssetKind, RunStatus};
use backfill_core::runner::Backfill;
use backfill_core::warehouse::Warehouse;
use backfill_core::{Error, Plan, RunId};

use super::{approve_and_cut_over, brief, checksum, ident, setup, Env, Pattern};
use crate::faults::FaultPoint;

/// A scope that lists only some of the target's columns, under a pattern
/// that replaces whole rows of a slice (overwrite, staging, parallel
/// version), would write the other columns as NULL and keep no copy of
/// them: it is refused before any write, naming the columns left out, and
/// the table is unchanged.
pub async fn partial_columns_refused(env: Env, pattern: Pattern) {
    let case = setup(env, pattern, "partial").await;
    let before = checksum(&case.env, &case.target).await;
    let mut scope = case.job.plan.scope.clone();
    scope.columns = vec![ident("id"), ident("day"), ident("amount")];
    let plan = Plan::build(scope.clone(), case.job.plan.planner.clone()).expect("plan");
    let job = Backfill::new(
        RunId::new("partial").expect("run id"),
        brief(scope, case.job.brief.strategy.clone()),
        plan,
        case.job.source.clone(),
    );
    let runner = case.runner();
    let err = runner.run(&job).await.expect_err("refused");
    assert!(err.to_string().contains("note"), "names the column: {err}");
    assert_eq!(checksum(&case.env, &case.target).await, before);
    assert!(
        case.env.ledger.run(&job.run_id).await.is_err(),
        "nothing recorded for a refused run"
    );
}

/// The working tables of a run that is not finished (failed here, or
/// written and awaiting its cut-over) are kept by cleanup however old they
/// are; and a run whose working table went missing is refused on resume
/// with a typed error, rather than recreating an empty one and going on.
pub async fn cleanup_keeps_unfinished_runs(env: Env, pattern: Pattern) {
    let case = setup(env, pattern, "unfinished").await;
    let (runner, faults) = case.faulty_runner();
    faults.fail_nth(FaultPoint::BeforeWrite, 3);
    runner
        .run(&case.job)
        .await
        .expect_err("the third batch fails");
    let ledger = case.env.ledger.clone();
    let run = ledger.run(&case.job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let later = ledger
        .now()
        .checked_add(SignedDuration::from_hours(24 * 400))
        .expect("time");
    let options = CleanupOptions {
        now: Some(later),
        ..CleanupOptions::default()
    };
    let swept = runner.cleanup(&options).await.expect("cleanup");
    assert!(
        swept.dropped.is_empty() && swept.missing.is_empty(),
        "a failed run keeps its tables: {swept}"
    );
    assert!(
        swept
            .kept
            .iter()
            .any(|(_, why)| *why == Kept::RunUnfinished),
        "{swept}"
    );
    let w: &dyn Warehouse = case.env.warehouse.as_ref();
    let assets = ledger.assets(Some(&case.job.run_id)).await.expect("assets");
    let working = assets
        .iter()
        .find(|a| a.kind != AssetKind::StagedSource)
        .expect("a working table")
        .clone();
    assert!(w
        .describe(&working.table)
        .await
        .expect("describe")
        .is_some());

    // A working table that disappears (dropped by hand) is not recreated
    // silently on resume.
    w.drop_table(&working.table).await.expect("drop");
    let err = case
        .runner()
        .run(&case.job)
        .await
        .expect_err("refused on resume");
    assert!(
        matches!(&err, Error::AssetMissing { table, .. } if table.contains(working.table.name.as_str())),
        "names the missing table: {err}"
    );
    assert!(w
        .describe(&working.table)
        .await
        .expect("describe")
        .is_none());
}

/// A run written in full and awaiting its cut-over keeps its stage or
/// version through a cleanup however late.
pub async fn cleanup_keeps_runs_awaiting_cutover(env: Env, pattern: Pattern) {
    let case = setup(env, pattern, "awaiting").await;
    let runner = case.runner();
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    let later = case
        .env
        .ledger
        .now()
        .checked_add(SignedDuration::from_hours(24 * 400))
        .expect("time");
    let swept = runner
        .cleanup(&CleanupOptions {
            now: Some(later),
            ..CleanupOptions::default()
        })
        .await
        .expect("cleanup");
    assert!(
        swept.dropped.is_empty() && swept.missing.is_empty(),
        "a run awaiting cut-over keeps its tables: {swept}"
    );
    assert!(
        swept
            .kept
            .iter()
            .any(|(_, why)| *why == Kept::RunUnfinished),
        "{swept}"
    );
    approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cut-over still works");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}
