//! Conformance cases for each warehouse write on its own, below the
//! runner: overwrite with its guard and pre-image, merge, restore, copies,
//! swaps, views, drops, staged sources and user SQL; and the ledger mark a
//! write commits in the data's own transaction.

use std::sync::Arc;
use std::time::Duration;

use backfill_core::ask;
use backfill_core::inspect::{Aggregate, Metric, Rows};
use backfill_core::ledger::{BatchState, ManualClock, RunId, TxMark};
use backfill_core::plan::Batch;
use backfill_core::warehouse::{
    Footprint, MergeWrite, Restore, SliceWrite, BATCH_COLUMN, MARKER_COLUMN,
};
use backfill_core::{
    Column, ColumnType, Error, Ident, Predicate, Source, TableRef, TableSchema, Value,
};

use super::{
    checksum, daily_plan, day, facts_schema, ident, ledger_record, ledger_t0, original_rows, row,
    seed_table, seed_table_as, source_rows, Env, Pattern,
};

/// A write of `batch` into `table` from `source`, keeping the pre-image in
/// `snapshot` if given, with no ledger mark and no staged source.
pub fn slice_write<'a>(
    run: &'a RunId,
    batch: &'a Batch,
    table: &'a TableRef,
    source: &'a Source,
    columns: &'a [Ident],
    snapshot: Option<&'a TableRef>,
) -> SliceWrite<'a> {
    SliceWrite {
        run_id: run,
        batch,
        table,
        source,
        staged_source: false,
        columns,
        snapshot,
        mark: None,
        guards: &[],
    }
}

/// Restores `batch` of `table` from its pre-image in `snapshot`, by its
/// slice.
async fn restore_slice(
    env: &Env,
    table: &TableRef,
    snapshot: &TableRef,
    batch: &Batch,
    columns: &[Ident],
) -> Option<u64> {
    let restore = Restore {
        table,
        snapshot,
        batch,
        footprint: Footprint::Slice(&batch.predicate),
        columns,
    };
    env.warehouse
        .restore_slice(&restore)
        .await
        .expect("restore")
}

async fn count(env: &Env, t: &TableRef) -> u64 {
    env.warehouse
        .count(t, &Predicate::All)
        .await
        .expect("count")
}

/// `facts` and its corrected source `facts_fix`.
async fn facts_and_fix(env: &Env) -> (TableRef, TableRef) {
    let facts = seed_table(env, "facts", &original_rows()).await;
    let fix = seed_table(env, "facts_fix", &source_rows()).await;
    (facts, fix)
}

/// The facts schema with a nullable `id`.
fn nullable_facts() -> TableSchema {
    let mut schema = facts_schema();
    schema.columns[0].nullable = true;
    schema
}

