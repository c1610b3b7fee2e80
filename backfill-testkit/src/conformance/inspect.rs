//! Conformance cases for [`Warehouse::inspect`](backfill_core::warehouse::Warehouse::inspect): each plants known
//! defects (duplicates, a missing day, orphan keys, changed columns,
//! precision noise) and requires the engine to find exactly them.

use backfill_core::ask;
use backfill_core::inspect::{
    Aggregate, Change, Compared, Contribution, Diff, Dim, Metric, MetricValue, Period,
    ProfileGroup, Rows, Tolerance,
};
use backfill_core::{
    Amount, Column, ColumnType, Error, Ident, Predicate, TableRef, TableSchema, Value,
};
use jiff::civil::{date, Date};
use jiff::Timestamp;

use super::{ident, seed_table_as, setup, Env, Pattern};

/// The `lines` table: a composite key (`order_id`, `line`), a day, a
/// float price, an instant, a nullable customer and a status.
pub fn lines_schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(ident("order_id"), ColumnType::Int).not_null(),
            Column::new(ident("line"), ColumnType::Int).not_null(),
            Column::new(ident("day"), ColumnType::Date),
            Column::new(ident("price"), ColumnType::Float),
            Column::new(ident("at"), ColumnType::Timestamp),
            Column::new(ident("customer"), ColumnType::Int),
            Column::new(ident("status"), ColumnType::Text),
        ],
    }
}

const MARCH: Date = date(2026, 3, 5);
const APRIL: Date = date(2026, 4, 2);

fn at(order: i64, extra_ms: i64) -> Value {
    let base: Timestamp = "2026-03-05T10:00:00Z".parse().expect("instant");
    let ms = base.as_millisecond() + order * 3_600_000 + extra_ms;
    Value::Timestamp(Timestamp::from_millisecond(ms).expect("instant"))
}

fn line(
    order: i64,
    line: i64,
    price: f64,
    customer: Option<i64>,
    status: Option<&str>,
) -> Vec<Value> {
    vec![
        Value::Int(order),
        Value::Int(line),
        Value::Date(if order <= 3 { MARCH } else { APRIL }),
        Value::Float(price),
        at(order, 0),
        customer.map_or(Value::Null, Value::Int),
        status.map_or(Value::Null, |s| Value::Text(s.into())),
    ]
}

fn price(order: i64, l: i64) -> f64 {
    (order * 10 + l) as f64 + 0.25
}

/// The old lines: orders 1-3 in March, 4-6 in April, two lines each.
/// Order 3's customer (4) has no row in `customers`; line (6, 2) has no
/// customer; line (5, 1) has no status.
pub fn old_lines() -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for o in 1..=6 {
        for l in 1..=2 {
            let customer = if (o, l) == (6, 2) {
                None
            } else {
                Some(o % 4 + 1)
            };
            let status = if (o, l) == (5, 1) { None } else { Some("paid") };
            rows.push(line(o, l, price(o, l), customer, status));
        }
    }
    rows
}

/// The new lines: (6, 1) removed, (7, 1) added, five lines changed, and
/// two lines with changes inside the diff's tolerances.
pub fn new_lines() -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = old_lines()
        .into_iter()
        .filter(|r| r[0] != Value::Int(6) || r[1] != Value::Int(1))
        .collect();
    let find = |rows: &mut Vec<Vec<Value>>, o: i64, l: i64| -> usize {
        rows.iter()
            .position(|r| r[0] == Value::Int(o) && r[1] == Value::Int(l))
            .expect("line exists")
    };
    // Noise: a billionth on a price, 400 ms on an instant.
    let i = find(&mut rows, 1, 1);
    rows[i][3] = Value::Float(price(1, 1) + 1e-9);
    let i = find(&mut rows, 1, 2);
    rows[i][4] = at(1, 400);
    // Real changes.
    let i = find(&mut rows, 2, 1);
    rows[i][4] = at(2, 3_600_000);
    let i = find(&mut rows, 2, 2);
    rows[i][6] = Value::Text("refunded".into());
    let i = find(&mut rows, 4, 1);
    rows[i][3] = Value::Float(40.0);
    let i = find(&mut rows, 4, 2);
    rows[i][3] = Value::Float(44.25);
    rows[i][6] = Value::Text("refunded".into());
    let i = find(&mut rows, 5, 2);
    rows[i][6] = Value::Null;
    rows.push(line(7, 1, 99.5, Some(1), Some("paid")));
    rows
}

