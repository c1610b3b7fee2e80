//! Conformance cases that run a backfill through the [`Runner`] with the
//! env's own ledger and default options, the way a user's program does.

use backfill_core::ledger::{AssetKind, BatchState, RunStatus};
use backfill_core::runner::{Backfill, RunOptions, Runner};
use backfill_core::StrategySpec;
use backfill_core::{Brief, CheckSpec, Error, Expectation, Predicate, RunId, Scope, Source};

use super::{
    brief, checksum, daily_plan, expected_replace, ident, original_rows, seed_table, source_rows,
    Env,
};

/// [`brief`] with a second blocking check: a day gains or loses at most
/// one row.
pub fn brief_with_row_count(scope: Scope, strategy: StrategySpec) -> Brief {
    let mut b = brief(scope, strategy);
    b.validation.checks.push(CheckSpec::RowCount {
        expect: Expectation::MaxChangeAbsolute(1),
        blocking: true,
    });
    b.validation.description = "Keys stay unique; a day gains or loses at most one row.".into();
    b
}

/// A daily partition overwrite from a bounded query: the run writes the
/// expected table with every batch validated and the rows accounted for
/// in the ledger, keeps pre-images, has nothing to do when run again, and
/// rolls back (twice, harmlessly) to the exact prior table; a leaky source
/// then fails its first batch with nothing written.
pub async fn runner_overwrites_daily_partitions_end_to_end(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", &source_rows()).await;
    let original = checksum(&env, &facts).await;
    let expected_t = seed_table(&env, "facts_expected", &expected_replace()).await;
    let expected = checksum(&env, &expected_t).await;
    let ledger = env.ledger.clone();

    let plan = daily_plan(facts.clone());
    let b = brief_with_row_count(plan.scope.clone(), StrategySpec::PartitionOverwrite);
    assert!(b.preflight().passed(), "{:?}", b.preflight());
    let sound = (env.bounded_source)(&fix, &ident("day"), false);
    let job =
        Backfill::new(RunId::new("daily_fix").expect("run id"), b, plan, sound).code_version("v2");
    let runner = Runner::new(env.warehouse.clone(), ledger.clone());
    let report = runner.run(&job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!((report.batches_done, report.batches_this_run), (5, 5));
    assert_eq!(report.rows_before, 20);
    assert_eq!(report.rows_written, 20);
    assert!(
        report.outcomes.iter().all(|o| !o.is_blocking_failure()),
        "{report}"
    );
    assert_eq!(checksum(&env, &facts).await, expected);
    // Batches were marked written (in the data's transactions where the
    // ledger is in the engine), then validated.
    let recs = ledger.batches(&job.run_id).await.expect("batches");
    assert!(
        recs.iter().all(|r| r.state == BatchState::Validated),
        "{recs:?}"
    );
    let run = ledger.run(&job.run_id).await.expect("run");
    assert_eq!(run.rows_affected, 20);
    assert!(report.assets.iter().any(|a| a.kind == AssetKind::PreImage));

    // Rerun: nothing to do, nothing changes.
    let again = runner.run(&job).await.expect("rerun");
    assert!(again.nothing_to_do(), "{again}");
    assert_eq!(checksum(&env, &facts).await, expected);

    // Rollback restores the exact prior table; twice is harmless.
    runner.rollback(&job).await.expect("rollback");
    assert_eq!(checksum(&env, &facts).await, original);
    let run = ledger.run(&job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::RolledBack);
    runner.rollback(&job).await.expect("rollback again");
    assert_eq!(checksum(&env, &facts).await, original);

    // A leaky source fails its first batch with nothing written.
    let plan = daily_plan(facts.clone());
    let leaky = Backfill::new(
        RunId::new("leaky").expect("run id"),
        brief_with_row_count(plan.scope.clone(), StrategySpec::PartitionOverwrite),
        plan,
        (env.bounded_source)(&fix, &ident("day"), true),
    );
    let err = runner.run(&leaky).await.expect_err("out of bounds");
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err:?}");
    assert_eq!(checksum(&env, &facts).await, original);
    let first = &ledger.batches(&leaky.run_id).await.expect("batches")[0];
    assert_eq!(first.state, BatchState::Failed);
}

/// A merge by key from a source staged once for the run: the run records
/// the staged snapshot, never deletes (row 13 stays, row 1000 arrives),
/// and rolls back to the exact prior table.
pub async fn runner_stages_the_source_once_and_merges(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", &source_rows()).await;
    let original = checksum(&env, &facts).await;
    let options = RunOptions {
        stage_source: true,
        ..RunOptions::default()
    };
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone()).with_options(options);
    let plan = daily_plan(facts.clone());
    let strategy = StrategySpec::Merge {
        keys: vec![ident("id")],
    };
    let job = Backfill::new(
        RunId::new("merge_fix").expect("run id"),
        brief_with_row_count(plan.scope.clone(), strategy),
        plan,
        Source::Table(fix),
    );
    let report = runner.run(&job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert!(report
        .assets
        .iter()
        .any(|a| a.kind == AssetKind::StagedSource));
    // Merge never deletes: id 13 stays, id 1000 arrives.
    let rows = env.warehouse.count(&facts, &Predicate::All).await;
    assert_eq!(rows.expect("count"), 41);
    runner.rollback(&job).await.expect("rollback");
    assert_eq!(checksum(&env, &facts).await, original);
}
