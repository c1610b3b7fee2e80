//! Conformance cases that run a backfill through the [`Runner`] with the
//! env's own ledger and default options, the way a user's program does.

use std::time::Duration;

use backfill_core::ledger::{AssetKind, BatchState, Ledger, Liveness, RunRecord, RunStatus};
use backfill_core::plan::BatchId;
use backfill_core::runner::{Backfill, RunOptions, Runner};
use backfill_core::warehouse::Warehouse;
use backfill_core::StrategySpec;
use backfill_core::{
    Brief, CheckSpec, Error, Expectation, Predicate, RunId, Scope, Source, TableRef,
};

use super::{
    brief, checksum, daily_plan, expected_replace, ident, original_rows, seed_table, source_rows,
    Env, Pattern,
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
    // Read by each batch (not staged once), so that the batch's guard
    // is what refuses it.
    let per_batch = Runner::new(env.warehouse.clone(), ledger.clone()).with_options(RunOptions {
        stage_queries: false,
        ..RunOptions::default()
    });
    let err = per_batch.run(&leaky).await.expect_err("out of bounds");
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err:?}");
    assert_eq!(checksum(&env, &facts).await, original);
    let first = &ledger.batches(&leaky.run_id).await.expect("batches")[0];
    assert_eq!(first.state, BatchState::Failed);
}

/// A merge by key from a source staged once for the run: the run records
/// the staged snapshot, never deletes (row 13 stays, row 1000 arrives),
/// and rolls back to the exact prior table.
pub async fn runner_stages_the_source_once_and_merges(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
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

/// The job of the crash cases: the five days of `facts`, replaced from
/// `facts_fix`, under run id `run`.
pub fn revived_job(run: &str) -> Backfill {
    let plan = crate::conformance::daily_plan(TableRef::new(crate::conformance::ident("facts")));
    Backfill::new(
        RunId::new(run).expect("run id"),
        crate::conformance::brief(plan.scope.clone(), StrategySpec::PartitionOverwrite),
        plan,
        Source::Table(TableRef::new(crate::conformance::ident("facts_fix"))),
    )
}

/// What a process that dies inside a batch leaves in `ledger`: the run
/// recorded, the target locked, and its first batch `running` under an
/// hour-long lease. Returns the batch.
pub async fn die_inside_first_batch(ledger: &dyn Ledger, job: &Backfill) -> BatchId {
    ledger
        .lock_target(job.target(), &job.run_id)
        .await
        .expect("lock");
    let record = RunRecord {
        run_id: job.run_id.clone(),
        target: job.target().clone(),
        fingerprint: job.fingerprint(),
        ..crate::conformance::ledger_record(job.run_id.as_str(), "")
    };
    ledger
        .begin_run(&record, &job.plan.batches)
        .await
        .expect("begin");
    let claim = ledger
        .claim(&job.run_id, "doomed", Duration::from_secs(3600), None)
        .await
        .expect("claim")
        .expect("a batch to claim");
    claim.batch.id
}

/// After the holder of `batch` died, a plain run on `runner` takes the
/// batch back at once (its lease has most of an hour to go), writes the
/// table `expected` holds, and logs why.
pub async fn resume_takes_back_dead_batch(
    runner: &Runner,
    warehouse: &dyn Warehouse,
    job: &Backfill,
    batch: &BatchId,
    expected: &TableRef,
) {
    let ledger = runner.ledger();
    let held = ledger
        .batches(&job.run_id)
        .await
        .expect("batches")
        .into_iter()
        .find(|b| &b.batch.id == batch)
        .expect("the batch");
    assert_eq!(held.state, BatchState::Running);
    let lease = held.lease.expect("a lease");
    assert!(lease.expires_at > ledger.now(), "the lease still runs");
    assert_eq!(
        ledger.liveness(&lease).await.expect("liveness"),
        Liveness::Dead
    );
    let report = runner.run(job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(report.batches_this_run, job.plan.batches.len());
    assert!(report.gaps.is_empty() && report.held.is_empty(), "{report}");
    let log = ledger.transitions(&job.run_id).await.expect("log");
    assert!(
        log.iter()
            .any(|t| t.batch_id.as_ref() == Some(batch) && t.reason.contains("is dead")),
        "{log:#?}"
    );
    let target = job.target();
    assert_eq!(
        warehouse
            .checksum(target, &Predicate::All)
            .await
            .expect("checksum"),
        warehouse
            .checksum(expected, &Predicate::All)
            .await
            .expect("checksum")
    );
}

/// A source that binds `{start}` and `{end}` under a plan whose batches
/// have no bounds (a partition list) would bind NULL and empty every
/// slice: the run is refused before any write, naming the placeholders,
/// and the table is unchanged.
pub async fn bounded_source_without_bounds_is_refused(env: Env) {
    let target = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", &source_rows()).await;
    let before = checksum(&env, &target).await;
    let days: Vec<backfill_core::Value> = daily_plan(target.clone())
        .batches
        .iter()
        .filter_map(|b| b.start.clone())
        .collect();
    let scope = Scope::new(
        target.clone(),
        "day",
        backfill_core::Bounds::Partitions { values: days },
        "UTC",
    )
    .expect("scope");
    let plan = backfill_core::Plan::build(scope.clone(), backfill_core::Planner::Partitions)
        .expect("plan");
    let job = Backfill::new(
        RunId::new("unbounded").expect("run id"),
        brief(scope, StrategySpec::PartitionOverwrite),
        plan,
        (env.bounded_source)(&fix, &ident("day"), false),
    );
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::InvalidPlan(m) if m.contains("{start}")),
        "{err}"
    );
    assert_eq!(checksum(&env, &target).await, before);
}