async fn seed_lines(env: &Env, name: &str, rows: &[Vec<Value>]) -> TableRef {
    seed_table_as(env, name, &lines_schema(), rows).await
}

async fn seed_customers(env: &Env) -> TableRef {
    let schema = TableSchema {
        columns: vec![
            Column::new(ident("id"), ColumnType::Int).not_null(),
            Column::new(ident("name"), ColumnType::Text),
        ],
    };
    let rows: Vec<Vec<Value>> = (1..=3)
        .map(|i| vec![Value::Int(i), Value::Text(format!("customer {i}"))])
        .collect();
    seed_table_as(env, "customers", &schema, &rows).await
}

fn keys() -> Vec<Ident> {
    vec![ident("order_id"), ident("line")]
}

fn month() -> Dim {
    Dim::period(ident("day"), Period::Month)
}

fn amount(s: &str) -> Amount {
    s.parse().expect("amount")
}

fn d(v: Date) -> Value {
    Value::Date(v)
}

/// A profile counts rows, distinct key tuples and NULLs per group in one
/// pass, and sees a planted duplicate key as fewer distinct tuples than
/// rows.
pub async fn profile_counts_groups(env: Env) {
    let old = seed_lines(&env, "lines", &old_lines()).await;
    let w = env.warehouse.as_ref();
    let groups = ask::profile(
        w,
        Rows::all(old.clone()),
        vec![month()],
        vec![ident("order_id")],
        vec![ident("customer"), ident("status")],
    )
    .await
    .expect("profile");
    assert_eq!(
        groups,
        vec![
            ProfileGroup {
                key: vec![d(date(2026, 3, 1))],
                rows: 6,
                distinct: Some(3),
                nulls: vec![0, 0],
            },
            ProfileGroup {
                key: vec![d(date(2026, 4, 1))],
                rows: 6,
                distinct: Some(3),
                nulls: vec![1, 1],
            },
        ]
    );

    // A duplicated composite key.
    let mut dup = old_lines();
    dup.push(dup[4].clone());
    let dup_t = seed_lines(&env, "lines_dup", &dup).await;
    let whole = ask::profile(w, Rows::all(dup_t), vec![], keys(), vec![])
        .await
        .expect("profile");
    assert_eq!(whole.len(), 1);
    assert_eq!((whole[0].rows, whole[0].distinct), (13, Some(12)));

    // A filter narrows the rows.
    let march = Predicate::Range {
        column: ident("day"),
        start: Some(d(date(2026, 3, 1))),
        end: Some(d(date(2026, 4, 1))),
    };
    let g = ask::profile(w, Rows::slice(old, march), vec![], vec![], vec![])
        .await
        .expect("profile");
    assert_eq!((g[0].rows, g[0].distinct), (6, None));
}

/// A spine answers 0 for an expected day with no rows, rather than
/// leaving it out.
pub async fn spine_shows_missing_day(env: Env) {
    let old = seed_lines(&env, "lines", &old_lines()).await;
    let expected = vec![d(MARCH), d(date(2026, 3, 6)), d(APRIL)];
    let got = ask::spine(
        env.warehouse.as_ref(),
        Rows::all(old),
        Dim::column(ident("day")),
        expected,
    )
    .await
    .expect("spine");
    assert_eq!(
        got,
        vec![(d(MARCH), 6), (d(date(2026, 3, 6)), 0), (d(APRIL), 6)]
    );
}

/// Orphans are non-null foreign keys with no parent row: exactly order
/// 3's two lines (customer 4); the line with no customer is not one.
pub async fn orphans_found(env: Env) {
    let old = seed_lines(&env, "lines", &old_lines()).await;
    let parent = seed_customers(&env).await;
    let (rows, sample) = ask::orphans(
        env.warehouse.as_ref(),
        Rows::all(old),
        vec![ident("customer")],
        parent,
        vec![ident("id")],
        5,
    )
    .await
    .expect("orphans");
    assert_eq!((rows, sample), (2, vec!["4".to_string()]));
}

