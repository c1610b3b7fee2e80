//! Unit tests of the fake warehouse, the fault decorator and the fixtures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backfill_core::ledger::{MemoryLedger, RunId, RunStatus};
use backfill_core::plan::{Batch, BatchId};
use backfill_core::runner::{Backfill, Runner};
use backfill_core::warehouse::{
    Footprint, MergeWrite, Restore, SliceWrite, Warehouse, WriteOutcome,
};
use backfill_core::{
    Bounds, Brief, CheckSpec, Column, ColumnType, Dependencies, Dependency, Error, Grain, Ident,
    Operations, Plan, Planner, Predicate, RiskClass, RollbackPlan, Scope, Source, StrategySpec,
    TableRef, TableSchema, ValidationPlan, Value,
};
use backfill_testkit::fake::FakeWarehouse;
use backfill_testkit::faults::{FaultPoint, Faulty};
use backfill_testkit::fixtures::{
    load, orders_dataset, orders_schema, revenue_schema, DatasetConfig, Seed, ORDERS, REFUNDS,
    REVENUE, REVENUE_CORRECTED,
};
use jiff::civil::{date, Date};
use jiff::tz::TimeZone;

fn id(s: &str) -> Ident {
    Ident::new(s).unwrap()
}

fn t(s: &str) -> TableRef {
    TableRef::parse(s).unwrap()
}

fn day(n: i8) -> Date {
    date(2026, 3, n)
}

fn schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(id("id"), ColumnType::Int).not_null(),
            Column::new(id("day"), ColumnType::Date),
            Column::new(id("amount"), ColumnType::Int),
        ],
    }
}

fn cols() -> Vec<Ident> {
    vec![id("id"), id("day"), id("amount")]
}

fn row(i: i64, d: i8, amount: i64) -> Vec<Value> {
    vec![Value::Int(i), Value::Date(day(d)), Value::Int(amount)]
}

/// Days 1..=3, two rows a day: ids 1..=6, amount = id * 10.
fn original() -> Vec<Vec<Value>> {
    (1..=6)
        .map(|i| row(i, ((i + 1) / 2) as i8, i * 10))
        .collect()
}

/// The corrected source: amount + 1 everywhere, id 4 dropped, id 7 added
/// on day 2.
fn corrected() -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = original()
        .into_iter()
        .filter(|r| r[0] != Value::Int(4))
        .map(|mut r| {
            r[2] = Value::Int(r[2].as_i64().unwrap() + 1);
            r
        })
        .collect();
    rows.push(row(7, 2, 70));
    rows
}

fn day_batch(d: i8) -> Batch {
    Batch {
        id: BatchId(day(d).to_string()),
        seq: 0,
        predicate: Predicate::Range {
            column: id("day"),
            start: Some(Value::Date(day(d))),
            end: Some(Value::Date(day(d + 1))),
        },
        start: Some(Value::Date(day(d))),
        end: Some(Value::Date(day(d + 1))),
    }
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows
}

/// `facts` (original), `fix` (corrected), `pre` and `keys` snapshot tables.
async fn setup() -> FakeWarehouse {
    let fake = FakeWarehouse::new();
    fake.create_table(&t("facts"), schema()).unwrap();
    fake.insert_rows(&t("facts"), original()).unwrap();
    fake.create_table(&t("fix"), schema()).unwrap();
    fake.insert_rows(&t("fix"), corrected()).unwrap();
    fake.create_snapshot_table(&t("facts"), &cols(), &t("pre"))
        .await
        .unwrap();
    fake.create_snapshot_table(&t("facts"), &[id("id")], &t("keys"))
        .await
        .unwrap();
    fake
}

fn run_id() -> RunId {
    RunId::new("r1").unwrap()
}

async fn overwrite(
    w: &dyn Warehouse,
    batch: &Batch,
    source: &Source,
    snapshot: Option<&TableRef>,
) -> backfill_core::Result<WriteOutcome> {
    let run = run_id();
    let table = t("facts");
    let columns = cols();
    w.overwrite_slice(&SliceWrite {
        run_id: &run,
        batch,
        table: &table,
        source,
        staged_source: false,
        columns: &columns,
        snapshot,
        mark: None,
        guards: &[],
    })
    .await
}

async fn merge(
    w: &dyn Warehouse,
    batch: &Batch,
    source: &Source,
    snapshots: bool,
) -> backfill_core::Result<WriteOutcome> {
    let run = run_id();
    let table = t("facts");
    let columns = cols();
    let keys = [id("id")];
    let pre = t("pre");
    let log = t("keys");
    w.merge_slice(&MergeWrite {
        slice: SliceWrite {
            run_id: &run,
            batch,
            table: &table,
            source,
            staged_source: false,
            columns: &columns,
            snapshot: snapshots.then_some(&pre),
            mark: None,
            guards: &[],
        },
        keys: &keys,
        key_log: snapshots.then_some(&log),
        scope: None,
    })
    .await
}

async fn restore(
    w: &dyn Warehouse,
    batch: &Batch,
    by_keys: bool,
) -> backfill_core::Result<Option<u64>> {
    let table = t("facts");
    let pre = t("pre");
    let log = t("keys");
    let keys = [id("id")];
    let columns = cols();
    let footprint = if by_keys {
        Footprint::Keys {
            keys: &keys,
            key_log: &log,
        }
    } else {
        Footprint::Slice(&batch.predicate)
    };
    w.restore_slice(&Restore {
        table: &table,
        snapshot: &pre,
        batch,
        footprint,
        columns: &columns,
    })
    .await
}

fn marker_rows(fake: &FakeWarehouse, table: &str) -> Vec<Vec<Value>> {
    fake.rows(&t(table))
        .unwrap()
        .into_iter()
        .filter(|r| r[1] == Value::Bool(true))
        .collect()
}