/// A plan larger than the runner allows ([`RunOptions::max_batches`]) is
/// refused before the target is taken or anything is recorded, saying how
/// large it is and how to raise the limit; within the limit the same plan
/// runs. A plan of thousands of batches is recorded whole, in order.
pub async fn plan_size_is_bounded_and_recorded_whole(env: Env) {
    let case = super::setup(env, super::Pattern::Overwrite, "bounded").await;
    let small =
        Runner::new(case.env.warehouse.clone(), case.env.ledger.clone()).with_options(RunOptions {
            max_batches: 4,
            ..super::fast_options()
        });
    let err = small.run(&case.job).await.expect_err("too large");
    assert!(
        matches!(err, Error::PlanTooLarge { batches: 5, max: 4 }),
        "{err:?}"
    );
    assert!(
        case.env.ledger.run(&case.job.run_id).await.is_err(),
        "nothing recorded"
    );
    case.runner()
        .run(&case.job)
        .await
        .expect("within the default limit, and the target was never taken");

    // Thousands of batches, recorded in bulk, read back whole and in order.
    let scope = Scope::new(
        case.env.table("keyed"),
        "id",
        backfill_core::Bounds::Keys {
            start: 0,
            end: 2_345,
        },
        "UTC",
    )
    .expect("scope");
    let plan = backfill_core::Plan::build(scope, backfill_core::Planner::KeyRanges { width: 1 })
        .expect("plan");
    case.env
        .ledger
        .begin_run(&super::ledger_record("bulk", "fp"), &plan.batches)
        .await
        .expect("recorded");
    let stored = case
        .env
        .ledger
        .batches(&RunId::new("bulk").expect("run id"))
        .await
        .expect("batches");
    assert_eq!(stored.len(), plan.batches.len());
    assert!(stored
        .iter()
        .zip(&plan.batches)
        .all(|(s, b)| s.batch == *b && s.state == BatchState::Pending));
}