/// An overwrite refuses a leaky bounded source with nothing written,
/// writes a sound one with its pre-image, repeats idempotently without
/// replacing the pre-image, applies the batch predicate to a table
/// source; restore puts back exactly what was there, batch by batch, and
/// leaves a never-written batch alone; unknown tables and columns, and
/// views, are refused before any write.
pub async fn overwrite_guards_snapshots_and_restores(env: Env) {
    let (facts, fix) = facts_and_fix(&env).await;
    let w = env.warehouse.as_ref();
    let original = checksum(&env, &facts).await;
    let run = RunId::new("ow").expect("run id");
    let p = daily_plan(facts.clone());
    let pre = env.table("facts_pre");
    let columns = facts_schema().names();
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .expect("snapshot table");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .expect("snapshot table again"); // idempotent
    let snap = w.describe(&pre).await.expect("describe").expect("made");
    assert_eq!(
        snap.names()[..2],
        [ident(BATCH_COLUMN), ident(MARKER_COLUMN)]
    );
    assert!(snap.columns.iter().all(|c| c.nullable));

    // A leaky bounded query is refused with nothing written.
    let leaky = (env.bounded_source)(&fix, &ident("day"), true);
    let b2 = &p.batches[2]; // day 4: gains id 1000
    let err = w
        .overwrite_slice(&slice_write(&run, b2, &facts, &leaky, &columns, Some(&pre)))
        .await
        .expect_err("out of bounds");
    assert!(matches!(err, Error::OutOfBounds { rows: 4, .. }), "{err:?}");
    assert_eq!(checksum(&env, &facts).await, original);
    assert_eq!(count(&env, &pre).await, 0);

    // A sound bounded query writes the slice and keeps its pre-image.
    let sound = (env.bounded_source)(&fix, &ident("day"), false);
    let out = w
        .overwrite_slice(&slice_write(&run, b2, &facts, &sound, &columns, Some(&pre)))
        .await
        .expect("overwrite");
    assert_eq!(
        (out.rows_before, out.rows_written, out.rows_snapshotted),
        (4, 5, 4)
    );
    assert!(!out.ledger_marked);
    // Repeating the batch gives the same table and keeps the first pre-image.
    let after = checksum(&env, &facts).await;
    let again = w
        .overwrite_slice(&slice_write(&run, b2, &facts, &sound, &columns, Some(&pre)))
        .await
        .expect("overwrite again");
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (5, 5, 0)
    );
    assert_eq!(checksum(&env, &facts).await, after);
    assert_eq!(count(&env, &pre).await, 5); // 4 rows + marker

    // An unbounded table source gets the batch predicate applied.
    let b0 = &p.batches[0]; // day 2: ids 9..12
    let tsrc = Source::Table(fix.clone());
    let out = w
        .overwrite_slice(&slice_write(&run, b0, &facts, &tsrc, &columns, Some(&pre)))
        .await
        .expect("overwrite");
    assert_eq!((out.rows_before, out.rows_written), (4, 4));

    // Restore puts back exactly what was there, batch by batch.
    let restore = |b| restore_slice(&env, &facts, &pre, b, &columns);
    assert_eq!(restore(b2).await, Some(4));
    assert_eq!(restore(b0).await, Some(4));
    assert_eq!(checksum(&env, &facts).await, original);
    // Idempotent, and a never-written batch is left alone.
    assert_eq!(restore(b2).await, Some(4));
    assert_eq!(restore(&p.batches[4]).await, None);
    assert_eq!(checksum(&env, &facts).await, original);

    // Unknown tables and columns are refused before any write.
    let nope = env.table("nope");
    let err = w
        .overwrite_slice(&slice_write(&run, b2, &nope, &sound, &columns, None))
        .await
        .expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    // A column the source has and the target lacks.
    let mut wide = facts_schema();
    wide.columns
        .push(Column::new(ident("nope"), ColumnType::Int));
    let wide_rows: Vec<Vec<Value>> = source_rows()
        .into_iter()
        .map(|mut r| {
            r.push(Value::Int(1));
            r
        })
        .collect();
    let wide = seed_table_as(&env, "facts_wide", &wide, &wide_rows).await;
    let bad_cols = vec![ident("id"), ident("nope")];
    let wide = Source::Table(wide);
    let err = w
        .overwrite_slice(&slice_write(&run, b2, &facts, &wide, &bad_cols, None))
        .await
        .expect_err("unknown column");
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err:?}");
    let missing = Source::Table(nope.clone());
    let err = w
        .overwrite_slice(&slice_write(&run, b2, &facts, &missing, &columns, None))
        .await
        .expect_err("unknown source");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    // A view is not a write target.
    let view = env.table("facts_v");
    env.seed.create_view(&view, &facts).await.expect("view");
    let err = w
        .overwrite_slice(&slice_write(&run, b2, &view, &sound, &columns, None))
        .await
        .expect_err("a view");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    assert_eq!(checksum(&env, &facts).await, original);
}

/// A source that reads the table being written sees the old slice: the
/// write reads its source before it deletes. On an engine that runs SQL,
/// a query doubling the amounts of the target doubles them.
pub async fn overwrite_reads_the_source_before_deleting(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let w = env.warehouse.as_ref();
    let run = RunId::new("self").expect("run id");
    let p = daily_plan(facts.clone());
    let b = &p.batches[0];
    let columns = facts_schema().names();
    let before = checksum(&env, &facts).await;
    let itself = Source::Table(facts.clone());
    let out = w
        .overwrite_slice(&slice_write(&run, b, &facts, &itself, &columns, None))
        .await
        .expect("overwrite from itself");
    assert_eq!((out.rows_before, out.rows_written), (4, 4));
    assert_eq!(checksum(&env, &facts).await, before);

    if !env.gate(
        env.capabilities.runs_sql,
        "runs_sql",
        "a query over the target",
    ) {
        return;
    }
    let q = |n: &str| env.quote_ident(n);
    let doubled = Source::query(format!(
        "SELECT {}, {}, {} * 2 AS {}, {} FROM {}",
        q("id"),
        q("day"),
        q("amount"),
        q("amount"),
        q("note"),
        env.quote_table(&facts)
    ));
    let out = w
        .overwrite_slice(&slice_write(&run, b, &facts, &doubled, &columns, None))
        .await
        .expect("overwrite");
    assert_eq!((out.rows_before, out.rows_written), (4, 4));
    let rows = w
        .sample_rows(&facts, &b.predicate, &[ident("id")], 10)
        .await
        .expect("sample");
    assert_eq!(rows[0], row(9, day(2), 180, "original"));
}

