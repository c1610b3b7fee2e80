//! Commit groups: several batches in one transaction, each still its own
//! unit in the ledger, the events, the checks and the rollback.
//!
//! Every case runs with groups of a fixed size (one batch, or seven, more
//! than the plan holds) and with the adaptive default, on every engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backfill_core::ledger::{BatchState, RunStatus};
use backfill_core::runner::{Event, RunOptions, Runner};
use backfill_core::warehouse::Warehouse;
use backfill_core::{Error, Source, Value};

use super::{checksum, fast_options, original_rows, seed_table, setup, source_rows, Env, Pattern};

/// How a case groups its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Every group holds this many batches (as many as are left).
    Fixed(usize),
    /// Sized to the default target time, from one batch up.
    Adaptive,
}

impl Grouping {
    /// The runner options of this grouping. The source is staged, so
    /// that an engine may write a group's overwrites as one (the other
    /// cases run groups of unstaged sources, batch after batch in the
    /// group's transaction).
    pub fn options(self) -> RunOptions {
        let staged = RunOptions {
            stage_source: true,
            ..fast_options()
        };
        match self {
            Grouping::Fixed(n) => RunOptions {
                max_group: n,
                group_target: Duration::ZERO,
                ..staged
            },
            Grouping::Adaptive => staged,
        }
    }
}

/// A full run in groups gives the expected table; every batch is its own
/// record, event and pre-image (rollback restores the exact prior state);
/// with groups of more than one, the batches of a group are all claimed
/// before the first is written.
pub async fn groups_write_every_batch(env: Env, grouping: Grouping) {
    let case = setup(env, Pattern::Overwrite, "groups").await;
    let original = checksum(&case.env, &case.target).await;
    let finished = Arc::new(Mutex::new(Vec::new()));
    let seen = finished.clone();
    let runner = Runner::new(case.env.warehouse.clone(), case.env.ledger.clone())
        .with_options(grouping.options())
        .on_event(move |e| {
            if let Event::BatchFinished { batch, .. } = e {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(batch.clone());
            }
        });
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(
        checksum(&case.env, &case.target).await,
        case.expected().await
    );
    let plan: Vec<_> = case.job.plan.batches.iter().map(|b| b.id.clone()).collect();
    let reported = finished.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(reported, plan, "one event per batch, in plan order");
    let records = case
        .env
        .ledger
        .batches(&case.job.run_id)
        .await
        .expect("batches");
    assert!(records.iter().all(|b| b.state.is_done()), "{records:?}");
    assert!(records.iter().all(|b| b.attempts == 1), "{records:?}");
    assert_eq!(
        records.iter().map(|b| b.rows_written).sum::<u64>(),
        report.rows_written
    );

    // The log says how the batches were grouped: in a group of more than
    // one, every claim precedes the first write.
    let log = case
        .env
        .ledger
        .transitions(&case.job.run_id)
        .await
        .expect("log");
    let moves: Vec<&str> = log
        .iter()
        .filter(|t| t.batch_id.is_some())
        .map(|t| t.to.as_str())
        .filter(|to| *to == "running" || *to == "written")
        .collect();
    match grouping {
        Grouping::Fixed(n) if n == 1 || case.env.warehouse.max_group() == 1 => assert_eq!(
            moves,
            ["running", "written"].repeat(plan.len()),
            "one batch a transaction"
        ),
        Grouping::Fixed(_) => {
            let mut want = vec!["running"; plan.len()];
            want.extend(vec!["written"; plan.len()]);
            assert_eq!(moves, want, "all five batches in one group");
        }
        Grouping::Adaptive => {
            let first_write = moves.iter().position(|m| *m == "written");
            assert_eq!(first_write, Some(1), "the first group holds one batch");
        }
    }

    runner.rollback(&case.job).await.expect("rollback");
    assert_eq!(
        checksum(&case.env, &case.target).await,
        original,
        "exact prior state"
    );
}

/// A batch whose guard fails inside a group stops the run: the batches
/// before it are written (each on its own), it is failed with nothing of
/// it written, the batches after it are handed back unclaimed, and a
/// rollback restores the exact prior state.
pub async fn group_stops_at_a_failed_guard(env: Env, grouping: Grouping) {
    let target = seed_table(&env, "facts", &original_rows()).await;
    let original = checksum(&env, &target).await;
    let lost = Value::Date(super::day(4));
    let rows: Vec<_> = source_rows().into_iter().filter(|r| r[1] != lost).collect();
    let fix = seed_table(&env, "facts_fix", &rows).await;
    let job = super::job_on(&env, Pattern::Overwrite, "group_guard", Source::Table(fix));
    let at = job
        .plan
        .batches
        .iter()
        .position(|b| b.start.as_ref() == Some(&lost))
        .expect("the day is in scope");
    let day = job.plan.batches[at].clone();
    let held = env
        .warehouse
        .count(&target, &day.predicate)
        .await
        .expect("count");
    let runner =
        Runner::new(env.warehouse.clone(), env.ledger.clone()).with_options(grouping.options());
    let err = runner.run(&job).await.expect_err("stopped at the guard");
    assert!(
        matches!(&err, Error::ValidationFailed { check, .. } if check == "emptiness"),
        "{err}"
    );
    assert_eq!(
        env.warehouse
            .count(&target, &day.predicate)
            .await
            .expect("count"),
        held,
        "nothing of the failed batch was written"
    );
    let records = env.ledger.batches(&job.run_id).await.expect("batches");
    for (i, b) in records.iter().enumerate() {
        match i.cmp(&at) {
            std::cmp::Ordering::Less => assert!(b.state.is_done(), "{b:?}"),
            std::cmp::Ordering::Equal => assert_eq!(b.state, BatchState::Failed, "{b:?}"),
            std::cmp::Ordering::Greater => {
                assert_eq!(b.state, BatchState::Pending, "{b:?}");
                assert_eq!(
                    b.attempts, 0,
                    "a handed-back claim is not an attempt: {b:?}"
                );
            }
        }
    }
    runner.rollback(&job).await.expect("rollback");
    assert_eq!(checksum(&env, &target).await, original, "exact prior state");
}