/// Two versions of the corrected logic by period, with the boundary
/// inside a week: the plan cuts the week there, each part reads its own
/// period's source, the ledger keeps which batches each rule wrote, and
/// rows outside the scope do not change. Periods with a gap, an overlap
/// or a reach outside the scope are refused before anything is recorded.
pub async fn rule_periods_split_batches(env: Env) {
    use backfill_core::jiff::civil::DateTime;
    use backfill_core::rules::{Rule, RulePeriod, RULES_DOCUMENT};
    use backfill_core::{Grain, Plan, Planner, Value};
    let target = seed_table(&env, "facts", &original_rows()).await;
    let v1 = seed_table(&env, "facts_v1", &source_rows()).await;
    let v2_rows: Vec<Vec<Value>> = source_rows()
        .into_iter()
        .map(|mut r| {
            r[3] = Value::Text("rule v2".into());
            r
        })
        .collect();
    let v2 = seed_table(&env, "facts_v2", &v2_rows).await;
    let outside = |p: &Predicate| Predicate::Not(Box::new(p.clone()));
    let daily = daily_plan(target.clone());
    let scope_pred = daily.scope.predicate().expect("scope");
    let before_outside = env
        .warehouse
        .checksum(&target, &outside(&scope_pred))
        .await
        .expect("checksum");
    let plan =
        Plan::build(daily.scope.clone(), Planner::Windows { grain: Grain::Week }).expect("plan");
    assert_eq!(plan.batches.len(), 1, "the scope is one week");
    let at = |d: backfill_core::jiff::civil::Date| -> DateTime { d.at(0, 0, 0, 0) };
    let (s, e) = (at(super::day(2)), at(super::day(7)));
    let cut = at(super::day(4));
    let rule = |name: &str, from, until, t: &TableRef| Rule {
        name: name.into(),
        reason: format!("the policy of {name}"),
        from,
        until,
        source: Source::Table(t.clone()),
    };
    let job = || {
        Backfill::new(
            RunId::new("ruled").expect("run id"),
            brief(plan.scope.clone(), StrategySpec::PartitionOverwrite),
            plan.clone(),
            Source::Table(v1.clone()),
        )
    };
    for (bad, why) in [
        (
            vec![rule("a", s, cut, &v1), rule("b", at(super::day(5)), e, &v2)],
            "gap",
        ),
        (
            vec![rule("a", s, at(super::day(5)), &v1), rule("b", cut, e, &v2)],
            "overlap",
        ),
        (
            vec![
                rule("a", s, cut, &v1),
                rule("b", cut, at(super::day(9)), &v2),
            ],
            "end",
        ),
    ] {
        let err = job().with_rules(bad).expect_err(why);
        assert!(
            matches!(&err, Error::InvalidPlan(m) if m.contains(why)),
            "{why}: {err}"
        );
    }
    let job = job()
        .with_rules(vec![
            rule("rule v1", s, cut, &v1),
            rule("rule v2", cut, e, &v2),
        ])
        .expect("rules cover the scope");
    let ids: Vec<&str> = job.plan.batches.iter().map(|b| b.id.0.as_str()).collect();
    assert_eq!(ids.len(), 2, "the week is cut at the boundary: {ids:?}");
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let report = runner.run(&job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed);
    for (d, note) in [(2, "fixed"), (3, "fixed"), (4, "rule v2"), (6, "rule v2")] {
        let day = Predicate::In {
            column: ident("day"),
            values: vec![Value::Date(super::day(d))],
        };
        let diff = env
            .warehouse
            .count(
                &target,
                &day.and(Predicate::In {
                    column: ident("note"),
                    values: vec![Value::Text(note.into())],
                }),
            )
            .await
            .expect("count");
        assert!(diff > 0, "day {d} holds rows of {note}");
    }
    assert_eq!(
        env.warehouse
            .checksum(&target, &outside(&scope_pred))
            .await
            .expect("checksum"),
        before_outside,
        "rows outside the scope are untouched"
    );
    let doc = env
        .ledger
        .document(&job.run_id, RULES_DOCUMENT)
        .await
        .expect("read")
        .expect("the rules are recorded");
    let periods: Vec<RulePeriod> = serde_json::from_value(doc).expect("periods");
    assert_eq!(periods.len(), 2);
    let note = runner.change_note(&job).await.expect("note");
    assert_eq!(
        note.rules, periods,
        "the change note says which rule wrote what"
    );
    assert!(
        note.markdown().contains("rule v2 (1 batches)"),
        "{}",
        note.markdown()
    );
    assert_eq!(periods[0].batches, vec![job.plan.batches[0].id.clone()]);
    assert_eq!(periods[1].batches, vec![job.plan.batches[1].id.clone()]);
}

