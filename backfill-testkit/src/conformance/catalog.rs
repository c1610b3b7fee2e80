//! Conformance cases for the catalog and the reads every write relies on:
//! describing tables, views and sources; counts, checksums, typed samples
//! and key boundaries; key reports.

use backfill_core::warehouse::KeyReport;
use backfill_core::{
    Column, ColumnType, Error, Ident, Predicate, Source, TableRef, TableSchema, Value,
};
use jiff::civil::date;
use jiff::Timestamp;

use super::{
    checksum, daily_plan, day, facts_schema, ident, original_rows, row, seed_table, seed_table_as,
    Env,
};

/// Tables, views and sources describe with their columns and types;
/// unknown ones are `None` or typed errors. An engine that runs SQL has a
/// dialect, and its error for a query over a missing table names it.
pub async fn describe_tables_views_and_sources(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let w = env.warehouse.as_ref();
    let cols = facts_schema().names();
    assert!(!w.engine().is_empty());
    assert_eq!(
        w.dialect().is_some(),
        env.capabilities.runs_sql,
        "runs_sql: an engine runs SQL exactly when it has a dialect"
    );
    let mut want = facts_schema();
    if !env.gate(
        env.capabilities.keeps_not_null,
        "keeps_not_null",
        "a NOT NULL column described as such",
    ) {
        for c in &mut want.columns {
            c.nullable = true;
        }
    }
    assert_eq!(w.describe(&facts).await.expect("describe"), Some(want));
    assert_eq!(
        w.describe(&env.table("nope")).await.expect("describe"),
        None
    );

    let view = env.table("facts_v");
    env.seed.create_view(&view, &facts).await.expect("view");
    let v = w.describe(&view).await.expect("describe").expect("a view");
    assert_eq!(v.names(), cols);

    let q = (env.bounded_source)(&facts, &ident("day"), false);
    let s = w.describe_source(&q).await.expect("describe source");
    assert_eq!(s.names(), cols);
    let ty = |name: &str| s.column(&ident(name)).map(|c| c.ty);
    assert_eq!(ty("day"), Some(ColumnType::Date));
    assert_eq!(ty("note"), Some(ColumnType::Text));
    let s = w
        .describe_source(&Source::Table(facts.clone()))
        .await
        .expect("describe source");
    assert_eq!(s.names(), cols);

    let err = w
        .describe_source(&Source::Table(env.table("nope")))
        .await
        .expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let err = w
        .describe_source(&Source::query("SELECT * FROM nope"))
        .await
        .expect_err("unknown query");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");
    let names_it = "the error for a query over a missing table names the table";
    if env.gate(env.capabilities.runs_sql, "runs_sql", names_it) {
        assert!(
            matches!(err, Error::UnknownTable(ref t) if t == "nope"),
            "{err:?}"
        );
    }
}