/// Metrics are exact sums and counts grouped by period and dimension.
pub async fn metric_by_period_and_dim(env: Env) {
    let old = seed_lines(&env, "lines", &old_lines()).await;
    let w = env.warehouse.as_ref();
    let sum = Metric {
        name: "revenue".into(),
        aggregate: Aggregate::Sum(ident("price")),
        by: vec![month(), Dim::column(ident("status"))],
    };
    let got = ask::metric(w, Rows::all(old.clone()), sum)
        .await
        .expect("metric");
    let mv = |m: Date, s: Option<&str>, v: &str| MetricValue {
        key: vec![d(m), s.map_or(Value::Null, |s| Value::Text(s.into()))],
        value: amount(v),
    };
    assert_eq!(
        got,
        vec![
            mv(date(2026, 3, 1), Some("paid"), "130.5"),
            mv(date(2026, 4, 1), Some("paid"), "259.25"),
            mv(date(2026, 4, 1), None, "51.25"),
        ]
    );
    let count = Metric {
        name: "lines".into(),
        aggregate: Aggregate::Count,
        by: vec![],
    };
    let got = ask::metric(w, Rows::all(old), count).await.expect("metric");
    assert_eq!(
        got,
        vec![MetricValue {
            key: vec![],
            value: amount("12")
        }]
    );
}

fn lines_diff(old: TableRef, new: TableRef, sample: usize) -> Diff {
    Diff {
        old: Rows::all(old),
        new: Rows::all(new),
        keys: keys(),
        columns: vec![
            Compared {
                column: ident("price"),
                tolerance: Some(Tolerance::Absolute(1e-6)),
            },
            Compared {
                column: ident("at"),
                tolerance: Some(Tolerance::Seconds(1.0)),
            },
            Compared::exact(ident("status")),
            Compared::exact(ident("customer")),
        ],
        sample,
        attribute: None,
        partition: None,
    }
}

/// A diff on a composite key classifies every row, counts changes per
/// column, ignores noise within tolerance, treats NULL = NULL as equal,
/// and samples keys deterministically.
pub async fn diff_classifies_rows(env: Env) {
    let old = seed_lines(&env, "lines_old", &old_lines()).await;
    let new = seed_lines(&env, "lines_new", &new_lines()).await;
    let w = env.warehouse.as_ref();
    let r = ask::diff(w, lines_diff(old.clone(), new.clone(), 3))
        .await
        .expect("diff");
    assert_eq!(
        (
            r.old_rows,
            r.new_rows,
            r.added,
            r.removed,
            r.changed,
            r.unchanged
        ),
        (12, 12, 1, 1, 5, 6)
    );
    assert_eq!(
        r.column_changes,
        vec![
            (ident("price"), 2),
            (ident("at"), 1),
            (ident("status"), 3),
            (ident("customer"), 0),
        ]
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        r.samples,
        vec![
            (Change::Added, s(&["7, 1"])),
            (Change::Removed, s(&["6, 1"])),
            (Change::Changed, s(&["2, 1", "2, 2", "4, 1"])),
        ]
    );
    assert!(r.contributions.is_empty());

    // The fast path (per-partition counts and hash sums first) answers
    // the same, with a partition that did not change (customer 4) and a
    // NULL partition.
    for p in [Dim::column(ident("customer")), month()] {
        let mut fast = lines_diff(old.clone(), new.clone(), 3);
        fast.partition = Some(p);
        let f = ask::diff(w, fast).await.expect("fast diff");
        assert_eq!(f, r, "fast path");
    }

    // Without tolerances the noise is change.
    let mut exact = lines_diff(old.clone(), new.clone(), 0);
    for c in &mut exact.columns {
        c.tolerance = None;
    }
    let r = ask::diff(w, exact).await.expect("diff");
    assert_eq!((r.changed, r.unchanged), (7, 4));
    assert!(r.samples.iter().all(|(_, keys)| keys.is_empty()));

    // Identical tables: nothing differs.
    let same = ask::diff(w, lines_diff(old.clone(), old, 3))
        .await
        .expect("diff");
    assert_eq!(
        (same.added, same.removed, same.changed, same.unchanged),
        (0, 0, 0, 12)
    );
}