#[tokio::test]
async fn overwrite_replaces_exactly_the_slice() {
    let fake = setup().await;
    let out = overwrite(
        &fake,
        &day_batch(2),
        &Source::Table(t("fix")),
        Some(&t("pre")),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        WriteOutcome {
            rows_before: 2,
            rows_written: 2,
            rows_snapshotted: 2,
            ledger_marked: false,
        }
    );
    // Days 1 and 3 untouched; day 2 is the corrected slice (id 4 gone, 7 new).
    let expected = vec![
        row(1, 1, 10),
        row(2, 1, 20),
        row(3, 2, 31),
        row(5, 3, 50),
        row(6, 3, 60),
        row(7, 2, 70),
    ];
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(expected));
    assert_eq!(fake.write_count(), 1);

    // The pre-image holds the old slice plus one marker.
    let pre = fake.rows(&t("pre")).unwrap();
    let batch = Value::Text("2026-03-02".into());
    assert_eq!(
        pre,
        vec![
            vec![
                batch.clone(),
                Value::Bool(false),
                Value::Int(3),
                Value::Date(day(2)),
                Value::Int(30)
            ],
            vec![
                batch.clone(),
                Value::Bool(false),
                Value::Int(4),
                Value::Date(day(2)),
                Value::Int(40)
            ],
            vec![
                batch,
                Value::Bool(true),
                Value::Null,
                Value::Null,
                Value::Null
            ],
        ]
    );

    // Repeating the batch gives the same table and keeps the first pre-image.
    let again = overwrite(
        &fake,
        &day_batch(2),
        &Source::Table(t("fix")),
        Some(&t("pre")),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (2, 2, 0)
    );
    assert_eq!(fake.rows(&t("pre")).unwrap(), pre);
    assert_eq!(fake.count(&t("facts"), &Predicate::All).await.unwrap(), 6);
}