/// What a run depends on drifts between its calls: a dependent view
/// redefined, rows added to the source, the source's column retyped. Each
/// is found before the next batch and pauses the run (the policy says
/// so), naming the relation and the change, with nothing written and no
/// batch claimed after the pause; the operator accepts the drift (who and
/// why are kept, and the change note lists them) and the run finishes.
pub async fn drift_pauses_until_accepted(env: Env) {
    if !env.gate(
        env.capabilities.finds_dependents,
        "finds_dependents",
        "a redefined dependent view pausing the run",
    ) {
        return;
    }
    use backfill_core::drift::{Act, Kind, ACCEPTED};
    use backfill_core::{Column, ColumnType};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let target = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", &source_rows()).await;
    let src = env.table("facts_src");
    env.seed.create_view(&src, &fix).await.expect("source view");
    let view = env.table("facts_view");
    env.seed
        .create_view(&view, &target)
        .await
        .expect("dependent view");
    let plan = daily_plan(target.clone());
    let mut b = brief(plan.scope.clone(), StrategySpec::PartitionOverwrite);
    b.validation.drift.definitions = Some(Act::Pause);
    let job = Backfill::new(
        RunId::new("drifted").expect("run id"),
        b,
        plan,
        Source::Table(src.clone()),
    );
    // The first call stops after one batch.
    let armed = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let control = runner.control();
    let stop = armed.clone();
    let runner = runner.on_event(move |e| {
        if matches!(e, backfill_core::Event::BatchFinished { .. })
            && stop.swap(false, Ordering::SeqCst)
        {
            control.cancel();
        }
    });
    let first = runner.run(&job).await.expect("first call");
    assert_eq!(first.batches_done, 1);

    // A dependent redefined.
    env.seed.create_view(&view, &fix).await.expect("redefined");
    let held = checksum(&env, &target).await;
    let paused = runner
        .run(&job)
        .await
        .expect("a drift is an outcome, not an error");
    assert_eq!(paused.status, RunStatus::Paused, "{paused}");
    assert_eq!(paused.batches_this_run, 0);
    let d = paused
        .drift
        .iter()
        .find(|d| d.kind == Kind::Definition)
        .unwrap_or_else(|| panic!("the view's change: {:?}", paused.drift));
    assert!(d.relation.contains("facts_view"), "{d}");
    assert_eq!(d.act, Act::Pause);
    assert_eq!(checksum(&env, &target).await, held, "nothing written");
    let run = env.ledger.run(&job.run_id).await.expect("run");
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("paused on drift") && n.contains("facts_view")),
        "{:?}",
        run.notes
    );
    runner
        .accept_drift(&job, "ada", "the dashboard view was moved on purpose")
        .await
        .expect("accepted");

    // The source's column retyped: a typed error before any write.
    let mut schema = super::facts_schema();
    schema.columns[2] = Column::new(ident("amount"), ColumnType::Text);
    let retyped = env.table("facts_text");
    env.seed
        .create_table(&retyped, &schema)
        .await
        .expect("table");
    env.seed.create_view(&src, &retyped).await.expect("retyped");
    let err = runner.run(&job).await.expect_err("retyped");
    assert!(matches!(err, Error::ColumnTypeMismatch { .. }), "{err:?}");
    // A column added to the source: drift, and the run pauses.
    let mut schema = super::facts_schema();
    schema
        .columns
        .push(Column::new(ident("extra"), ColumnType::Int));
    let wider = env.table("facts_wider");
    env.seed.create_table(&wider, &schema).await.expect("table");
    env.seed.create_view(&src, &wider).await.expect("wider");
    let paused = runner.run(&job).await.expect("paused again");
    assert_eq!(paused.status, RunStatus::Paused);
    assert!(
        paused
            .drift
            .iter()
            .any(|d| d.kind == Kind::Columns && d.now.contains("extra int")),
        "{:?}",
        paused.drift
    );
    env.seed.create_view(&src, &fix).await.expect("back");
    env.seed
        .insert_rows(&fix, &[super::row(2000, super::day(5), 7, "late")])
        .await
        .expect("a late row");
    let paused = runner.run(&job).await.expect("paused again");
    assert_eq!(paused.status, RunStatus::Paused);
    let rows = paused
        .drift
        .iter()
        .find(|d| d.kind == Kind::Rows)
        .unwrap_or_else(|| panic!("the late row: {:?}", paused.drift));
    assert_eq!(
        rows.now.parse::<u64>().unwrap(),
        rows.before.parse::<u64>().unwrap() + 1
    );
    assert_eq!(checksum(&env, &target).await, held, "still nothing written");
    let log = env.ledger.transitions(&job.run_id).await.expect("log");
    let last_pause = log
        .iter()
        .rposition(|t| t.to == "steering:pause")
        .expect("paused in the log");
    assert!(
        !log[last_pause..]
            .iter()
            .any(|t| t.from == "pending" && t.to == "running"),
        "no batch claimed after the pause"
    );
    runner
        .accept_drift(&job, "ada", "late rows are part of the fix")
        .await
        .expect("accepted");
    let done = runner.run(&job).await.expect("finishes");
    assert_eq!(done.status, RunStatus::Completed, "{done}");
    let accepted = env
        .ledger
        .document(&job.run_id, ACCEPTED)
        .await
        .expect("read")
        .expect("kept");
    let accepted: Vec<backfill_core::drift::Acceptance> =
        serde_json::from_value(accepted).expect("acceptances");
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[1].why, "late rows are part of the fix");
    let note = runner.change_note(&job).await.expect("note");
    assert!(
        note.markdown().contains("late rows are part of the fix"),
        "{}",
        note.markdown()
    );
}