/// A diff attributes a metric's change to added, removed and changed
/// rows per group; a changed row that moves between groups takes its old
/// value out of one and puts its new value into the other.
pub async fn diff_attributes_metric(env: Env) {
    let old = seed_lines(&env, "lines_old", &old_lines()).await;
    let new = seed_lines(&env, "lines_new", &new_lines()).await;
    let mut diff = lines_diff(old, new, 0);
    diff.attribute = Some(Metric {
        name: "revenue".into(),
        aggregate: Aggregate::Sum(ident("price")),
        by: vec![month(), Dim::column(ident("status"))],
    });
    let r = ask::diff(env.warehouse.as_ref(), diff).await.expect("diff");
    let c = |m: Date, s: Option<&str>, added: &str, removed: &str, changed: &str| Contribution {
        key: vec![d(m), s.map_or(Value::Null, |s| Value::Text(s.into()))],
        added: amount(added),
        removed: amount(removed),
        changed: amount(changed),
    };
    let (mar, apr) = (date(2026, 3, 1), date(2026, 4, 1));
    assert_eq!(
        r.contributions,
        vec![
            c(mar, Some("paid"), "0", "0", "-22.25"),
            c(mar, Some("refunded"), "0", "0", "22.25"),
            c(apr, Some("paid"), "99.5", "-61.25", "-95.75"),
            c(apr, Some("refunded"), "0", "0", "44.25"),
            c(apr, None, "0", "0", "52.25"),
        ]
    );
}

/// After a real run, the pre-image diffed against the target over the
/// scope shows exactly the source's changes, and attributes the amount's
/// change exactly.
pub async fn pre_image_diff_after_run(env: Env) {
    let case = setup(env, Pattern::Overwrite, "preimage").await;
    case.run_and_cut_over(&case.runner()).await.expect("run");
    let scope = case.job.plan.scope.predicate().expect("scope");
    let pre = case
        .target
        .sibling(&format!("__bf_pre_{}", case.job.run_id))
        .expect("pre-image name");
    let diff = Diff {
        old: Rows::pre_image(pre, scope.clone()),
        new: Rows::slice(case.target.clone(), scope),
        keys: vec![ident("id")],
        columns: vec![
            Compared::exact(ident("amount")),
            Compared::exact(ident("note")),
        ],
        sample: 2,
        attribute: Some(Metric {
            name: "amount".into(),
            aggregate: Aggregate::Sum(ident("amount")),
            by: vec![],
        }),
        partition: Some(Dim::column(ident("day"))),
    };
    let r = ask::diff(case.env.warehouse.as_ref(), diff)
        .await
        .expect("diff");
    assert_eq!(
        (
            r.old_rows,
            r.new_rows,
            r.added,
            r.removed,
            r.changed,
            r.unchanged
        ),
        (20, 20, 1, 1, 19, 0)
    );
    assert_eq!(
        r.column_changes,
        vec![(ident("amount"), 19), (ident("note"), 19)]
    );
    // Samples follow the key's own order (9 before 10), not text order.
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        r.samples,
        vec![
            (Change::Added, s(&["1000"])),
            (Change::Removed, s(&["13"])),
            (Change::Changed, s(&["9", "10"])),
        ]
    );
    assert_eq!(
        r.contributions,
        vec![Contribution {
            key: vec![],
            added: amount("5"),
            removed: amount("-130"),
            changed: amount("19"),
        }]
    );
}

/// Unknown tables and columns are typed errors, and size comes from the
/// engine's catalog.
pub async fn unknown_names_and_size(env: Env) {
    let old = seed_lines(&env, "lines", &old_lines()).await;
    let w = env.warehouse.as_ref();
    let missing = env.table("no_such_table");
    let err = ask::size(w, missing.clone()).await.expect_err("unknown");
    assert!(matches!(err, Error::UnknownTable(_)), "{err}");
    let err = ask::metric(
        w,
        Rows::all(old.clone()),
        Metric {
            name: "x".into(),
            aggregate: Aggregate::Sum(ident("no_such_column")),
            by: vec![],
        },
    )
    .await
    .expect_err("unknown column");
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err}");
    let diff = lines_diff(old.clone(), missing, 1);
    let err = ask::diff(w, diff).await.expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable(_)), "{err}");
    // The diff's temporary table does not outlive a diff.
    assert!(w
        .describe(&env.table(backfill_core::sql::inspect::DIFF_TABLE))
        .await
        .expect("describe")
        .is_none());

    let size = ask::size(w, old).await.expect("size");
    // Catalog row counts are estimates; an engine that has not gathered
    // statistics yet reports 0.
    assert!(size.rows == 12 || size.rows == 0, "{size:?}");
    assert!(size.bytes.is_none_or(|b| b > 0), "{size:?}");
}
