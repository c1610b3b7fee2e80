//! Integration tests of the DuckDB adapter against a real (in-memory)
//! DuckDB: every Warehouse method's contract, the DuckDB ledger (mirrored
//! against MemoryLedger), in-transaction ledger marks, and an end-to-end
//! run through the Runner.
//!
//! This is the crate's only integration test file (each test binary links
//! DuckDB); put new tests here.

use std::sync::Arc;
use std::time::Duration;

use backfill_core::jiff::civil::{date, Date};
use backfill_core::jiff::Timestamp;
use backfill_core::ledger::{
    AssetKind, BatchState, BatchUpdate, Ledger, ManualClock, RunRecord, RunStart, RunStatus,
};
use backfill_core::plan::Batch;
use backfill_core::warehouse::{Footprint, MergeWrite, Restore, SliceWrite, Warehouse};
use backfill_core::{
    Backfill, Bounds, Brief, CheckSpec, ColumnType, Dependencies, Dependency, Error, Expectation,
    Grain, Ident, Operations, Plan, Planner, Predicate, RiskClass, RollbackPlan, RunId, Runner,
    Scope, Source, StrategySpec, TableRef, ValidationPlan, Value,
};
use backfill_duckdb::{DuckDbLedger, DuckDbWarehouse};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

use backfill_testkit::conformance::{
    expected_replace, facts_schema, original_rows, source_rows as fixed_rows,
};

fn id(s: &str) -> Ident {
    Ident::new(s).unwrap()
}

fn tr(s: &str) -> TableRef {
    TableRef::parse(s).unwrap()
}

fn day(n: i8) -> Date {
    date(2026, 3, 1 + n)
}

fn row(i: i64, d: Date, amount: i64, note: &str) -> Vec<Value> {
    vec![
        Value::Int(i),
        Value::Date(d),
        Value::Int(amount),
        Value::Text(note.into()),
    ]
}

async fn seed(w: &DuckDbWarehouse, name: &str, rows: &[Vec<Value>]) -> TableRef {
    let t = tr(name);
    w.create_table(&t, &facts_schema()).await.unwrap();
    if !rows.is_empty() {
        w.insert_rows(&t, rows).await.unwrap();
    }
    t
}

fn scope() -> Scope {
    Scope::new(tr("facts"), "day", Bounds::dates(day(2), day(7)), "UTC").unwrap()
}

fn plan() -> Plan {
    Plan::build(scope(), Planner::Windows { grain: Grain::Day }).unwrap()
}

fn bounded_source(table: &str, leaky: bool) -> Source {
    let op = if leaky { "<=" } else { "<" };
    Source::query(format!(
        "SELECT * FROM \"{table}\" WHERE \"day\" >= {{start}} AND \"day\" {op} {{end}}"
    ))
}

fn cols() -> Vec<Ident> {
    facts_schema().names()
}

async fn checksum(w: &DuckDbWarehouse, t: &TableRef) -> backfill_core::warehouse::Checksum {
    w.checksum(t, &Predicate::All).await.unwrap()
}

async fn setup() -> (DuckDbWarehouse, TableRef, TableRef) {
    let w = DuckDbWarehouse::in_memory().unwrap();
    let facts = seed(&w, "facts", &original_rows()).await;
    let fix = seed(&w, "facts_fix", &fixed_rows()).await;
    (w, facts, fix)
}

fn write<'a>(
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
    }
}