/// A merge refuses null and duplicate source keys with nothing written
/// (no pre-image, no key log); then it updates and inserts by key,
/// repeats idempotently, and a restore by logged keys gives the prior
/// table back. Without a pre-image the key log carries the marker.
pub async fn merge_refuses_bad_keys_then_upserts_and_restores(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    let (facts, fix) = facts_and_fix(&env).await;
    let w = env.warehouse.as_ref();
    let original = checksum(&env, &facts).await;
    let run = RunId::new("mg").expect("run id");
    let p = daily_plan(facts.clone());
    let b = &p.batches[2]; // day 4: ids 17..20
    let columns = facts_schema().names();
    let keys = vec![ident("id")];
    let pre = env.table("facts_pre");
    let log = env.table("facts_keys");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .expect("pre-image table");
    w.create_snapshot_table(&facts, &keys, &log)
        .await
        .expect("key log");
    let merge = |source, snapshot, key_log| MergeWrite {
        slice: slice_write(&run, b, &facts, source, &columns, snapshot),
        keys: &keys,
        key_log,
        scope: None,
    };

    // Null keys.
    let mut with_null = source_rows();
    with_null.push(vec![
        Value::Null,
        Value::Date(day(4)),
        Value::Int(1),
        Value::Text("null".into()),
    ]);
    let with_null = seed_table_as(&env, "with_null", &nullable_facts(), &with_null).await;
    let s = Source::Table(with_null);
    let err = w
        .merge_slice(&merge(&s, Some(&pre), Some(&log)))
        .await
        .expect_err("null keys");
    assert!(matches!(err, Error::NullKeys { rows: 1, .. }), "{err:?}");
    // Duplicate keys.
    let mut with_dup = source_rows();
    with_dup.push(row(17, day(4), 1, "dup"));
    let with_dup = seed_table_as(&env, "with_dup", &nullable_facts(), &with_dup).await;
    let s = Source::Table(with_dup);
    let err = w
        .merge_slice(&merge(&s, Some(&pre), Some(&log)))
        .await
        .expect_err("duplicate keys");
    assert!(
        matches!(err, Error::DuplicateKeys { groups: 1, ref sample, .. } if sample == &vec!["17".to_string()]),
        "{err:?}"
    );
    assert_eq!(checksum(&env, &facts).await, original);
    assert_eq!(count(&env, &pre).await, 0);
    assert_eq!(count(&env, &log).await, 0);

    // A good source: 4 keys updated, 1 inserted.
    let s = Source::Table(fix);
    let mw = merge(&s, Some(&pre), Some(&log));
    let out = w.merge_slice(&mw).await.expect("merge");
    assert_eq!(
        (out.rows_before, out.rows_written, out.rows_snapshotted),
        (4, 5, 4)
    );
    assert_eq!(count(&env, &facts).await, 41);
    let after = checksum(&env, &facts).await;
    let again = w.merge_slice(&mw).await.expect("merge again");
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (5, 5, 0)
    );
    assert_eq!(checksum(&env, &facts).await, after);
    assert_eq!(count(&env, &log).await, 5); // 5 keys, marker in the pre-image
    assert_eq!(count(&env, &pre).await, 5); // 4 rows + marker

    let restore = Restore {
        table: &facts,
        snapshot: &pre,
        batch: b,
        footprint: Footprint::Keys {
            keys: &keys,
            key_log: &log,
        },
        columns: &columns,
    };
    assert_eq!(w.restore_slice(&restore).await.expect("restore"), Some(4));
    assert_eq!(checksum(&env, &facts).await, original);
    assert_eq!(w.restore_slice(&restore).await.expect("again"), Some(4));
    assert_eq!(checksum(&env, &facts).await, original);

    // Without a pre-image the key log carries the marker.
    let log2 = env.table("facts_keys2");
    w.create_snapshot_table(&facts, &keys, &log2)
        .await
        .expect("key log");
    let out = w
        .merge_slice(&merge(&s, None, Some(&log2)))
        .await
        .expect("merge");
    assert_eq!(out.rows_snapshotted, 0);
    assert_eq!(count(&env, &log2).await, 6);
}