/// Counts and checksums follow predicates; a checksum ignores row order
/// and sees one changed value; samples come back typed and ordered, NULLs
/// first; typed predicates bind temporal values; key boundaries are every
/// n-th value in order.
pub async fn counts_checksums_samples_and_boundaries(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let w = env.warehouse.as_ref();
    let p = daily_plan(facts.clone());
    let b = &p.batches[0];
    assert_eq!(count(&env, &facts, &Predicate::All).await, 40);
    assert_eq!(count(&env, &facts, &b.predicate).await, 4);
    let scope = p.scope.predicate().expect("scope predicate");
    assert_eq!(count(&env, &facts, &scope).await, 20);
    let nope = Predicate::In {
        column: ident("nope"),
        values: vec![Value::Int(1)],
    };
    let err = w.count(&facts, &nope).await.expect_err("unknown column");
    assert!(
        matches!(err, Error::UnknownColumn { ref column, .. } if column == "nope"),
        "{err:?}"
    );
    let err = w
        .count(&env.table("nope"), &Predicate::All)
        .await
        .expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    // Same rows in another order and another table: same checksum; one
    // amount changed: another.
    let mut reversed = original_rows();
    reversed.reverse();
    let copy = seed_table(&env, "facts_copy", &reversed).await;
    let a = checksum(&env, &facts).await;
    assert_eq!(a.rows, 40);
    assert_eq!(a, checksum(&env, &copy).await);
    let mut changed = original_rows();
    assert_eq!(changed[6][0], Value::Int(7));
    changed[6][2] = Value::Int(71);
    let changed = seed_table(&env, "facts_changed", &changed).await;
    assert_ne!(a, checksum(&env, &changed).await);
    let slice = w.checksum(&facts, &b.predicate).await.expect("checksum");
    assert_eq!(slice.rows, 4);
    let empty = seed_table(&env, "facts_empty", &[]).await;
    assert_eq!(checksum(&env, &empty).await.rows, 0);

    // Samples come back typed and ordered, NULLs first.
    let nulls = vec![Value::Int(99), Value::Null, Value::Null, Value::Null];
    env.seed
        .insert_rows(&copy, std::slice::from_ref(&nulls))
        .await
        .expect("insert");
    let rows = w
        .sample_rows(&copy, &Predicate::All, &[ident("day"), ident("id")], 3)
        .await
        .expect("sample");
    assert_eq!(rows[0], nulls);
    assert_eq!(rows[1], row(1, day(0), 10, "original"));
    assert_eq!(rows.len(), 3);
    let typed_schema = TableSchema {
        columns: vec![
            Column::new(ident("b"), ColumnType::Bool),
            Column::new(ident("f"), ColumnType::Float),
            Column::new(ident("ts"), ColumnType::DateTime),
            Column::new(ident("tz"), ColumnType::Timestamp),
        ],
    };
    let instant = |s: &str| Value::Timestamp(s.parse::<Timestamp>().expect("instant"));
    let typed_row = vec![
        Value::Bool(true),
        Value::Float(1.5),
        Value::DateTime(date(2026, 3, 1).at(10, 30, 0, 0)),
        instant("2026-03-01T10:30:00Z"),
    ];
    let typed = seed_table_as(
        &env,
        "typed",
        &typed_schema,
        std::slice::from_ref(&typed_row),
    )
    .await;
    let rows = w
        .sample_rows(&typed, &Predicate::All, &[], 10)
        .await
        .expect("sample");
    assert_eq!(rows, vec![typed_row]);
    // Typed predicates bind temporal values.
    let ts_pred = Predicate::Range {
        column: ident("tz"),
        start: Some(instant("2026-03-01T10:00:00Z")),
        end: Some(instant("2026-03-01T11:00:00Z")),
    };
    assert_eq!(count(&env, &typed, &ts_pred).await, 1);
    let dt_pred = Predicate::Range {
        column: ident("ts"),
        start: Some(Value::DateTime(date(2026, 3, 1).at(10, 30, 0, 1_000))),
        end: None,
    };
    assert_eq!(count(&env, &typed, &dt_pred).await, 0);

    // Boundaries: every 3rd id (1st, 4th, 7th, …) among matching rows.
    let (id, all) = (ident("id"), Predicate::All);
    let ids = w.key_boundaries(&facts, &id, &b.predicate, 3).await;
    assert_eq!(ids.expect("bounds"), vec![Value::Int(9), Value::Int(12)]);
    let every_10th = w.key_boundaries(&facts, &id, &all, 10).await;
    let expected: Vec<Value> = [1, 11, 21, 31].into_iter().map(Value::Int).collect();
    assert_eq!(every_10th.expect("bounds"), expected);
    let days = w.key_boundaries(&facts, &ident("day"), &all, 8).await;
    assert_eq!(days.expect("bounds")[1], Value::Date(day(2)));
    assert!(w.key_boundaries(&facts, &id, &all, 0).await.is_err());
}

/// A key report counts rows, NULL keys and duplicated keys (single and
/// composite), with a bounded, ordered sample of the duplicates.
pub async fn key_reports_find_nulls_and_duplicates(env: Env) {
    let facts = seed_table(&env, "facts", &original_rows()).await;
    let r = key_report(&env, &facts, &["id"], 5).await;
    assert_eq!((r.rows, r.null_keys, r.duplicate_keys), (40, 0, 0));
    assert!(r.sample.is_empty());

    // The same rows with two ids repeated and a NULL id.
    let mut nullable = facts_schema();
    nullable.columns[0].nullable = true;
    let mut rows = original_rows();
    rows.extend([
        row(3, day(0), 1, "dup"),
        row(3, day(0), 2, "dup"),
        row(5, day(1), 1, "dup"),
        vec![Value::Null, Value::Date(day(0)), Value::Null, Value::Null],
    ]);
    let keyed = seed_table_as(&env, "facts_keyed", &nullable, &rows).await;
    let r = key_report(&env, &keyed, &["id"], 5).await;
    assert_eq!((r.rows, r.null_keys, r.duplicate_keys), (44, 1, 2));
    assert_eq!(r.sample, vec!["3".to_string(), "5".to_string()]);
    let r = key_report(&env, &keyed, &["id", "day"], 1).await;
    assert_eq!(r.duplicate_keys, 2);
    assert_eq!(r.sample, vec!["3, 2026-03-01".to_string()]);
}

async fn count(env: &Env, t: &TableRef, pred: &Predicate) -> u64 {
    env.warehouse.count(t, pred).await.expect("count")
}

async fn key_report(env: &Env, t: &TableRef, keys: &[&str], sample: usize) -> KeyReport {
    let keys: Vec<Ident> = keys.iter().map(|k| ident(k)).collect();
    env.warehouse
        .key_report(t, &keys, &Predicate::All, sample)
        .await
        .expect("key report")
}