#[tokio::test]
async fn overwrite_validates_tables_and_columns() {
    let fake = setup().await;
    let src = Source::Table(t("fix"));
    let run = run_id();
    let batch = day_batch(2);
    let table = t("nope");
    let columns = cols();
    let err = fake
        .overwrite_slice(&SliceWrite {
            run_id: &run,
            batch: &batch,
            table: &table,
            source: &src,
            staged_source: false,
            columns: &columns,
            snapshot: None,
            mark: None,
            guards: &[],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    let table = t("facts");
    let columns = vec![id("id"), id("missing")];
    let err = fake
        .overwrite_slice(&SliceWrite {
            run_id: &run,
            batch: &batch,
            table: &table,
            source: &Source::Table(t("facts")),
            staged_source: false,
            columns: &columns,
            snapshot: None,
            mark: None,
            guards: &[],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SchemaMismatch(_) | Error::UnknownColumn { .. }),
        "{err:?}"
    );

    let err = overwrite(&fake, &batch, &Source::Table(t("no_source")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let err = overwrite(&fake, &batch, &Source::query("SELECT 1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    assert_eq!(fake.write_count(), 0);
}

/// Registers a bounded query over `fix`; with `leaky` it includes the end.
fn register_bounded(fake: &FakeWarehouse, leaky: bool) -> Source {
    let sql = if leaky {
        "SELECT * FROM fix WHERE day >= {start} AND day <= {end}"
    } else {
        "SELECT * FROM fix WHERE day >= {start} AND day < {end}"
    };
    let reader = fake.clone();
    fake.register_query(sql, schema(), move |start, end| {
        reader
            .rows(&t("fix"))
            .unwrap()
            .into_iter()
            .filter(|r| {
                let ge = start.is_none_or(|s| r[1].compare(s).is_some_and(|o| o.is_ge()));
                let lt = end.is_none_or(|e| {
                    r[1].compare(e)
                        .is_some_and(|o| if leaky { o.is_le() } else { o.is_lt() })
                });
                ge && lt
            })
            .collect()
    });
    Source::query(sql)
}

#[tokio::test]
async fn guard_refuses_out_of_bounds_rows_with_nothing_changed() {
    let fake = setup().await;
    let leaky = register_bounded(&fake, true);
    assert!(leaky.is_bounded());
    let err = overwrite(&fake, &day_batch(2), &leaky, Some(&t("pre")))
        .await
        .unwrap_err();
    // Day 3's two rows fall outside day 2.
    assert_eq!(
        err,
        Error::OutOfBounds {
            batch: "2026-03-02".into(),
            rows: 2
        }
    );
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    assert!(
        fake.rows(&t("pre")).unwrap().is_empty(),
        "no pre-image taken"
    );
    assert_eq!(fake.write_count(), 0);

    // The sound query passes and writes the slice.
    let sound = register_bounded(&fake, false);
    let out = overwrite(&fake, &day_batch(2), &sound, Some(&t("pre")))
        .await
        .unwrap();
    assert_eq!(out.rows_written, 2);
    assert_eq!(marker_rows(&fake, "pre").len(), 1);

    // stage_source applies the same guard and leaves no table.
    let scope = day_batch(2).predicate;
    let (s, e) = (Value::Date(day(2)), Value::Date(day(3)));
    let err = fake
        .stage_source(
            &leaky,
            &scope,
            (Some(&s), Some(&e)),
            &id("day"),
            &t("staged"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { rows: 2, .. }), "{err:?}");
    assert!(fake.rows(&t("staged")).is_none());
    let n = fake
        .stage_source(
            &sound,
            &scope,
            (Some(&s), Some(&e)),
            &id("day"),
            &t("staged"),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Unbounded sources are filtered by the predicate and sorted.
    let all = Predicate::Range {
        column: id("day"),
        start: Some(Value::Date(day(2))),
        end: None,
    };
    let n = fake
        .stage_source(
            &Source::Table(t("fix")),
            &all,
            (None, None),
            &id("day"),
            &t("staged2"),
        )
        .await
        .unwrap();
    assert_eq!(n, 4);
    let days: Vec<Value> = fake
        .rows(&t("staged2"))
        .unwrap()
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(
        days,
        vec![
            Value::Date(day(2)),
            Value::Date(day(2)),
            Value::Date(day(3)),
            Value::Date(day(3))
        ]
    );
    // Staging again is a no-op.
    let n = fake
        .stage_source(
            &Source::Table(t("facts")),
            &Predicate::All,
            (None, None),
            &id("day"),
            &t("staged2"),
        )
        .await
        .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test]
async fn merge_updates_and_inserts_and_logs_keys() {
    let fake = setup().await;
    let out = merge(&fake, &day_batch(2), &Source::Table(t("fix")), true)
        .await
        .unwrap();
    // Source day 2: ids 3 (update) and 7 (insert); id 4 is not touched.
    assert_eq!(
        out,
        WriteOutcome {
            rows_before: 1,
            rows_written: 2,
            rows_snapshotted: 1,
            ledger_marked: false,
        }
    );
    let mut expected = original();
    expected[2] = row(3, 2, 31);
    expected.push(row(7, 2, 70));
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(expected));
    let b = Value::Text("2026-03-02".into());
    assert_eq!(
        fake.rows(&t("pre")).unwrap(),
        vec![
            vec![
                b.clone(),
                Value::Bool(false),
                Value::Int(3),
                Value::Date(day(2)),
                Value::Int(30)
            ],
            vec![
                b.clone(),
                Value::Bool(true),
                Value::Null,
                Value::Null,
                Value::Null
            ],
        ]
    );
    assert_eq!(
        sorted(fake.rows(&t("keys")).unwrap()),
        sorted(vec![
            vec![b.clone(), Value::Bool(false), Value::Int(3)],
            vec![b.clone(), Value::Bool(false), Value::Int(7)],
        ])
    );

    // Merging again: same table, no new pre-image or key log rows.
    let again = merge(&fake, &day_batch(2), &Source::Table(t("fix")), true)
        .await
        .unwrap();
    assert_eq!(
        (
            again.rows_before,
            again.rows_written,
            again.rows_snapshotted
        ),
        (2, 2, 0)
    );
    assert_eq!(fake.rows(&t("pre")).unwrap().len(), 2);
    assert_eq!(fake.rows(&t("keys")).unwrap().len(), 2);
    assert_eq!(fake.count(&t("facts"), &Predicate::All).await.unwrap(), 7);
}

#[tokio::test]
async fn merge_refuses_null_and_duplicate_keys_with_nothing_changed() {
    let fake = setup().await;
    fake.create_table(
        &t("bad"),
        TableSchema {
            columns: vec![
                Column::new(id("id"), ColumnType::Int),
                Column::new(id("day"), ColumnType::Date),
                Column::new(id("amount"), ColumnType::Int),
            ],
        },
    )
    .unwrap();
    fake.insert_rows(
        &t("bad"),
        vec![
            row(3, 2, 1),
            vec![Value::Null, Value::Date(day(2)), Value::Int(1)],
            vec![Value::Null, Value::Date(day(2)), Value::Int(2)],
            // Outside the batch: ignored.
            vec![Value::Null, Value::Date(day(3)), Value::Int(3)],
        ],
    )
    .unwrap();
    let err = merge(&fake, &day_batch(2), &Source::Table(t("bad")), true)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::NullKeys {
            batch: "2026-03-02".into(),
            rows: 2
        }
    );

    fake.create_table(&t("dups"), schema()).unwrap();
    fake.insert_rows(
        &t("dups"),
        vec![
            row(3, 2, 1),
            row(3, 2, 2),
            row(9, 2, 1),
            row(9, 2, 2),
            row(9, 2, 3),
            row(8, 2, 0),
        ],
    )
    .unwrap();
    let err = merge(&fake, &day_batch(2), &Source::Table(t("dups")), true)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DuplicateKeys {
            batch: "2026-03-02".into(),
            groups: 2,
            sample: vec!["3".into(), "9".into()],
        }
    );
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    assert!(fake.rows(&t("pre")).unwrap().is_empty());
    assert!(fake.rows(&t("keys")).unwrap().is_empty());
    assert_eq!(fake.write_count(), 0);
}

#[tokio::test]
async fn restore_brings_back_the_exact_prior_rows() {
    let fake = setup().await;
    // No marker: nothing restored, nothing touched.
    assert_eq!(restore(&fake, &day_batch(2), false).await.unwrap(), None);
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));

    overwrite(
        &fake,
        &day_batch(2),
        &Source::Table(t("fix")),
        Some(&t("pre")),
    )
    .await
    .unwrap();
    overwrite(
        &fake,
        &day_batch(3),
        &Source::Table(t("fix")),
        Some(&t("pre")),
    )
    .await
    .unwrap();
    assert_ne!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    assert_eq!(restore(&fake, &day_batch(3), false).await.unwrap(), Some(2));
    assert_eq!(restore(&fake, &day_batch(2), false).await.unwrap(), Some(2));
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    // Idempotent.
    assert_eq!(restore(&fake, &day_batch(2), false).await.unwrap(), Some(2));
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    // Day 1 was never written.
    assert_eq!(restore(&fake, &day_batch(1), false).await.unwrap(), None);
}

#[tokio::test]
async fn restore_by_keys_undoes_a_merge() {
    let fake = setup().await;
    merge(&fake, &day_batch(2), &Source::Table(t("fix")), true)
        .await
        .unwrap();
    merge(&fake, &day_batch(3), &Source::Table(t("fix")), true)
        .await
        .unwrap();
    assert_eq!(restore(&fake, &day_batch(3), true).await.unwrap(), Some(2));
    assert_eq!(restore(&fake, &day_batch(2), true).await.unwrap(), Some(1));
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
    assert_eq!(restore(&fake, &day_batch(2), true).await.unwrap(), Some(1));
    assert_eq!(sorted(fake.rows(&t("facts")).unwrap()), sorted(original()));
}

#[tokio::test]
async fn swap_is_all_or_nothing() {
    let fake = setup().await;
    let facts = fake.rows(&t("facts")).unwrap();
    let fix = fake.rows(&t("fix")).unwrap();
    // keep_as exists: refused, nothing moved.
    let err = fake
        .swap(&t("facts"), &t("fix"), &t("pre"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    // replacement missing: refused, nothing moved.
    let err = fake
        .swap(&t("facts"), &t("gone"), &t("old"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    assert_eq!(fake.rows(&t("facts")).unwrap(), facts);
    assert_eq!(fake.rows(&t("fix")).unwrap(), fix);
    assert!(fake.rows(&t("old")).is_none());

    fake.swap(&t("facts"), &t("fix"), &t("old")).await.unwrap();
    assert_eq!(fake.rows(&t("facts")).unwrap(), fix);
    assert_eq!(fake.rows(&t("old")).unwrap(), facts);
    assert!(fake.rows(&t("fix")).is_none());
    assert!(!fake.tables().contains(&t("fix")));
}

#[tokio::test]
async fn views_copies_and_reads() {
    let fake = setup().await;
    fake.point_view(&t("v"), &t("facts")).await.unwrap();
    assert_eq!(fake.view_target(&t("v")), Some(t("facts")));
    assert_eq!(fake.describe(&t("v")).await.unwrap(), Some(schema()));
    assert_eq!(
        fake.count(&t("v"), &day_batch(1).predicate).await.unwrap(),
        2
    );
    let a = fake.checksum(&t("v"), &Predicate::All).await.unwrap();
    fake.point_view(&t("v"), &t("fix")).await.unwrap();
    let b = fake.checksum(&t("v"), &Predicate::All).await.unwrap();
    assert_ne!(a, b);
    assert!(
        fake.point_view(&t("facts"), &t("fix")).await.is_err(),
        "a table is not a view"
    );
    assert!(fake.point_view(&t("w"), &t("v")).await.is_ok());
    assert!(
        fake.point_view(&t("v"), &t("w")).await.is_err(),
        "no cycles"
    );
    assert!(matches!(
        fake.point_view(&t("v2"), &t("nope")).await,
        Err(Error::UnknownTable(_))
    ));

    // Checksums ignore row order.
    fake.create_table(&t("rev"), schema()).unwrap();
    fake.insert_rows(&t("rev"), original().into_iter().rev().collect())
        .unwrap();
    assert_eq!(
        fake.checksum(&t("rev"), &Predicate::All).await.unwrap(),
        fake.checksum(&t("facts"), &Predicate::All).await.unwrap()
    );
    assert_eq!(
        fake.checksum(&t("rev"), &Predicate::All)
            .await
            .unwrap()
            .rows,
        6
    );

    fake.create_copy(&t("facts"), &t("copy"), true)
        .await
        .unwrap();
    fake.create_copy(&t("facts"), &t("empty"), false)
        .await
        .unwrap();
    assert_eq!(
        fake.rows(&t("copy")).unwrap(),
        fake.rows(&t("facts")).unwrap()
    );
    assert_eq!(fake.rows(&t("empty")).unwrap(), Vec::<Vec<Value>>::new());
    fake.create_copy(&t("fix"), &t("copy"), true).await.unwrap();
    assert_eq!(
        fake.rows(&t("copy")).unwrap(),
        fake.rows(&t("facts")).unwrap(),
        "no-op if exists"
    );
    assert!(fake.drop_table(&t("copy")).await.unwrap());
    assert!(!fake.drop_table(&t("copy")).await.unwrap());

    let pre = fake.describe(&t("pre")).await.unwrap().unwrap();
    let names: Vec<String> = pre.columns.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names, ["__bf_batch", "__bf_marker", "id", "day", "amount"]);
    assert!(pre.columns.iter().all(|c| c.nullable));
    assert_eq!(pre.columns[4].ty, ColumnType::Int);

    let sample = fake
        .sample_rows(&t("facts"), &Predicate::All, &[id("amount")], 2)
        .await
        .unwrap();
    assert_eq!(sample, vec![row(1, 1, 10), row(2, 1, 20)]);
    let bounds = fake
        .key_boundaries(&t("facts"), &id("id"), &Predicate::All, 4)
        .await
        .unwrap();
    assert_eq!(bounds, vec![Value::Int(1), Value::Int(5)]);

    fake.insert_rows(&t("rev"), vec![row(2, 1, 0), row(2, 1, 0), row(5, 3, 0)])
        .unwrap();
    let report = fake
        .key_report(&t("rev"), &[id("id"), id("day")], &Predicate::All, 1)
        .await
        .unwrap();
    assert_eq!(report.rows, 9);
    assert_eq!(report.null_keys, 0);
    assert_eq!(report.duplicate_keys, 2);
    assert_eq!(report.sample, vec!["2, 2026-03-01".to_string()]);
    assert!(matches!(
        fake.count(
            &t("facts"),
            &Predicate::In {
                column: id("zzz"),
                values: vec![]
            }
        )
        .await,
        Err(Error::UnknownColumn { .. })
    ));
}

#[tokio::test]
async fn faults_fire_where_specified() {
    let fake = setup().await;
    let faulty: Faulty<FakeWarehouse> = fake.faulty();
    let src = Source::Table(t("fix"));

    // BeforeWrite: nothing written.
    faulty.fail_once(FaultPoint::BeforeWrite);
    let err = overwrite(&faulty, &day_batch(2), &src, Some(&t("pre")))
        .await
        .unwrap_err();
    assert_eq!(err, Error::InjectedFault("before_write".into()));
    assert_eq!(fake.write_count(), 0);
    assert!(fake.rows(&t("pre")).unwrap().is_empty());
    assert_eq!(faulty.hits(FaultPoint::BeforeWrite), 1);
    assert_eq!(faulty.hits(FaultPoint::AfterWriteBeforeLedger), 0);

    // AfterWriteBeforeLedger: the write landed, the caller sees an error.
    faulty.fail_once(FaultPoint::AfterWriteBeforeLedger);
    let err = overwrite(&faulty, &day_batch(2), &src, Some(&t("pre")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::InjectedFault("after_write_before_ledger".into())
    );
    assert!(!err.is_transient());
    assert_eq!(fake.write_count(), 1);
    assert_eq!(marker_rows(&fake, "pre").len(), 1);
    assert_eq!(faulty.hits(FaultPoint::BeforeWrite), 2);
    assert_eq!(faulty.hits(FaultPoint::AfterWriteBeforeLedger), 1);

    // fail_nth counts from the call, 1-based; merge writes count too.
    faulty.fail_nth(FaultPoint::BeforeWrite, 2);
    merge(&faulty, &day_batch(1), &src, false).await.unwrap();
    let err = merge(&faulty, &day_batch(1), &src, false)
        .await
        .unwrap_err();
    assert_eq!(err, Error::InjectedFault("before_write".into()));
    merge(&faulty, &day_batch(1), &src, false).await.unwrap();
    assert_eq!(faulty.hits(FaultPoint::BeforeWrite), 5);
    assert_eq!(fake.write_count(), 3);

    // Transient faults are retryable engine errors.
    faulty.transient_once(FaultPoint::BeforeWrite);
    let err = overwrite(&faulty, &day_batch(3), &src, None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    overwrite(&faulty, &day_batch(3), &src, None).await.unwrap();

    // DuringSwap: nothing swapped.
    faulty.fail_once(FaultPoint::DuringSwap);
    let before = fake.rows(&t("facts")).unwrap();
    let err = faulty
        .swap(&t("facts"), &t("fix"), &t("old"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::InjectedFault("during_swap".into()));
    assert_eq!(fake.rows(&t("facts")).unwrap(), before);
    assert!(fake.rows(&t("old")).is_none());
    faulty
        .swap(&t("facts"), &t("fix"), &t("old"))
        .await
        .unwrap();
    assert_eq!(fake.rows(&t("old")).unwrap(), before);
    assert_eq!(faulty.hits(FaultPoint::DuringSwap), 2);

    // DuringCutover: the view does not move.
    fake.point_view(&t("v"), &t("old")).await.unwrap();
    faulty.fail_once(FaultPoint::DuringCutover);
    let err = faulty.point_view(&t("v"), &t("facts")).await.unwrap_err();
    assert_eq!(err, Error::InjectedFault("during_cutover".into()));
    assert_eq!(fake.view_target(&t("v")), Some(t("old")));
    faulty.point_view(&t("v"), &t("facts")).await.unwrap();
    assert_eq!(fake.view_target(&t("v")), Some(t("facts")));
    assert_eq!(faulty.hits(FaultPoint::DuringCutover), 2);

    // Cleared faults do not fire.
    faulty.fail_once(FaultPoint::DuringCutover).clear();
    faulty.point_view(&t("v"), &t("old")).await.unwrap();

    // Reads are delegated untouched.
    assert_eq!(faulty.engine(), "fake");
    assert!(faulty.dialect().is_none());
    assert_eq!(
        faulty.count(&t("facts"), &Predicate::All).await.unwrap(),
        fake.count(&t("facts"), &Predicate::All).await.unwrap()
    );
}

#[tokio::test]
async fn faulty_wraps_a_shared_dyn_warehouse_and_slows_writes() {
    let fake = setup().await;
    let shared: Arc<dyn Warehouse> = Arc::new(fake.clone());
    let faulty = Arc::new(Faulty::new(shared));
    faulty.slow_writes(Duration::from_millis(30));
    let t0 = Instant::now();
    overwrite(
        faulty.as_ref(),
        &day_batch(2),
        &Source::Table(t("fix")),
        None,
    )
    .await
    .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(fake.write_count(), 1);
    assert_eq!(faulty.inner().engine(), "fake");
    faulty.slow_writes(Duration::ZERO);
}

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
            emptiness: Default::default(),
            drift: Default::default(),
            checks: vec![CheckSpec::Unique {
                keys: vec![id("id")],
                blocking: true,
            }],
            description: "Keys stay unique; checksums are compared by the test.".into(),
        },
        rollback: RollbackPlan {
            description: "Restore pre-images with Runner::rollback.".into(),
            keep_pre_image: true,
            retention_days: 7,
            restore_point: None,
        },
        expected_impact: "Amounts change by one unit on two days.".into(),
        operations: Operations {
            rerun: "Rerun with the same run id; done batches are skipped.".into(),
            pause: "Pause at a batch boundary with the control handle.".into(),
            recovery: "Resume continues the stored plan; rollback restores.".into(),
        },
    }
}

/// Each strategy, driven by the real runner over the fake: the run gives
/// the expected table, rollback gives the original back.
#[tokio::test]
async fn runner_strategies_over_the_fake() {
    for (n, strategy) in [
        StrategySpec::PartitionOverwrite,
        StrategySpec::StagingSwap,
        StrategySpec::Merge {
            keys: vec![id("id")],
        },
        StrategySpec::ParallelVersion {
            view: t("facts_view"),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let fake = setup().await;
        fake.point_view(&t("facts_view"), &t("facts"))
            .await
            .unwrap();
        let before = fake
            .checksum(&t("facts_view"), &Predicate::All)
            .await
            .unwrap();
        let scope = Scope::new(t("facts"), "day", Bounds::dates(day(2), day(4)), "UTC").unwrap();
        let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).unwrap();
        let job = Backfill::new(
            RunId::new(format!("run{n}")).unwrap(),
            brief(scope, strategy.clone()),
            plan,
            Source::Table(t("fix")),
        );
        let runner = Runner::new(Arc::new(fake.clone()), Arc::new(MemoryLedger::new()));
        let report = runner.run(&job).await.unwrap();
        assert_eq!(report.batches_done, 2, "{strategy:?}: {report}");
        backfill_testkit::conformance::approve_and_cut_over(&runner, &job)
            .await
            .unwrap();
        let visible = match strategy {
            StrategySpec::ParallelVersion { .. } => t("facts_view"),
            _ => t("facts"),
        };
        let mut expected = corrected();
        expected.retain(|r| r[1] != Value::Date(day(1)));
        expected.extend(
            original()
                .into_iter()
                .filter(|r| r[1] == Value::Date(day(1))),
        );
        if matches!(strategy, StrategySpec::Merge { .. }) {
            // A merge never deletes: id 4 stays.
            expected.push(row(4, 2, 40));
        }
        assert_eq!(
            sorted(fake.rows(&visible).unwrap()),
            sorted(expected),
            "{strategy:?}"
        );
        runner.rollback(&job).await.unwrap();
        assert_eq!(
            fake.checksum(&t("facts_view"), &Predicate::All)
                .await
                .unwrap(),
            before,
            "{strategy:?} rolled back"
        );
        assert_eq!(
            runner.ledger().run(&job.run_id).await.unwrap().status,
            RunStatus::RolledBack
        );
    }
}

#[test]
fn dataset_is_deterministic_and_realistic() {
    let cfg = DatasetConfig::default();
    let ds = orders_dataset(&cfg);
    assert_eq!(ds, orders_dataset(&cfg), "same config, same data");
    let other = orders_dataset(&DatasetConfig {
        seed: 1,
        ..cfg.clone()
    });
    assert_ne!(ds.orders, other.orders);

    assert_eq!(ds.revenue.len(), cfg.orders);
    assert_eq!(
        ds.orders_per_day.iter().map(|(_, n)| n).sum::<usize>(),
        cfg.orders
    );
    assert_eq!(ds.orders.len(), cfg.orders + ds.bad.duplicated_orders.len());
    assert_eq!(ds.end, date(2026, 5, 1));
    assert_eq!(ds.dst_days, vec![date(2026, 3, 8)]);
    assert_eq!(
        ds.month_ends,
        vec![date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]
    );

    // Weekends are quieter than weekdays, month-ends spike.
    let per = |f: &dyn Fn(Date) -> bool| {
        let days: Vec<usize> = ds
            .orders_per_day
            .iter()
            .filter(|(d, _)| f(*d))
            .map(|(_, n)| *n)
            .collect();
        days.iter().sum::<usize>() as f64 / days.len() as f64
    };
    let weekend = |d: Date| {
        matches!(
            d.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        )
    };
    let weekend_avg = per(&|d| weekend(d) && d != d.last_of_month());
    let weekday_avg = per(&|d| !weekend(d) && d != d.last_of_month());
    let month_end_avg = per(&|d| d == d.last_of_month());
    assert!(
        weekend_avg < weekday_avg * 0.6,
        "{weekend_avg} vs {weekday_avg}"
    );
    assert!(
        month_end_avg > weekday_avg * 2.0,
        "{month_end_avg} vs {weekday_avg}"
    );

    // order_date is the local date of order_ts; some evening orders fall on
    // the next UTC day.
    let tz = TimeZone::get(&cfg.time_zone).unwrap();
    let mut next_utc_day = 0;
    for o in &ds.orders {
        let (Value::Timestamp(ts), Value::Date(d)) = (&o[2], &o[3]) else {
            panic!("bad row {o:?}");
        };
        assert_eq!(tz.to_datetime(*ts).date(), *d);
        if TimeZone::UTC.to_datetime(*ts).date() != *d {
            next_utc_day += 1;
        }
    }
    assert!(next_utc_day > 0);
    // The DST day has an order in the skipped hour's neighbourhood.
    let dst_orders = ds
        .orders
        .iter()
        .filter(|o| o[3] == Value::Date(date(2026, 3, 8)))
        .count();
    assert!(dst_orders >= 2);

    // Bad records.
    let order = |oid: i64| {
        ds.revenue
            .iter()
            .find(|r| r[0] == Value::Int(oid))
            .unwrap()
            .clone()
    };
    assert_eq!(ds.bad.negative_gross.len(), 1);
    assert!(order(ds.bad.negative_gross[0])[3].as_f64().unwrap() < 0.0);
    assert_eq!(ds.bad.refund_exceeds_gross.len(), 1);
    let r = order(ds.bad.refund_exceeds_gross[0]);
    assert!(r[4].as_f64().unwrap() > r[3].as_f64().unwrap());
    assert_eq!(ds.bad.duplicated_orders.len(), 1);
    let dup = ds.bad.duplicated_orders[0];
    assert_eq!(
        ds.orders.iter().filter(|o| o[0] == Value::Int(dup)).count(),
        2
    );

    // History has net = gross (the bug); the correction subtracts refunds.
    let refunded = ds
        .revenue
        .iter()
        .filter(|r| r[4].as_f64().unwrap() > 0.0)
        .count();
    assert!(refunded > cfg.orders / 20, "{refunded} refunded orders");
    for (h, c) in ds.revenue.iter().zip(&ds.revenue_corrected) {
        assert_eq!(h[5], h[3]);
        let want = h[3].as_f64().unwrap() - h[4].as_f64().unwrap();
        assert!((c[5].as_f64().unwrap() - want).abs() < 0.005);
    }
    // High-value customers and the price change.
    let hv = ds
        .revenue
        .iter()
        .filter(|r| ds.high_value_customers.contains(&r[2].as_i64().unwrap()))
        .count();
    assert!(hv > 0);
    assert!(ds.price_change > cfg.start && ds.price_change < ds.end);

    // Tiny configs work too.
    let tiny = orders_dataset(&DatasetConfig {
        orders: 3,
        days: 2,
        ..cfg.clone()
    });
    assert_eq!(tiny.revenue.len(), 3);
    assert!(tiny.bad.duplicated_orders.is_empty());
    let empty = orders_dataset(&DatasetConfig {
        orders: 0,
        days: 0,
        ..cfg
    });
    assert!(empty.orders.is_empty());
}

#[tokio::test]
async fn dataset_loads_through_seed() {
    let ds = orders_dataset(&DatasetConfig {
        orders: 2500,
        ..DatasetConfig::default()
    });
    let fake = FakeWarehouse::new();
    let seed: Arc<dyn Seed> = Arc::new(fake.clone());
    let schema = id("shop");
    load(seed.as_ref(), &ds, Some(&schema)).await.unwrap();
    let q = |n: &str| TableRef::qualified(id("shop"), id(n));
    assert_eq!(fake.rows(&q(ORDERS)).unwrap(), ds.orders);
    assert_eq!(fake.rows(&q(REFUNDS)).unwrap().len(), ds.refunds.len());
    assert_eq!(
        fake.describe(&q(REVENUE)).await.unwrap(),
        Some(revenue_schema())
    );
    assert_eq!(
        fake.describe(&q(ORDERS)).await.unwrap(),
        Some(orders_schema())
    );
    assert_eq!(
        fake.count(&q(REVENUE_CORRECTED), &Predicate::All)
            .await
            .unwrap(),
        2500
    );
    // The raw feed has a duplicate key; the fact does not.
    let dup = fake
        .key_report(&q(ORDERS), &[id("order_id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!(dup.duplicate_keys, 1);
    assert_eq!(dup.sample, vec![ds.bad.duplicated_orders[0].to_string()]);
    let clean = fake
        .key_report(&q(REVENUE), &[id("order_id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!(clean.duplicate_keys, 0);
    seed.create_view(&q("revenue_v"), &q(REVENUE))
        .await
        .unwrap();
    assert_eq!(fake.view_target(&q("revenue_v")), Some(q(REVENUE)));
    // Loading twice fails: the tables exist.
    assert!(load(&fake, &ds, Some(&schema)).await.is_err());
}

/// The announcement and the change note read like the run: scope as dates,
/// affected owners, formatted metric deltas with their explanation, the
/// validation verdict, the rollback handle; and the note survives JSON.
#[tokio::test]
async fn notes_before_and_after_a_run() {
    use backfill_core::inspect::{Aggregate, Dim, Metric};
    use backfill_core::note;
    use backfill_testkit::conformance::{self as c, Pattern};

    let case = c::setup(c::fake_env(), Pattern::Staging, "notes").await;
    let mut job = case.job.clone();
    job.brief.validation.checks.push(CheckSpec::Reconcile {
        metric: Metric {
            name: "amount".into(),
            aggregate: Aggregate::Sum(Ident::new("amount").unwrap()),
            by: vec![Dim::column(Ident::new("day").unwrap())],
        },
        keys: vec![Ident::new("id").unwrap()],
        expect: backfill_core::Expectation::MaxChangePercent(25.0),
        tolerance: None,
        blocking: true,
    });
    let job = job.code_version("fix v2");

    let before = note::announcement(&job, None)
        .scheduled("Tuesday 02:00 UTC")
        .markdown();
    assert!(before.contains("**When:** Tuesday 02:00 UTC"), "{before}");
    assert!(
        before.contains("facts, day 2026-03-03 through 2026-03-07 (UTC)"),
        "{before}"
    );
    assert!(before.contains("facts dashboard (bi-team)"), "{before}");
    assert!(before.contains("5 batches"), "{before}");

    let runner = case.runner();
    runner.run(&job).await.unwrap();
    c::approve_and_cut_over(&runner, &job).await.unwrap();
    let after = note::change_note(case.env.ledger.as_ref(), &job)
        .await
        .unwrap();
    assert_eq!(after.batches, (5, 5));
    assert_eq!(after.validation_passed, Some(true));
    assert_eq!(after.metrics.len(), 5);
    assert!(after
        .rollback
        .iter()
        .any(|(t, _)| t == "facts__bf_old_notes"));
    let md = after.markdown();
    // Day 3 lost row 13 (-130) and each other row gained 1.
    assert!(
        md.contains("| amount | 2026-03-04 | 580 | 453 | -127 (-21.90%) | 0 | -130 | +3 | 0 |"),
        "{md}"
    );
    assert!(md.contains("**Validation:** passed."), "{md}");
    assert!(md.contains("code fix v2"), "{md}");
    let json = serde_json::to_string(&after).unwrap();
    let back: note::ChangeNote = serde_json::from_str(&json).unwrap();
    assert_eq!(back, after);
}

/// Downstream refresh runs in dependency order (not declaration order),
/// records each step so a failed refresh resumes after the last done, and
/// the definition of done is met only when every item is.
#[tokio::test]
async fn refresh_in_order_resumes_and_completes_the_definition_of_done() {
    use backfill_core::done::DoneItem;
    use backfill_core::refresh::{refresh_order, Refresh, RefreshAction};
    use backfill_testkit::conformance::{self as c, Pattern};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let fake = FakeWarehouse::new();
    let case = c::setup(c::fake_env_on(fake.clone()), Pattern::Overwrite, "refresh").await;
    let mut job = case.job.clone().code_version("fix v3");
    let dep = |name: &str, on: &[&str]| {
        let mut d = Dependency::new(name, "data-team");
        d.depends_on = on.iter().map(|s| s.to_string()).collect();
        d
    };
    job.brief
        .dependencies
        .direct
        .push(dep("facts_model", &["facts"]));
    job.brief.dependencies.indirect = vec![
        dep("exec_dashboard", &["revenue_mart"]),
        dep("revenue_mart", &["facts_model"]),
    ];
    assert_eq!(
        refresh_order(&job.brief).unwrap(),
        vec![
            "facts dashboard",
            "facts_model",
            "revenue_mart",
            "exec_dashboard"
        ]
    );
    let mut cyclic = job.brief.clone();
    cyclic.dependencies.direct[1].depends_on = vec!["exec_dashboard".into()];
    assert!(matches!(refresh_order(&cyclic), Err(Error::InvalidPlan(_))));

    let runner = case.runner();
    runner.run(&job).await.unwrap();
    let status = runner.done_status(&job).await.unwrap();
    let missing: Vec<DoneItem> = status.missing().map(|(i, _)| i).collect();
    assert_eq!(
        missing,
        vec![DoneItem::DownstreamRefreshed, DoneItem::NoteProduced]
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let hook_calls = calls.clone();
    let actions = vec![
        Refresh::new(
            "facts dashboard",
            RefreshAction::Command {
                program: "true".into(),
                args: vec![],
            },
        ),
        Refresh::new(
            "exec_dashboard",
            RefreshAction::Command {
                program: "true".into(),
                args: vec![],
            },
        ),
        Refresh::new(
            "facts_model",
            RefreshAction::Sql("REFRESH MATERIALIZED VIEW facts_model".into()),
        ),
        Refresh::new(
            "revenue_mart",
            RefreshAction::Hook(Arc::new(move || {
                let n = hook_calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        Err(Error::engine("mart job failed"))
                    } else {
                        Ok(())
                    }
                })
            })),
        ),
    ];
    runner
        .refresh(&job, &actions)
        .await
        .expect_err("the mart fails");
    let status = runner.done_status(&job).await.unwrap();
    assert!(status
        .missing()
        .any(|(i, m)| i == DoneItem::DownstreamRefreshed && m.contains("revenue_mart")));
    let again = runner.refresh(&job, &actions).await.unwrap();
    assert_eq!(again.already, vec!["facts dashboard", "facts_model"]);
    assert_eq!(again.refreshed, vec!["revenue_mart", "exec_dashboard"]);
    assert_eq!(
        fake.executed(),
        vec!["REFRESH MATERIALIZED VIEW facts_model"],
        "a finished refresh is not repeated"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let unknown = [Refresh::new(
        "nobody",
        RefreshAction::Sql("SELECT 1".into()),
    )];
    assert!(matches!(
        runner.refresh(&job, &unknown).await,
        Err(Error::InvalidPlan(_))
    ));

    let note = runner.change_note(&job).await.unwrap();
    assert_eq!(
        note.refreshed,
        vec![
            "facts dashboard",
            "facts_model",
            "revenue_mart",
            "exec_dashboard"
        ]
    );
    let status = runner.done_status(&job).await.unwrap();
    assert!(status.is_done(), "{status:?}");
}

/// Records maintenance marks with the number of data writes at the time.
struct Marks {
    fake: FakeWarehouse,
    log: std::sync::Mutex<Vec<(Vec<String>, bool, u64)>>,
}

#[async_trait::async_trait]
impl backfill_core::runner::MaintenanceHook for Marks {
    async fn mark(
        &self,
        _run: &RunId,
        datasets: &[String],
        under: bool,
    ) -> backfill_core::Result<()> {
        let writes = self.fake.write_count();
        self.log
            .lock()
            .unwrap()
            .push((datasets.to_vec(), under, writes));
        Ok(())
    }
}

/// The affected datasets are marked under maintenance before the first
/// write, and the mark is cleared once the new data is visible (in place
/// at the end of the run; for a staged run only at cut-over) or the run
/// is rolled back.
#[tokio::test]
async fn maintenance_marks_span_the_run() {
    use backfill_testkit::conformance::{self as c, Pattern};

    for pattern in [Pattern::Overwrite, Pattern::Staging] {
        let fake = FakeWarehouse::new();
        let case = c::setup(c::fake_env_on(fake.clone()), pattern, "marks").await;
        let marks = Arc::new(Marks {
            fake: fake.clone(),
            log: std::sync::Mutex::new(Vec::new()),
        });
        let runner = case.runner().with_maintenance(marks.clone());
        runner.run(&case.job).await.unwrap();
        let log = |m: &Marks| -> Vec<(bool, u64)> {
            m.log
                .lock()
                .unwrap()
                .iter()
                .map(|(_, on, w)| (*on, *w))
                .collect()
        };
        let datasets = marks.log.lock().unwrap()[0].0.clone();
        assert_eq!(datasets, vec!["facts dashboard".to_string()]);
        if pattern == Pattern::Overwrite {
            assert_eq!(log(&marks), vec![(true, 0), (false, 5)], "{pattern:?}");
            runner.rollback(&case.job).await.unwrap();
            assert_eq!(
                log(&marks),
                vec![(true, 0), (false, 5), (false, 5)],
                "rollback clears the mark too"
            );
        } else {
            assert_eq!(log(&marks), vec![(true, 0)], "still under maintenance");
            c::approve_and_cut_over(&runner, &case.job).await.unwrap();
            assert_eq!(log(&marks), vec![(true, 0), (false, 5)]);
        }
    }
}