// ---------------------------------------------------------------------------
// Catalog and reads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_tables_views_and_sources() {
    let (w, facts, _) = setup().await;
    assert_eq!(w.engine(), "duckdb");
    assert!(w.dialect().is_some());
    assert_eq!(w.describe(&facts).await.unwrap(), Some(facts_schema()));
    assert_eq!(w.describe(&tr("nope")).await.unwrap(), None);

    w.create_view(&tr("facts_v"), &facts).await.unwrap();
    let v = w.describe(&tr("facts_v")).await.unwrap().unwrap();
    assert_eq!(v.names(), cols());

    let q = bounded_source("facts", false);
    let s = w.describe_source(&q).await.unwrap();
    assert_eq!(s.names(), cols());
    assert_eq!(s.column(&id("day")).unwrap().ty, ColumnType::Date);
    assert_eq!(s.column(&id("note")).unwrap().ty, ColumnType::Text);
    let s = w
        .describe_source(&Source::Table(facts.clone()))
        .await
        .unwrap();
    assert_eq!(s.names(), cols());

    let err = w
        .describe_source(&Source::Table(tr("nope")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let err = w
        .describe_source(&Source::query("SELECT * FROM nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTable(ref t) if t == "nope"),
        "{err:?}"
    );

    // Every type maps, in a schema of its own.
    w.execute_batch(
        "CREATE SCHEMA s; CREATE TABLE s.typed (b BOOLEAN, i INTEGER, h HUGEINT, f DOUBLE, r REAL, \
         n DECIMAL(10,2), t VARCHAR, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, j INTEGER[])",
    )
    .await
    .unwrap();
    let typed = w.describe(&tr("s.typed")).await.unwrap().unwrap();
    let tys: Vec<ColumnType> = typed.columns.iter().map(|c| c.ty).collect();
    use ColumnType::*;
    assert_eq!(
        tys,
        vec![Bool, Int, Int, Float, Float, Decimal, Text, Date, DateTime, Timestamp, Other]
    );
    // An unqualified name is looked up in the current schema only.
    assert_eq!(w.describe(&tr("typed")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_checksums_samples_and_boundaries() {
    let (w, facts, _) = setup().await;
    let p = plan();
    let b = &p.batches[0];
    assert_eq!(w.count(&facts, &Predicate::All).await.unwrap(), 40);
    assert_eq!(w.count(&facts, &b.predicate).await.unwrap(), 4);
    assert_eq!(
        w.count(&facts, &p.scope.predicate().unwrap())
            .await
            .unwrap(),
        20
    );
    let err = w
        .count(
            &facts,
            &Predicate::In {
                column: id("nope"),
                values: vec![Value::Int(1)],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownColumn { ref column, .. } if column == "nope"),
        "{err:?}"
    );
    let err = w.count(&tr("nope"), &Predicate::All).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    // Same rows in another order and another table: same checksum.
    let mut reversed = original_rows();
    reversed.reverse();
    let copy = seed(&w, "facts_copy", &reversed).await;
    let a = checksum(&w, &facts).await;
    assert_eq!(a.rows, 40);
    assert_eq!(a, checksum(&w, &copy).await);
    w.execute_batch("UPDATE facts_copy SET amount = amount + 1 WHERE id = 7")
        .await
        .unwrap();
    assert_ne!(a, checksum(&w, &copy).await);
    assert_eq!(w.checksum(&facts, &b.predicate).await.unwrap().rows, 4);
    let empty = seed(&w, "facts_empty", &[]).await;
    assert_eq!(checksum(&w, &empty).await.rows, 0);

    // Samples come back typed and ordered, NULLs first.
    w.insert_rows(
        &copy,
        &[vec![Value::Int(99), Value::Null, Value::Null, Value::Null]],
    )
    .await
    .unwrap();
    let rows = w
        .sample_rows(&copy, &Predicate::All, &[id("day"), id("id")], 3)
        .await
        .unwrap();
    assert_eq!(
        rows[0],
        vec![Value::Int(99), Value::Null, Value::Null, Value::Null]
    );
    assert_eq!(rows[1], row(1, day(0), 10, "original"));
    assert_eq!(rows.len(), 3);
    w.execute_batch(
        "CREATE TABLE typed (b BOOLEAN, f DOUBLE, n DECIMAL(10,2), ts TIMESTAMP, tz TIMESTAMPTZ, j INTEGER[]); \
         INSERT INTO typed VALUES (true, 1.5, 2.25, TIMESTAMP '2026-03-01 10:30:00', \
         TIMESTAMPTZ '2026-03-01 10:30:00+00', [1, 2])",
    )
    .await
    .unwrap();
    let rows = w
        .sample_rows(&tr("typed"), &Predicate::All, &[], 10)
        .await
        .unwrap();
    assert_eq!(
        rows[0],
        vec![
            Value::Bool(true),
            Value::Float(1.5),
            Value::Text("2.25".into()),
            Value::DateTime(date(2026, 3, 1).at(10, 30, 0, 0)),
            Value::Timestamp("2026-03-01T10:30:00Z".parse::<Timestamp>().unwrap()),
            Value::Text("[1, 2]".into()),
        ]
    );
    // Typed predicates bind temporal values.
    let ts_pred = Predicate::Range {
        column: id("tz"),
        start: Some(Value::Timestamp("2026-03-01T10:00:00Z".parse().unwrap())),
        end: Some(Value::Timestamp("2026-03-01T11:00:00Z".parse().unwrap())),
    };
    assert_eq!(w.count(&tr("typed"), &ts_pred).await.unwrap(), 1);
    let dt_pred = Predicate::Range {
        column: id("ts"),
        start: Some(Value::DateTime(date(2026, 3, 1).at(10, 30, 0, 1_000))),
        end: None,
    };
    assert_eq!(w.count(&tr("typed"), &dt_pred).await.unwrap(), 0);

    // Boundaries: every 3rd id (1st, 4th, 7th, …) among matching rows.
    let bounds = w
        .key_boundaries(&facts, &id("id"), &b.predicate, 3)
        .await
        .unwrap();
    assert_eq!(bounds, vec![Value::Int(9), Value::Int(12)]);
    let all = w
        .key_boundaries(&facts, &id("id"), &Predicate::All, 10)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![
            Value::Int(1),
            Value::Int(11),
            Value::Int(21),
            Value::Int(31)
        ]
    );
    let days = w
        .key_boundaries(&facts, &id("day"), &Predicate::All, 8)
        .await
        .unwrap();
    assert_eq!(days[1], Value::Date(day(2)));
    assert!(w
        .key_boundaries(&facts, &id("id"), &Predicate::All, 0)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reports_find_nulls_and_duplicates() {
    let (w, facts, _) = setup().await;
    let r = w
        .key_report(&facts, &[id("id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!((r.rows, r.null_keys, r.duplicate_keys), (40, 0, 0));
    assert!(r.sample.is_empty());
    w.execute_batch("ALTER TABLE facts ALTER COLUMN id DROP NOT NULL")
        .await
        .unwrap();
    w.insert_rows(
        &facts,
        &[
            row(3, day(0), 1, "dup"),
            row(3, day(0), 2, "dup"),
            row(5, day(1), 1, "dup"),
            vec![Value::Null, Value::Date(day(0)), Value::Null, Value::Null],
        ],
    )
    .await
    .unwrap();
    let r = w
        .key_report(&facts, &[id("id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!((r.rows, r.null_keys, r.duplicate_keys), (44, 1, 2));
    assert_eq!(r.sample, vec!["3".to_string(), "5".to_string()]);
    let r = w
        .key_report(&facts, &[id("id"), id("day")], &Predicate::All, 1)
        .await
        .unwrap();
    assert_eq!(r.duplicate_keys, 2);
    assert_eq!(r.sample, vec!["3, 2026-03-01".to_string()]);
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_guards_snapshots_and_restores() {
    let (w, facts, fix) = setup().await;
    let original = checksum(&w, &facts).await;
    let run = RunId::new("ow").unwrap();
    let p = plan();
    let pre = tr("facts_pre");
    let columns = cols();
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap(); // idempotent
    let snap = w.describe(&pre).await.unwrap().unwrap();
    assert_eq!(snap.names()[..2], [id("__bf_batch"), id("__bf_marker")]);
    assert!(snap.columns.iter().all(|c| c.nullable));

    // A leaky bounded query is refused with nothing written.
    let leaky = bounded_source("facts_fix", true);
    let b2 = &p.batches[2]; // day 4: gains id 1000
    let err = w
        .overwrite_slice(&write(&run, b2, &facts, &leaky, &columns, Some(&pre)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { rows: 4, .. }), "{err:?}");
    assert_eq!(checksum(&w, &facts).await, original);
    assert_eq!(w.count(&pre, &Predicate::All).await.unwrap(), 0);

    // A sound bounded query writes the slice and keeps its pre-image.
    let sound = bounded_source("facts_fix", false);
    let out = w
        .overwrite_slice(&write(&run, b2, &facts, &sound, &columns, Some(&pre)))
        .await
        .unwrap();
    assert_eq!(
        (out.rows_before, out.rows_written, out.rows_snapshotted),
        (4, 5, 4)
    );
    assert!(!out.ledger_marked);
    // Repeating the batch gives the same table and keeps the first pre-image.
    let after = checksum(&w, &facts).await;
    let again = w
        .overwrite_slice(&write(&run, b2, &facts, &sound, &columns, Some(&pre)))
        .await
        .unwrap();
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (5, 5, 0)
    );
    assert_eq!(checksum(&w, &facts).await, after);
    assert_eq!(w.count(&pre, &Predicate::All).await.unwrap(), 5); // 4 rows + marker

    // An unbounded table source gets the batch predicate applied.
    let b0 = &p.batches[0]; // day 2: loses id 13... no: day 2 is ids 9..12
    let tsrc = Source::Table(fix.clone());
    let out = w
        .overwrite_slice(&write(&run, b0, &facts, &tsrc, &columns, Some(&pre)))
        .await
        .unwrap();
    assert_eq!((out.rows_before, out.rows_written), (4, 4));

    // Restore puts back exactly what was there, batch by batch.
    for b in [b2, b0] {
        let n = w
            .restore_slice(&Restore {
                table: &facts,
                snapshot: &pre,
                batch: b,
                footprint: Footprint::Slice(&b.predicate),
                columns: &columns,
            })
            .await
            .unwrap();
        assert_eq!(n, Some(4));
    }
    assert_eq!(checksum(&w, &facts).await, original);
    // Idempotent, and a never-written batch is left alone.
    let n = w
        .restore_slice(&Restore {
            table: &facts,
            snapshot: &pre,
            batch: b2,
            footprint: Footprint::Slice(&b2.predicate),
            columns: &columns,
        })
        .await
        .unwrap();
    assert_eq!(n, Some(4));
    let never = &p.batches[4];
    let n = w
        .restore_slice(&Restore {
            table: &facts,
            snapshot: &pre,
            batch: never,
            footprint: Footprint::Slice(&never.predicate),
            columns: &columns,
        })
        .await
        .unwrap();
    assert_eq!(n, None);
    assert_eq!(checksum(&w, &facts).await, original);

    // Unknown tables and columns are refused before any write.
    let err = w
        .overwrite_slice(&write(&run, b2, &tr("nope"), &sound, &columns, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let bad_cols = vec![id("id"), id("nope")];
    let err = w
        .overwrite_slice(&write(&run, b2, &facts, &sound, &bad_cols, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err:?}");
    let err = w
        .overwrite_slice(&write(
            &run,
            b2,
            &facts,
            &Source::Table(tr("nope")),
            &columns,
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    // A view is not a write target.
    w.create_view(&tr("facts_v"), &facts).await.unwrap();
    let err = w
        .overwrite_slice(&write(&run, b2, &tr("facts_v"), &sound, &columns, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    assert_eq!(checksum(&w, &facts).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_reads_the_source_before_deleting() {
    // A source that reads the table being written sees the old slice.
    let (w, facts, _) = setup().await;
    let run = RunId::new("self").unwrap();
    let p = plan();
    let b = &p.batches[0];
    let doubled = Source::query("SELECT id, day, amount * 2 AS amount, note FROM facts");
    let out = w
        .overwrite_slice(&write(&run, b, &facts, &doubled, &cols(), None))
        .await
        .unwrap();
    assert_eq!((out.rows_before, out.rows_written), (4, 4));
    let rows = w
        .sample_rows(&facts, &b.predicate, &[id("id")], 10)
        .await
        .unwrap();
    assert_eq!(rows[0], row(9, day(2), 180, "original"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_bad_keys_then_upserts_and_restores() {
    let (w, facts, _) = setup().await;
    let original = checksum(&w, &facts).await;
    let run = RunId::new("mg").unwrap();
    let p = plan();
    let b = &p.batches[2]; // day 4: ids 17..20
    let columns = cols();
    let keys = vec![id("id")];
    let pre = tr("facts_pre");
    let log = tr("facts_keys");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    w.create_snapshot_table(&facts, &keys, &log).await.unwrap();

    let src = w
        .execute_batch("ALTER TABLE facts_fix ALTER COLUMN id DROP NOT NULL")
        .await;
    src.unwrap();
    let merge = |source: &'static str| Source::Table(tr(source));
    // Null keys.
    w.execute_batch("CREATE TABLE with_null AS SELECT * FROM facts_fix; INSERT INTO with_null VALUES (NULL, DATE '2026-03-05', 1, 'null')")
        .await
        .unwrap();
    let s = merge("with_null");
    let err = w
        .merge_slice(&MergeWrite {
            slice: write(&run, b, &facts, &s, &columns, Some(&pre)),
            keys: &keys,
            key_log: Some(&log),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NullKeys { rows: 1, .. }), "{err:?}");
    // Duplicate keys.
    w.execute_batch("CREATE TABLE with_dup AS SELECT * FROM facts_fix; INSERT INTO with_dup VALUES (17, DATE '2026-03-05', 1, 'dup')")
        .await
        .unwrap();
    let s = merge("with_dup");
    let err = w
        .merge_slice(&MergeWrite {
            slice: write(&run, b, &facts, &s, &columns, Some(&pre)),
            keys: &keys,
            key_log: Some(&log),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateKeys { groups: 1, ref sample, .. } if sample == &vec!["17".to_string()]),
        "{err:?}"
    );
    assert_eq!(checksum(&w, &facts).await, original);
    assert_eq!(w.count(&pre, &Predicate::All).await.unwrap(), 0);
    assert_eq!(w.count(&log, &Predicate::All).await.unwrap(), 0);

    // A good source: 4 keys updated, 1 inserted.
    let s = merge("facts_fix");
    let mw = MergeWrite {
        slice: write(&run, b, &facts, &s, &columns, Some(&pre)),
        keys: &keys,
        key_log: Some(&log),
    };
    let out = w.merge_slice(&mw).await.unwrap();
    assert_eq!(
        (out.rows_before, out.rows_written, out.rows_snapshotted),
        (4, 5, 4)
    );
    assert_eq!(w.count(&facts, &Predicate::All).await.unwrap(), 41);
    let after = checksum(&w, &facts).await;
    let again = w.merge_slice(&mw).await.unwrap();
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (5, 5, 0)
    );
    assert_eq!(checksum(&w, &facts).await, after);
    assert_eq!(w.count(&log, &Predicate::All).await.unwrap(), 5); // 5 keys, marker in the pre-image
    assert_eq!(w.count(&pre, &Predicate::All).await.unwrap(), 5); // 4 rows + marker

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
    assert_eq!(w.restore_slice(&restore).await.unwrap(), Some(4));
    assert_eq!(checksum(&w, &facts).await, original);
    assert_eq!(w.restore_slice(&restore).await.unwrap(), Some(4));
    assert_eq!(checksum(&w, &facts).await, original);

    // Without a pre-image the key log carries the marker.
    let log2 = tr("facts_keys2");
    w.create_snapshot_table(&facts, &keys, &log2).await.unwrap();
    let out = w
        .merge_slice(&MergeWrite {
            slice: write(&run, b, &facts, &s, &columns, None),
            keys: &keys,
            key_log: Some(&log2),
        })
        .await
        .unwrap();
    assert_eq!(out.rows_snapshotted, 0);
    assert_eq!(w.count(&log2, &Predicate::All).await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_swaps_views_drops_and_stages() {
    let (w, facts, fix) = setup().await;
    let original = checksum(&w, &facts).await;

    // create_copy keeps types and NOT NULL, with or without rows.
    let stage = tr("facts_stage");
    w.create_copy(&facts, &stage, true).await.unwrap();
    assert_eq!(w.describe(&stage).await.unwrap(), Some(facts_schema()));
    assert_eq!(checksum(&w, &stage).await, original);
    w.create_copy(&fix, &stage, true).await.unwrap(); // exists: nothing happens
    assert_eq!(checksum(&w, &stage).await, original);
    let empty = tr("facts_empty");
    w.create_copy(&facts, &empty, false).await.unwrap();
    assert_eq!(w.count(&empty, &Predicate::All).await.unwrap(), 0);
    let err = w
        .create_copy(&tr("nope"), &tr("x"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    // swap: a view reading the target follows the name.
    w.create_view(&tr("facts_v"), &facts).await.unwrap();
    w.execute_batch("DELETE FROM facts_stage WHERE id > 20")
        .await
        .unwrap();
    let staged = checksum(&w, &stage).await;
    let old = tr("facts_old");
    w.swap(&facts, &stage, &old).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, staged);
    assert_eq!(checksum(&w, &old).await, original);
    assert_eq!(checksum(&w, &tr("facts_v")).await, staged);
    assert_eq!(w.describe(&stage).await.unwrap(), None);
    // keep_as must not exist; the replacement must.
    let err = w.swap(&facts, &fix, &old).await.unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    let err = w
        .swap(&facts, &tr("nope"), &tr("facts_old2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    // And back.
    w.swap(&facts, &old, &stage).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, original);

    // point_view moves a view; a table is not a view; no cycles.
    w.point_view(&tr("facts_v"), &fix).await.unwrap();
    assert_eq!(checksum(&w, &tr("facts_v")).await, checksum(&w, &fix).await);
    let err = w.point_view(&facts, &fix).await.unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    let err = w.point_view(&tr("facts_v"), &tr("nope")).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    w.point_view(&tr("facts_v2"), &tr("facts_v")).await.unwrap();
    let err = w
        .point_view(&tr("facts_v"), &tr("facts_v2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    assert_eq!(checksum(&w, &tr("facts_v")).await, checksum(&w, &fix).await);

    // drop_table drops tables only.
    assert!(w.drop_table(&empty).await.unwrap());
    assert!(!w.drop_table(&empty).await.unwrap());
    assert!(!w.drop_table(&tr("facts_v2")).await.unwrap());
    assert!(w.describe(&tr("facts_v2")).await.unwrap().is_some());

    // stage_source: sorted, restricted, guarded, idempotent.
    let p = plan();
    let pred = p.scope.predicate().unwrap();
    let (lo, hi) = (Value::Date(day(2)), Value::Date(day(7)));
    let into = tr("facts_src");
    let n = w
        .stage_source(
            &Source::Table(fix.clone()),
            &pred,
            (Some(&lo), Some(&hi)),
            &id("day"),
            &into,
        )
        .await
        .unwrap();
    assert_eq!(n, 20);
    let first = w.sample_rows(&into, &Predicate::All, &[], 1).await.unwrap();
    assert_eq!(first[0][1], Value::Date(day(2)));
    let n = w
        .stage_source(
            &Source::Table(facts.clone()),
            &pred,
            (Some(&lo), Some(&hi)),
            &id("day"),
            &into,
        )
        .await
        .unwrap();
    assert_eq!(n, 20, "exists: nothing happens");
    let into2 = tr("facts_src2");
    let err = w
        .stage_source(
            &bounded_source("facts_fix", true),
            &pred,
            (Some(&lo), Some(&hi)),
            &id("day"),
            &into2,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { rows: 4, .. }), "{err:?}");
    assert_eq!(
        w.describe(&into2).await.unwrap(),
        None,
        "no table left behind"
    );
    let n = w
        .stage_source(
            &bounded_source("facts_fix", false),
            &pred,
            (Some(&lo), Some(&hi)),
            &id("day"),
            &into2,
        )
        .await
        .unwrap();
    assert_eq!(n, 20);
    let err = w
        .stage_source(
            &Source::Table(fix.clone()),
            &pred,
            (None, None),
            &id("nope"),
            &tr("facts_src3"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// Ledger
// ---------------------------------------------------------------------------

fn t0() -> Timestamp {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

fn record(run: &str, fingerprint: &str) -> RunRecord {
    RunRecord {
        run_id: RunId::new(run).unwrap(),
        target: tr("facts"),
        fingerprint: fingerprint.into(),
        code_version: "v1".into(),
        parameters: serde_json::json!({"k": 1}),
        operator: "ada".into(),
        status: RunStatus::Running,
        started_at: t0(),
        finished_at: None,
        rows_affected: 0,
        notes: vec![],
    }
}

async fn duck_ledger(clock: Arc<ManualClock>) -> (DuckDbWarehouse, DuckDbLedger) {
    let w = DuckDbWarehouse::in_memory().unwrap();
    let l = w.ledger_with_clock("bf", clock).await.unwrap();
    (w, l)
}

/// The same script against MemoryLedger and DuckDbLedger gives the same
/// answers, step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mirrors_memory_ledger() {
    let clock = backfill_testkit::conformance::ledger_clock();
    let (_w, l) = duck_ledger(clock.clone()).await;
    backfill_testkit::conformance::ledger_mirrors_memory(&l, &clock).await;
    assert!(l
        .tx_mark(&RunId::new("mirror").unwrap(), &plan().batches[0].id, 1)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_refuses_and_fences() {
    let clock = Arc::new(ManualClock::new(t0()));
    let (_w, l) = duck_ledger(clock.clone()).await;
    let p = plan();
    let a = RunId::new("a").unwrap();
    let b = RunId::new("b").unwrap();
    // Lock refusal.
    l.lock_target(&tr("facts"), &a).await.unwrap();
    let err = l.lock_target(&tr("facts"), &b).await.unwrap_err();
    assert!(
        matches!(err, Error::TargetLocked { ref holder, .. } if holder == "a"),
        "{err:?}"
    );
    // Resume with a different fingerprint is refused.
    assert_eq!(
        l.begin_run(&record("a", "fp"), &p.batches).await.unwrap(),
        RunStart::New
    );
    assert_eq!(
        l.begin_run(&record("a", "fp"), &p.batches).await.unwrap(),
        RunStart::Resumed
    );
    let err = l
        .begin_run(&record("a", "other"), &p.batches)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FingerprintMismatch { .. }), "{err:?}");
    let err = l.run(&b).await.unwrap_err();
    assert!(matches!(err, Error::RunNotFound(_)), "{err:?}");
    // Claims go in plan order; tokens grow with every claim of a batch.
    let c1 = l
        .claim(&a, "w1", Duration::from_secs(10), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c1.batch.seq, c1.token, c1.attempt), (0, 1, 1));
    let c2 = l
        .claim(&a, "w2", Duration::from_secs(10), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.batch.seq, 1);
    // After expiry, pending batches still come first, then takeovers.
    clock.advance(Duration::from_secs(11));
    for seq in 2..5 {
        let c = l
            .claim(&a, "w3", Duration::from_secs(100), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.batch.seq, seq);
    }
    let c = l
        .claim(&a, "w3", Duration::from_secs(100), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.batch.seq, c.token, c.attempt), (0, 2, 2));
    let err = l
        .transition(
            &a,
            &c1.batch.id,
            Some(c1.token),
            BatchState::Written,
            BatchUpdate::reason("late"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { token: 1, .. }), "{err:?}");
    l.transition(
        &a,
        &c.batch.id,
        Some(c.token),
        BatchState::Written,
        BatchUpdate::reason("ok"),
    )
    .await
    .unwrap();
    // Ledger tables are plain tables in the chosen schema.
    assert_eq!(l.schema().as_str(), "bf");
    assert_eq!(l.table("batches").unwrap().to_string(), "bf.batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_mark_the_ledger_in_the_same_transaction() {
    let (w, facts, fix) = setup().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let l = w
        .ledger_with_clock("backfill", clock.clone())
        .await
        .unwrap();
    let p = plan();
    let run = RunId::new("marked").unwrap();
    l.begin_run(&record("marked", "fp"), &p.batches)
        .await
        .unwrap();
    let c = l
        .claim(&run, "w1", Duration::from_secs(10), None)
        .await
        .unwrap()
        .unwrap();
    let mark = l.tx_mark(&run, &c.batch.id, c.token).unwrap();
    let src = Source::Table(fix.clone());
    let columns = cols();
    let mut sw = write(&run, &c.batch, &facts, &src, &columns, None);
    sw.mark = Some(&mark);
    let out = w.overwrite_slice(&sw).await.unwrap();
    assert!(out.ledger_marked);
    let recs = l.batches(&run).await.unwrap();
    assert_eq!(recs[0].state, BatchState::Written);
    assert_eq!((recs[0].rows_before, recs[0].rows_written), (4, 4));
    assert_eq!(l.run(&run).await.unwrap().rows_affected, 4);
    let last = l.transitions(&run).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.from.as_str(), last.to.as_str(), last.reason.as_str()),
        ("running", "written", "written")
    );

    // A stale token: the write is rolled back with the mark.
    let c = l
        .claim(&run, "w1", Duration::from_secs(10), None)
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let stale = l.tx_mark(&run, &c.batch.id, c.token).unwrap();
    let taken = l
        .claim(
            &run,
            "w2",
            Duration::from_secs(10),
            Some(std::slice::from_ref(&c.batch.id)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.token, c.token + 1);
    let before = checksum(&w, &facts).await;
    let pre = tr("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let mut sw = write(&run, &c.batch, &facts, &src, &columns, Some(&pre));
    sw.mark = Some(&stale);
    let err = w.overwrite_slice(&sw).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(
        checksum(&w, &facts).await,
        before,
        "data rolled back with the mark"
    );
    assert_eq!(
        w.count(&pre, &Predicate::All).await.unwrap(),
        0,
        "pre-image rolled back too"
    );
    // The same for a merge.
    let keys = vec![id("id")];
    let err = w
        .merge_slice(&MergeWrite {
            slice: sw,
            keys: &keys,
            key_log: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(checksum(&w, &facts).await, before);

    // A mark from another ledger is not this warehouse's to commit.
    let other = DuckDbWarehouse::in_memory()
        .unwrap()
        .ledger("backfill")
        .await
        .unwrap();
    let foreign = other.tx_mark(&run, &taken.batch.id, taken.token).unwrap();
    let mut sw = write(&run, &taken.batch, &facts, &src, &columns, None);
    sw.mark = Some(&foreign);
    assert!(!w.overwrite_slice(&sw).await.unwrap().ledger_marked);
}

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

fn brief(scope: Scope, strategy: StrategySpec) -> Brief {
    Brief {
        title: "Fix amounts".into(),
        reason: "Amounts were computed without the correction.".into(),
        operator: "ada".into(),
        reviewer: "grace".into(),
        risk: RiskClass::MetricChangingRepair,
        scope,
        dependencies: Dependencies {
            direct: vec![Dependency::new("facts dashboard", "bi-team")],
            indirect: vec![],
            human: vec![Dependency::new("finance", "cfo-office")],
        },
        strategy,
        idempotency: "Each batch replaces its own slice in one transaction.".into(),
        validation: ValidationPlan {
            checks: vec![
                CheckSpec::Unique {
                    keys: vec![id("id")],
                    blocking: true,
                },
                CheckSpec::RowCount {
                    expect: Expectation::MaxChangeAbsolute(1),
                    blocking: true,
                },
            ],
            description: "Keys stay unique; a day gains or loses at most one row.".into(),
        },
        rollback: RollbackPlan {
            description: "Restore pre-images with Runner::rollback.".into(),
            keep_pre_image: true,
            retention_days: 7,
            restore_point: None,
        },
        expected_impact: "Amounts in five days change by a few units.".into(),
        operations: Operations {
            rerun: "Rerun with the same run id; done batches are skipped.".into(),
            pause: "Pause at a batch boundary with the control handle.".into(),
            recovery: "Resume continues the stored plan; rollback restores.".into(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_overwrites_daily_partitions_end_to_end() {
    let (w, facts, _) = setup().await;
    let original = checksum(&w, &facts).await;
    let expected_t = seed(&w, "facts_expected", &expected_replace()).await;
    let expected = checksum(&w, &expected_t).await;
    let ledger = Arc::new(w.ledger("backfill").await.unwrap());
    let warehouse = Arc::new(w.clone());

    let b = brief(scope(), StrategySpec::PartitionOverwrite);
    assert!(b.preflight().passed(), "{:?}", b.preflight());
    let job = Backfill::new(
        RunId::new("daily_fix").unwrap(),
        b,
        plan(),
        bounded_source("facts_fix", false),
    )
    .code_version("v2");
    let runner = Runner::new(warehouse.clone(), ledger.clone());
    let report = runner.run(&job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!((report.batches_done, report.batches_this_run), (5, 5));
    assert_eq!(report.rows_before, 20);
    assert_eq!(report.rows_written, 20);
    assert!(
        report.outcomes.iter().all(|o| !o.is_blocking_failure()),
        "{report}"
    );
    assert_eq!(checksum(&w, &facts).await, expected);
    // Batches were marked in the data transactions, then validated.
    let recs = ledger.batches(&job.run_id).await.unwrap();
    assert!(
        recs.iter().all(|r| r.state == BatchState::Validated),
        "{recs:?}"
    );
    assert_eq!(ledger.run(&job.run_id).await.unwrap().rows_affected, 20);
    assert!(report.assets.iter().any(|a| a.kind == AssetKind::PreImage));

    // Rerun: nothing to do, nothing changes.
    let again = runner.run(&job).await.unwrap();
    assert!(again.nothing_to_do(), "{again}");
    assert_eq!(checksum(&w, &facts).await, expected);

    // Rollback restores the exact prior table; twice is harmless.
    runner.rollback(&job).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, original);
    assert_eq!(
        ledger.run(&job.run_id).await.unwrap().status,
        RunStatus::RolledBack
    );
    runner.rollback(&job).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, original);

    // A leaky source fails its first batch with nothing written.
    let leaky = Backfill::new(
        RunId::new("leaky").unwrap(),
        brief(scope(), StrategySpec::PartitionOverwrite),
        plan(),
        bounded_source("facts_fix", true),
    );
    let err = runner.run(&leaky).await.unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err:?}");
    assert_eq!(checksum(&w, &facts).await, original);
    assert_eq!(
        ledger.batches(&leaky.run_id).await.unwrap()[0].state,
        BatchState::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_stages_the_source_once_and_merges() {
    let (w, facts, fix) = setup().await;
    let original = checksum(&w, &facts).await;
    let ledger = Arc::new(w.ledger("backfill").await.unwrap());
    let options = backfill_core::RunOptions {
        stage_source: true,
        ..Default::default()
    };
    let runner = Runner::new(Arc::new(w.clone()), ledger.clone()).with_options(options);
    let job = Backfill::new(
        RunId::new("merge_fix").unwrap(),
        brief(
            scope(),
            StrategySpec::Merge {
                keys: vec![id("id")],
            },
        ),
        plan(),
        Source::Table(fix),
    );
    let report = runner.run(&job).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert!(report
        .assets
        .iter()
        .any(|a| a.kind == AssetKind::StagedSource));
    // Merge never deletes: id 13 stays, id 1000 arrives.
    assert_eq!(w.count(&facts, &Predicate::All).await.unwrap(), 41);
    runner.rollback(&job).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_database_keeps_the_ledger() {
    let dir = std::env::temp_dir().join(format!("backfill-duckdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.duckdb");
    let _ = std::fs::remove_file(&path);
    let p = plan();
    {
        let w = DuckDbWarehouse::open(&path).unwrap();
        let l = w.ledger("backfill").await.unwrap();
        l.begin_run(&record("kept", "fp"), &p.batches)
            .await
            .unwrap();
    }
    let w = DuckDbWarehouse::open(&path).unwrap();
    // Catalog lookups work in a file database too (its catalog is named
    // after the file), and a user table named like the adapter's scratch
    // table is never touched.
    let facts = seed(&w, "facts", &original_rows()).await;
    assert_eq!(w.describe(&facts).await.unwrap(), Some(facts_schema()));
    let scratch = seed(&w, "__bf_slice", &original_rows()).await;
    let run = RunId::new("scratch").unwrap();
    let fix = seed(&w, "facts_fix", &fixed_rows()).await;
    let src = Source::Table(fix);
    let columns = cols();
    w.overwrite_slice(&write(&run, &p.batches[0], &facts, &src, &columns, None))
        .await
        .unwrap();
    assert_eq!(w.count(&scratch, &Predicate::All).await.unwrap(), 40);
    let l = w.default_ledger().await.unwrap();
    let recs = l.batches(&RunId::new("kept").unwrap()).await.unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[2].batch, p.batches[2]);
    drop((w, l));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rough timing of one 100k-row batch (overwrite with pre-image, then a
/// merge) on a 1M-row table: `cargo test -p backfill-duckdb --test duckdb
/// -- --ignored --nocapture timing` (about 0.1 s and 0.2 s with the dev
/// profile, DuckDB itself built at opt-level 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_of_one_large_batch() {
    let w = DuckDbWarehouse::in_memory().unwrap();
    w.execute_batch(
        "CREATE TABLE facts AS SELECT i AS id, DATE '2026-03-01' + CAST(i % 10 AS INTEGER) AS day, \
         i * 10 AS amount, 'original' AS note FROM range(1000000) t(i); \
         CREATE TABLE facts_fix AS SELECT id, day, amount + 1 AS amount, 'fixed' AS note FROM facts",
    )
    .await
    .unwrap();
    let facts = tr("facts");
    let p = plan();
    let b = &p.batches[0];
    let run = RunId::new("timing").unwrap();
    let columns = cols();
    let pre = tr("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let src = Source::Table(tr("facts_fix"));
    let t = std::time::Instant::now();
    let out = w
        .overwrite_slice(&write(&run, b, &facts, &src, &columns, Some(&pre)))
        .await
        .unwrap();
    println!("overwrite {out:?} in {:?}", t.elapsed());
    let log = tr("facts_keys");
    w.create_snapshot_table(&facts, &[id("id")], &log)
        .await
        .unwrap();
    let b = &p.batches[1];
    let t = std::time::Instant::now();
    let keys = [id("id")];
    let out = w
        .merge_slice(&MergeWrite {
            slice: write(&run, b, &facts, &src, &columns, Some(&pre)),
            keys: &keys,
            key_log: Some(&log),
        })
        .await
        .unwrap();
    println!("merge {out:?} in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let c = checksum(&w, &facts).await;
    println!("checksum {c:?} in {:?}", t.elapsed());
}

// ---------------------------------------------------------------------------
// CONFORMANCE SUITE (backfill-testkit): the shared adapter cases, with the
// ledger in the same database, so batch marks commit with the data.
// ---------------------------------------------------------------------------

/// DuckDB's capabilities: its ledger commits with the data, its views bind
/// tables by name (a view over a swapped target reads the new table), and
/// it runs SQL.
fn capabilities() -> backfill_testkit::conformance::Capabilities {
    backfill_testkit::conformance::Capabilities {
        ledger_in_data_tx: true,
        views_bind_by_name: true,
        runs_sql: true,
    }
}

/// A fresh in-memory database per case.
async fn conformance_env(_name: &str) -> backfill_testkit::conformance::Env {
    let w = DuckDbWarehouse::in_memory().unwrap();
    let warehouse = Arc::new(w.clone());
    backfill_testkit::conformance::sql_env(warehouse, &*w, None, "backfill", capabilities()).await
}

backfill_testkit::conformance_tests!(|name: &str| {
    let name = name.to_string();
    async move { Some(conformance_env(&name).await) }
});

/// A refresh's SQL runs as written, several statements included.
#[tokio::test]
async fn execute_runs_user_sql() {
    let (w, facts, _) = setup().await;
    w.execute("CREATE TABLE refreshed AS SELECT count(*) AS n FROM facts; CREATE VIEW refreshed_v AS SELECT * FROM refreshed")
        .await
        .unwrap();
    assert!(w.describe(&tr("refreshed_v")).await.unwrap().is_some());
    assert_eq!(w.count(&tr("refreshed"), &Predicate::All).await.unwrap(), 1);
    assert!(w.count(&facts, &Predicate::All).await.unwrap() > 0);
    assert!(w.execute("REFRESH NOTHING").await.is_err());
}