/// Copies keep types and NOT NULL; a swap exchanges two tables in one
/// step (a view over the target then reads the new table where views bind
/// by name, the old one where they bind by identity); views move, refuse
/// tables and cycles, and may change columns; `drop_table` drops tables
/// only; a staged source is sorted, restricted, guarded and idempotent.
pub async fn copies_swaps_views_drops_and_stages(env: Env) {
    let (facts, fix) = facts_and_fix(&env).await;
    let w = env.warehouse.as_ref();
    let original = checksum(&env, &facts).await;

    // create_copy keeps types and NOT NULL, with or without rows.
    let stage = env.table("facts_stage");
    w.create_copy(&facts, &stage, true).await.expect("copy");
    assert_eq!(
        w.describe(&stage).await.expect("describe"),
        Some(facts_schema())
    );
    assert_eq!(checksum(&env, &stage).await, original);
    w.create_copy(&fix, &stage, true).await.expect("exists"); // nothing happens
    assert_eq!(checksum(&env, &stage).await, original);
    let empty = env.table("facts_empty");
    w.create_copy(&facts, &empty, false).await.expect("copy");
    assert_eq!(count(&env, &empty).await, 0);
    let nope = env.table("nope");
    let err = w
        .create_copy(&nope, &env.table("x"), true)
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    let view = env.table("facts_v");
    env.seed.create_view(&view, &facts).await.expect("view");
    // swap: a view reading the target follows the name, or the table.
    if env.writes(Pattern::Staging) {
        let next = seed_table(&env, "facts_next", &original_rows()[..20]).await;
        let staged = checksum(&env, &next).await;
        let old = env.table("facts_old");
        w.swap(&facts, &next, &old).await.expect("swap");
        assert_eq!(checksum(&env, &facts).await, staged);
        assert_eq!(checksum(&env, &old).await, original);
        let seen = checksum(&env, &view).await;
        if env.capabilities.views_bind_by_name {
            assert_eq!(
                seen, staged,
                "views_bind_by_name: the view reads the new table"
            );
        } else {
            assert_eq!(
                seen, original,
                "views bind by identity: the view reads the old table"
            );
        }
        assert_eq!(w.describe(&next).await.expect("describe"), None);
        // keep_as must not exist; the replacement must.
        let err = w.swap(&facts, &fix, &old).await.expect_err("kept exists");
        assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
        let err = w
            .swap(&facts, &nope, &env.table("facts_old2"))
            .await
            .expect_err("unknown");
        assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
        // And back.
        w.swap(&facts, &old, &next).await.expect("swap back");
        assert_eq!(checksum(&env, &facts).await, original);
    }

    // point_view moves a view; a table is not a view; no cycles.
    let fixed = checksum(&env, &fix).await;
    w.point_view(&view, &fix).await.expect("point");
    assert_eq!(checksum(&env, &view).await, fixed);
    let err = w.point_view(&facts, &fix).await.expect_err("a table");
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    let err = w.point_view(&view, &nope).await.expect_err("unknown");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let view2 = env.table("facts_v2");
    if env.gate(
        env.capabilities.views_of_views,
        "views_of_views",
        "a view of a view, and then a cycle refused",
    ) {
        w.point_view(&view2, &view).await.expect("a view of a view");
        let err = w.point_view(&view, &view2).await.expect_err("a cycle");
        assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    } else {
        let err = w.point_view(&view2, &view).await.expect_err("a view");
        assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    }
    assert_eq!(checksum(&env, &view).await, fixed);
    // A view whose columns change is replaced all the same.
    let narrow_schema = TableSchema {
        columns: vec![
            Column::new(ident("id"), ColumnType::Int).not_null(),
            Column::new(ident("note"), ColumnType::Text),
        ],
    };
    let narrow_rows: Vec<Vec<Value>> = original_rows()
        .into_iter()
        .map(|r| vec![r[0].clone(), r[3].clone()])
        .collect();
    let narrow = seed_table_as(&env, "narrow", &narrow_schema, &narrow_rows).await;
    let view3 = env.table("facts_v3");
    w.point_view(&view3, &facts).await.expect("point");
    w.point_view(&view3, &narrow).await.expect("narrower");
    let v3 = w.describe(&view3).await.expect("describe").expect("a view");
    assert_eq!(v3.names(), vec![ident("id"), ident("note")]);
    w.point_view(&view3, &facts).await.expect("wider again");
    assert_eq!(checksum(&env, &view3).await, original);

    // drop_table drops tables only.
    assert!(w.drop_table(&empty).await.expect("drop"));
    assert!(!w.drop_table(&empty).await.expect("drop again"));
    assert!(!w.drop_table(&view3).await.expect("not a table"));
    assert!(w.describe(&view3).await.expect("describe").is_some());

    // stage_source: sorted, restricted, guarded, idempotent.
    let p = daily_plan(facts.clone());
    let pred = p.scope.predicate().expect("scope predicate");
    let (lo, hi) = (Value::Date(day(2)), Value::Date(day(7)));
    let bounds = (Some(&lo), Some(&hi));
    let by_day = ident("day");
    let into = env.table("facts_src");
    let stage_source = |source, into| w.stage_source(source, &pred, bounds, &by_day, into);
    let (from_fix, from_facts) = (Source::Table(fix.clone()), Source::Table(facts.clone()));
    let n = stage_source(&from_fix, &into).await.expect("stage");
    assert_eq!(n, 20);
    let first = w
        .sample_rows(&into, &Predicate::All, &[], 1)
        .await
        .expect("sample");
    assert_eq!(first[0][1], Value::Date(day(2)));
    let n = stage_source(&from_facts, &into).await.expect("exists");
    assert_eq!(n, 20, "exists: nothing happens");
    let into2 = env.table("facts_src2");
    let leaky = (env.bounded_source)(&fix, &by_day, true);
    let err = stage_source(&leaky, &into2).await.expect_err("leaky");
    assert!(matches!(err, Error::OutOfBounds { rows: 4, .. }), "{err:?}");
    assert_eq!(
        w.describe(&into2).await.expect("describe"),
        None,
        "no table left behind"
    );
    let sound = (env.bounded_source)(&fix, &by_day, false);
    let n = stage_source(&sound, &into2).await.expect("stage");
    assert_eq!(n, 20);
    let err = w
        .stage_source(
            &from_fix,
            &pred,
            (None, None),
            &ident("nope"),
            &env.table("facts_src3"),
        )
        .await
        .expect_err("unknown order column");
    assert!(matches!(err, Error::SchemaMismatch(_)), "{err:?}");
}

