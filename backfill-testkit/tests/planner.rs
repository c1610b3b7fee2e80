//! Planners that probe the table (keyset boundaries, density), on the fake.

use backfill_core::{
    Bounds, Column, ColumnType, Error, Ident, Plan, Planner, Predicate, Scope, TableRef,
    TableSchema, Value, Warehouse,
};
use backfill_testkit::FakeWarehouse;

fn table() -> TableRef {
    TableRef::parse("events").unwrap()
}

/// A fake with one `events(id)` table holding `ids`.
fn fake_with(ids: impl IntoIterator<Item = i64>) -> FakeWarehouse {
    let fake = FakeWarehouse::new();
    let schema = TableSchema {
        columns: vec![Column::new(Ident::new("id").unwrap(), ColumnType::Int)],
    };
    fake.create_table(&table(), schema).unwrap();
    fake.insert_rows(
        &table(),
        ids.into_iter().map(|i| vec![Value::Int(i)]).collect(),
    )
    .unwrap();
    fake
}

fn scope(start: i64, end: i64) -> Scope {
    Scope::new(table(), "id", Bounds::Keys { start, end }, "UTC").unwrap()
}

fn edges(plan: &Plan) -> Vec<(i64, i64)> {
    plan.batches
        .iter()
        .map(|b| {
            let s = b.start.as_ref().and_then(Value::as_i64).unwrap();
            let e = b.end.as_ref().and_then(Value::as_i64).unwrap();
            (s, e)
        })
        .collect()
}

/// Batches are ordered, contiguous and cover `[start, end)` exactly.
fn assert_covers(plan: &Plan, start: i64, end: i64) {
    let e = edges(plan);
    assert_eq!(e.first().unwrap().0, start);
    assert_eq!(e.last().unwrap().1, end);
    for w in e.windows(2) {
        assert_eq!(w[0].1, w[1].0, "contiguous: {e:?}");
    }
    assert!(e.iter().all(|(s, e)| s < e), "non-empty: {e:?}");
}

async fn rows_per_batch(fake: &FakeWarehouse, plan: &Plan) -> Vec<u64> {
    let mut out = Vec::new();
    for b in &plan.batches {
        out.push(fake.count(&table(), &b.predicate).await.unwrap());
    }
    out
}

#[tokio::test]
async fn keyset_batches_hold_about_the_asked_rows_on_skewed_keys() {
    // A dense run, a small cluster far away, and one outlier.
    let ids: Vec<i64> = (1..=1000)
        .chain(1_000_000..1_000_010)
        .chain([5_000_000])
        .collect();
    let fake = fake_with(ids.clone());
    let plan = Plan::build_probed(
        scope(0, 10_000_000),
        Planner::Keyset {
            rows_per_batch: 100,
        },
        &fake,
    )
    .await
    .unwrap();
    assert_covers(&plan, 0, 10_000_000);
    let counts = rows_per_batch(&fake, &plan).await;
    assert_eq!(
        counts.iter().sum::<u64>(),
        ids.len() as u64,
        "every row in exactly one batch"
    );
    assert_eq!(plan.batches.len(), ids.len().div_ceil(100));
    assert!(counts.iter().all(|c| *c <= 100), "{counts:?}");
    // Fixed-width splitting at the same batch count would put almost
    // every row in the first batch.
    let dense = Plan::build(
        scope(0, 10_000_000),
        Planner::KeyRanges {
            width: 10_000_000 / 11 + 1,
        },
    )
    .unwrap();
    let dense_counts = rows_per_batch(&fake, &dense).await;
    assert!(dense_counts[0] >= 1000, "{dense_counts:?}");
}

#[tokio::test]
async fn probed_plans_are_stable() {
    let fake = fake_with((0..500).map(|i| i * i));
    let a = Plan::build_probed(
        scope(0, 250_000),
        Planner::Keyset { rows_per_batch: 64 },
        &fake,
    )
    .await
    .unwrap();
    let b = Plan::build_probed(
        scope(0, 250_000),
        Planner::Keyset { rows_per_batch: 64 },
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.fingerprint, b.fingerprint);
}

#[tokio::test]
async fn auto_keys_split_dense_keys_by_width_and_sparse_keys_by_probing() {
    let planner = Planner::AutoKeys {
        rows_per_batch: 1000,
        min_density: 0.5,
    };
    // Dense: every key present -> fixed-width ranges of 1000 keys.
    let dense = fake_with(1..=10_000);
    let plan = Plan::build_probed(scope(1, 10_001), planner.clone(), &dense)
        .await
        .unwrap();
    assert_covers(&plan, 1, 10_001);
    assert_eq!(plan.batches.len(), 10);
    assert!(
        edges(&plan).iter().all(|(s, e)| e - s == 1000),
        "{:?}",
        edges(&plan)
    );

    // Sparse: one key in a hundred -> probed boundaries, ~1000 rows each.
    let sparse = fake_with((0..5000).map(|i| i * 100));
    let plan = Plan::build_probed(scope(0, 500_000), planner, &sparse)
        .await
        .unwrap();
    assert_covers(&plan, 0, 500_000);
    let counts = rows_per_batch(&sparse, &plan).await;
    assert_eq!(counts, vec![1000; 5]);
}

#[tokio::test]
async fn probing_planners_refuse_bad_settings() {
    let fake = fake_with(1..=10);
    let err = Plan::build_probed(scope(0, 100), Planner::Keyset { rows_per_batch: 0 }, &fake)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPlan(_)), "{err:?}");
    let err = Plan::build(scope(0, 100), Planner::Keyset { rows_per_batch: 5 }).unwrap_err();
    assert!(matches!(err, Error::InvalidPlan(_)), "{err:?}");
    // Keys outside the scope never produce boundaries outside it.
    let plan = Plan::build_probed(scope(3, 7), Planner::Keyset { rows_per_batch: 1 }, &fake)
        .await
        .unwrap();
    assert_covers(&plan, 3, 7);
    let total: u64 = rows_per_batch(&fake, &plan).await.iter().sum();
    assert_eq!(
        total,
        fake.count(
            &table(),
            &Predicate::Range {
                column: Ident::new("id").unwrap(),
                start: Some(Value::Int(3)),
                end: Some(Value::Int(7)),
            }
        )
        .await
        .unwrap()
    );
}