/// Where the ledger is in the engine, a write carrying its batch's mark
/// marks the batch `written` in the same transaction; a stale token rolls
/// the write back with the mark (pre-image included), for overwrite and
/// merge alike; a mark from another ledger is not committed. An engine
/// without the capability hands out no marks, and a write never claims
/// to have marked its batch.
pub async fn writes_mark_the_ledger_in_the_same_transaction(env: Env) {
    let (facts, fix) = facts_and_fix(&env).await;
    let w = env.warehouse.as_ref();
    let clock = Arc::new(ManualClock::new(ledger_t0()));
    let l = env.ledger_with_clock(clock.clone()).await;
    let p = daily_plan(facts.clone());
    let run = RunId::new("marked").expect("run id");
    l.begin_run(&ledger_record("marked", "fp"), &p.batches)
        .await
        .expect("begin");
    let lease = Duration::from_secs(10);
    let c = l
        .claim(&run, "w1", lease, None)
        .await
        .expect("claim")
        .expect("a batch");
    let src = Source::Table(fix.clone());
    let columns = facts_schema().names();
    let mark = l.tx_mark(&run, &c.batch.id, c.token);
    assert_eq!(
        mark.is_some(),
        env.capabilities.ledger_in_data_tx,
        "ledger_in_data_tx says whether the ledger hands out marks: {mark:?}"
    );
    let Some(mark) = mark else {
        env.gate(false, "ledger_in_data_tx", "marks committed with the data");
        let made_up = TxMark {
            ledger: "elsewhere".into(),
            run_id: run.clone(),
            batch_id: c.batch.id.clone(),
            token: c.token,
        };
        let mut sw = slice_write(&run, &c.batch, &facts, &src, &columns, None);
        sw.mark = Some(&made_up);
        assert!(!w.overwrite_slice(&sw).await.expect("write").ledger_marked);
        let recs = l.batches(&run).await.expect("batches");
        assert_eq!(
            recs[0].state,
            BatchState::Running,
            "the write left the ledger alone"
        );
        return;
    };
    let mut sw = slice_write(&run, &c.batch, &facts, &src, &columns, None);
    sw.mark = Some(&mark);
    let out = w.overwrite_slice(&sw).await.expect("write");
    assert!(out.ledger_marked);
    let recs = l.batches(&run).await.expect("batches");
    assert_eq!(recs[0].state, BatchState::Written);
    assert_eq!((recs[0].rows_before, recs[0].rows_written), (4, 4));
    assert_eq!(l.run(&run).await.expect("run").rows_affected, 4);
    let last = l
        .transitions(&run)
        .await
        .expect("transitions")
        .pop()
        .expect("a transition");
    assert_eq!(
        (last.from.as_str(), last.to.as_str(), last.reason.as_str()),
        ("running", "written", "written")
    );

    // A stale token: the write is rolled back with the mark.
    let c = l
        .claim(&run, "w1", lease, None)
        .await
        .expect("claim")
        .expect("a batch");
    clock.advance(Duration::from_secs(11));
    let stale = l.tx_mark(&run, &c.batch.id, c.token).expect("a mark");
    let only = std::slice::from_ref(&c.batch.id);
    let taken = l
        .claim(&run, "w2", lease, Some(only))
        .await
        .expect("claim")
        .expect("taken over");
    assert_eq!(taken.token, c.token + 1);
    let before = checksum(&env, &facts).await;
    let pre = env.table("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .expect("pre-image table");
    let mut sw = slice_write(&run, &c.batch, &facts, &src, &columns, Some(&pre));
    sw.mark = Some(&stale);
    let err = w.overwrite_slice(&sw).await.expect_err("stale");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(
        checksum(&env, &facts).await,
        before,
        "data rolled back with the mark"
    );
    assert_eq!(count(&env, &pre).await, 0, "pre-image rolled back too");
    // The same for a merge.
    let keys = vec![ident("id")];
    let err = w
        .merge_slice(&MergeWrite {
            slice: sw,
            keys: &keys,
            key_log: None,
            scope: None,
        })
        .await
        .expect_err("stale");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(checksum(&env, &facts).await, before);

    // A mark from another ledger is not this warehouse's to commit.
    let foreign = TxMark {
        ledger: format!("{} (another database)", mark.ledger),
        ..l.tx_mark(&run, &taken.batch.id, taken.token)
            .expect("a mark")
    };
    let mut sw = slice_write(&run, &taken.batch, &facts, &src, &columns, None);
    sw.mark = Some(&foreign);
    assert!(!w.overwrite_slice(&sw).await.expect("write").ledger_marked);
}

/// Statements given to `execute` run as written, several in one call;
/// what the engine refuses is an error.
pub async fn execute_runs_user_sql(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let w = env.warehouse.as_ref();
    if !env.gate(env.capabilities.runs_sql, "runs_sql", "user SQL") {
        return;
    }
    let (refreshed, view) = (env.table("refreshed"), env.table("refreshed_v"));
    let (f, r, v) = (
        env.quote_table(&facts),
        env.quote_table(&refreshed),
        env.quote_table(&view),
    );
    w.execute(&format!(
        "CREATE TABLE {r} AS SELECT count(*) AS n FROM {f}; CREATE VIEW {v} AS SELECT * FROM {r}"
    ))
    .await
    .expect("execute");
    assert!(w.describe(&view).await.expect("describe").is_some());
    assert_eq!(count(&env, &refreshed).await, 1);
    let n = ask::metric(
        w,
        Rows::all(view),
        Metric {
            name: "n".into(),
            aggregate: Aggregate::Sum(ident("n")),
            by: vec![],
        },
    )
    .await
    .expect("metric");
    assert_eq!(n[0].value.to_string(), "40");
    w.execute(&format!(
        "DELETE FROM {f} WHERE {} <= 4",
        env.quote_ident("id")
    ))
    .await
    .expect("execute");
    assert_eq!(count(&env, &facts).await, 36);
    assert!(w.execute("REFRESH NOTHING").await.is_err());
}
