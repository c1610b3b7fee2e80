//! Integration tests of the PostgreSQL adapter against a real server:
//! every Warehouse method's contract, the PostgreSQL ledger (mirrored
//! against MemoryLedger), in-transaction ledger marks with fencing,
//! several workers sharing one run, load signals, the testkit's
//! conformance suite, and end-to-end runs through the Runner.
//!
//! The server comes from `BACKFILL_PG_URL` (a libpq connection string):
//! run `./scripts/with-postgres.sh cargo test -p backfill-postgres` or
//! `./scripts/test.sh`. Without it the tests skip with a message, unless
//! `CI` is set, where they fail. Each test works in a schema of its own
//! (`t_<test>_<pid>`), so tests run in parallel.
//!
//! This is the crate's only integration test file; put new tests here.

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
use backfill_postgres::{PgLedger, PgWarehouse};

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

async fn seed(w: &PgWarehouse, name: &str, rows: &[Vec<Value>]) -> TableRef {
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

async fn checksum(w: &PgWarehouse, t: &TableRef) -> backfill_core::warehouse::Checksum {
    w.checksum(t, &Predicate::All).await.unwrap()
}

/// A test's warehouse (in a fresh schema of its own, which is also the
/// connections' search path) with `facts` and `facts_fix` seeded; `None`
/// when there is no server to test against.
async fn setup(test: &str) -> Option<(PgWarehouse, TableRef, TableRef)> {
    let w = fresh(test).await?;
    let facts = seed(&w, "facts", &original_rows()).await;
    let fix = seed(&w, "facts_fix", &fixed_rows()).await;
    Some((w, facts, fix))
}

// ---------------------------------------------------------------------------
// The server: BACKFILL_PG_URL, one schema per test
// ---------------------------------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The server's connection string; `None` (with a message) when unset,
/// a panic when unset under CI.
fn pg_url(test: &str) -> Option<String> {
    match std::env::var("BACKFILL_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if in_ci() => panic!(
            "{test}: BACKFILL_PG_URL is not set, and CI is: the PostgreSQL tests must run \
             against a server; run them via ./scripts/with-postgres.sh or ./scripts/test.sh"
        ),
        _ => {
            eprintln!(
                "skipping {test}: BACKFILL_PG_URL is not set; run via ./scripts/with-postgres.sh \
                 cargo test -p backfill-postgres, or ./scripts/test.sh"
            );
            None
        }
    }
}

/// The schema of one test: `t_<test>_<pid>`, at most 63 bytes.
fn schema_name(test: &str) -> String {
    let pid = std::process::id();
    let mut base = format!("t_{test}");
    base.truncate(63 - 1 - pid.to_string().len());
    format!("{base}_{pid}")
}

/// A pool on the server with `schema` as the search path.
fn pool(url: &str, schema: &str, size: usize) -> backfill_postgres::deadpool_postgres::Pool {
    use backfill_postgres::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let mut cfg: backfill_postgres::tokio_postgres::Config = url.parse().unwrap();
    cfg.options(format!("-c search_path={schema}"));
    let mgr = Manager::from_config(
        cfg,
        backfill_postgres::tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr).max_size(size).build().unwrap()
}

/// Drops and creates a test's schema; returns the server's URL and the
/// schema's name.
async fn fresh_schema(test: &str) -> Option<(String, String)> {
    let url = pg_url(test)?;
    let schema = schema_name(test);
    let admin = PgWarehouse::connect(&url).await.unwrap();
    admin
        .execute_batch(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\""
        ))
        .await
        .unwrap();
    Some((url, schema))
}

/// A warehouse in a fresh schema of its own.
async fn fresh(test: &str) -> Option<PgWarehouse> {
    let (url, schema) = fresh_schema(test).await?;
    Some(PgWarehouse::from_pool(pool(&url, &schema, 8)))
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
    let Some((w, facts, _)) = setup("describe_tables_views_and_sources").await else {
        return;
    };
    assert_eq!(w.engine(), "postgres");
    assert!(w.dialect().is_some());
    assert_eq!(w.describe(&facts).await.unwrap(), Some(facts_schema()));
    assert_eq!(w.describe(&tr("nope")).await.unwrap(), None);

    w.create_view(&tr("facts_v"), &facts).await.unwrap();
    let v = w.describe(&tr("facts_v")).await.unwrap().unwrap();
    assert_eq!(v.names(), cols());

    // Materialized views are relations too (information_schema omits them).
    w.execute_batch(
        "CREATE MATERIALIZED VIEW facts_mv AS \
         SELECT id, day, amount::numeric(18,2) AS amount, now() AS at FROM facts",
    )
    .await
    .unwrap();
    let mv = w.describe(&tr("facts_mv")).await.unwrap().unwrap();
    let types: Vec<(String, ColumnType)> = mv
        .columns
        .iter()
        .map(|c| (c.name.to_string(), c.ty))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id".to_string(), ColumnType::Int),
            ("day".to_string(), ColumnType::Date),
            ("amount".to_string(), ColumnType::Decimal),
            ("at".to_string(), ColumnType::Timestamp),
        ]
    );

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

    // Every type maps, in a schema of its own; query sources map too.
    let other = format!("{}_o", schema_name("describe"));
    w.execute_batch(format!(
        "DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other}; \
         CREATE TABLE {other}.typed (b BOOLEAN, i INTEGER, h BIGINT, s SMALLINT, \
         f DOUBLE PRECISION, r REAL, n NUMERIC(10,2), t VARCHAR(10), c CHAR(3), x TEXT, \
         d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, j INTEGER[], u UUID)"
    ))
    .await
    .unwrap();
    let typed_t = TableRef::qualified(id(&other), id("typed"));
    let typed = w.describe(&typed_t).await.unwrap().unwrap();
    let tys: Vec<ColumnType> = typed.columns.iter().map(|c| c.ty).collect();
    use ColumnType::*;
    let expected = vec![
        Bool, Int, Int, Int, Float, Float, Decimal, Text, Text, Text, Date, DateTime, Timestamp,
        Other, Other,
    ];
    assert_eq!(tys, expected);
    let q = Source::query(format!("SELECT * FROM {other}.typed"));
    let s = w.describe_source(&q).await.unwrap();
    assert_eq!(s.columns.iter().map(|c| c.ty).collect::<Vec<_>>(), expected);
    // An unqualified name is looked up in the current schema only.
    assert_eq!(w.describe(&tr("typed")).await.unwrap(), None);
    w.execute_batch(format!("DROP SCHEMA {other} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_checksums_samples_and_boundaries() {
    let Some((w, facts, _)) = setup("counts_checksums_samples_and_boundaries").await else {
        return;
    };
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
        "CREATE TABLE typed (b BOOLEAN, f DOUBLE PRECISION, n NUMERIC(10,2), ts TIMESTAMP, \
         tz TIMESTAMPTZ, j INTEGER[], i INTEGER, r REAL, sm SMALLINT, big NUMERIC); \
         INSERT INTO typed VALUES (true, 1.5, 2.25, TIMESTAMP '2026-03-01 10:30:00', \
         TIMESTAMPTZ '2026-03-01 10:30:00+00', '{1,2}', 7, 0.5, -3, -12345678901234567890.000100)",
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
            Value::Text("{1,2}".into()),
            Value::Int(7),
            Value::Float(0.5),
            Value::Int(-3),
            Value::Text("-12345678901234567890.000100".into()),
        ]
    );
    // An Int binds to int4 and numeric columns, a Float to real.
    let p = |c: &str, v: Value| Predicate::In {
        column: id(c),
        values: vec![v],
    };
    assert_eq!(
        w.count(&tr("typed"), &p("i", Value::Int(7))).await.unwrap(),
        1
    );
    assert_eq!(
        w.count(&tr("typed"), &p("sm", Value::Int(-3)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.count(&tr("typed"), &p("r", Value::Float(0.5)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.count(&tr("typed"), &p("n", Value::Float(2.25)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.count(&tr("typed"), &p("n", Value::Int(2))).await.unwrap(),
        0
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
    let Some((w, facts, _)) = setup("key_reports_find_nulls_and_duplicates").await else {
        return;
    };
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
    let Some((w, facts, fix)) = setup("overwrite_guards_snapshots_and_restores").await else {
        return;
    };
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
    let Some((w, facts, _)) = setup("overwrite_reads_the_source_before_deleting").await else {
        return;
    };
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
    let Some((w, facts, _)) = setup("merge_refuses_bad_keys_then_upserts_and_restores").await
    else {
        return;
    };
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
    let Some((w, facts, fix)) = setup("copies_swaps_views_drops_and_stages").await else {
        return;
    };
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

    // swap: PostgreSQL views bind tables by identity, so a view reading
    // the target keeps reading the old table (now kept as `facts_old`).
    w.create_view(&tr("facts_v"), &facts).await.unwrap();
    w.execute_batch("DELETE FROM facts_stage WHERE id > 20")
        .await
        .unwrap();
    let staged = checksum(&w, &stage).await;
    let old = tr("facts_old");
    w.swap(&facts, &stage, &old).await.unwrap();
    assert_eq!(checksum(&w, &facts).await, staged);
    assert_eq!(checksum(&w, &old).await, original);
    assert_eq!(checksum(&w, &tr("facts_v")).await, original);
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
    // A view whose columns change is dropped and created in one step.
    w.execute_batch("CREATE TABLE narrow AS SELECT id, note FROM facts")
        .await
        .unwrap();
    w.point_view(&tr("facts_v3"), &facts).await.unwrap();
    w.point_view(&tr("facts_v3"), &tr("narrow")).await.unwrap();
    let v3 = w.describe(&tr("facts_v3")).await.unwrap().unwrap();
    assert_eq!(v3.names(), vec![id("id"), id("note")]);
    w.point_view(&tr("facts_v3"), &facts).await.unwrap();
    assert_eq!(checksum(&w, &tr("facts_v3")).await, original);

    // The copy keeps primary keys and indexes, so a swapped-in stage
    // serves the same queries.
    w.execute_batch(
        "CREATE TABLE keyed (id BIGINT PRIMARY KEY, v TEXT NOT NULL DEFAULT 'x' CHECK (v <> '')); \
         CREATE INDEX keyed_v ON keyed (v); INSERT INTO keyed VALUES (1, 'a'), (2, 'b')",
    )
    .await
    .unwrap();
    w.create_copy(&tr("keyed"), &tr("keyed_copy"), true)
        .await
        .unwrap();
    let c = w.client().await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'keyed_copy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "primary key and index copied");
    let err = c
        .execute("INSERT INTO keyed_copy VALUES (1, 'dup')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&backfill_postgres::tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err:?}"
    );
    drop(c);

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

/// A ledger in a fresh schema named after the test.
async fn pg_ledger(test: &str, clock: Arc<ManualClock>) -> Option<(PgWarehouse, PgLedger)> {
    let w = fresh(test).await?;
    let l = w
        .ledger_with_clock(&schema_name(test), clock)
        .await
        .unwrap();
    Some((w, l))
}

/// The same script against MemoryLedger and PgLedger gives the same
/// answers, step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mirrors_memory_ledger() {
    let clock = backfill_testkit::conformance::ledger_clock();
    let Some((_w, l)) = pg_ledger("ledger_mirrors_memory_ledger", clock.clone()).await else {
        return;
    };
    backfill_testkit::conformance::ledger_mirrors_memory(&l, &clock).await;
    assert!(l
        .tx_mark(&RunId::new("mirror").unwrap(), &plan().batches[0].id, 1)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_refuses_and_fences() {
    let clock = Arc::new(ManualClock::new(t0()));
    let Some((_w, l)) = pg_ledger("ledger_refuses_and_fences", clock.clone()).await else {
        return;
    };
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
    let schema = schema_name("ledger_refuses_and_fences");
    assert_eq!(l.schema().as_str(), schema);
    assert_eq!(
        l.table("batches").unwrap().to_string(),
        format!("{schema}.batches")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_mark_the_ledger_in_the_same_transaction() {
    let Some((w, facts, fix)) = setup("writes_mark_the_ledger_in_the_same_transaction").await
    else {
        return;
    };
    let clock = Arc::new(ManualClock::new(t0()));
    let l = w
        .ledger_with_clock(
            &schema_name("writes_mark_the_ledger_in_the_same_transaction"),
            clock.clone(),
        )
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
    let other = fresh("writes_mark_foreign")
        .await
        .unwrap()
        .ledger(&schema_name("writes_mark_foreign"))
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
    let Some((w, facts, _)) = setup("runner_overwrites_daily_partitions_end_to_end").await else {
        return;
    };
    let original = checksum(&w, &facts).await;
    let expected_t = seed(&w, "facts_expected", &expected_replace()).await;
    let expected = checksum(&w, &expected_t).await;
    let ledger = Arc::new(
        w.ledger(&schema_name(
            "runner_overwrites_daily_partitions_end_to_end",
        ))
        .await
        .unwrap(),
    );
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
    let Some((w, facts, fix)) = setup("runner_stages_the_source_once_and_merges").await else {
        return;
    };
    let original = checksum(&w, &facts).await;
    let ledger = Arc::new(
        w.ledger(&schema_name("runner_stages_the_source_once_and_merges"))
            .await
            .unwrap(),
    );
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

// ---------------------------------------------------------------------------
// Timeouts and locks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_transient_and_write_nothing() {
    let Some((w, facts, _)) = setup("timeouts_are_transient_and_write_nothing").await else {
        return;
    };
    let original = checksum(&w, &facts).await;
    let run = RunId::new("slow").unwrap();
    let p = plan();
    let b = &p.batches[0]; // day 2: ids 9..12
    let columns = cols();
    assert_eq!(
        w.timeouts(),
        (Duration::from_secs(600), Duration::from_secs(10))
    );

    // statement_timeout: a slow source is cancelled.
    let slow = Source::query("SELECT * FROM facts_fix WHERE pg_sleep(0.05) IS NOT NULL");
    let short = w.clone().with_statement_timeout(Duration::from_millis(200));
    let err = short
        .overwrite_slice(&write(&run, b, &facts, &slow, &columns, None))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("57014"), "{err}");
    assert_eq!(checksum(&w, &facts).await, original);

    // lock_timeout: a row of the slice is locked by another session.
    let holder = w.client().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM facts WHERE id = 9 FOR UPDATE")
        .await
        .unwrap();
    let impatient = w.clone().with_lock_timeout(Duration::from_millis(100));
    let src = Source::Table(tr("facts_fix"));
    let err = impatient
        .overwrite_slice(&write(&run, b, &facts, &src, &columns, None))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("55P03"), "{err}");
    assert_eq!(checksum(&w, &facts).await, original);

    // A swap that cannot take its lock gives up with a clear, transient
    // error naming the table and the lock timeout.
    let stage = tr("facts_stage");
    w.create_copy(&facts, &stage, true).await.unwrap();
    holder
        .batch_execute("ROLLBACK; BEGIN; SELECT count(*) FROM facts")
        .await
        .unwrap();
    let swapper = w.clone().with_swap_lock(Duration::from_millis(100), 2);
    let err = swapper
        .swap(&facts, &stage, &tr("facts_old"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("swap of facts") && msg.contains("100ms") && msg.contains("2 attempt"),
        "{msg}"
    );
    assert!(
        w.describe(&stage).await.unwrap().is_some(),
        "nothing swapped"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);
    swapper
        .swap(&facts, &stage, &tr("facts_old"))
        .await
        .unwrap();
    assert_eq!(checksum(&w, &facts).await, original);
}

// ---------------------------------------------------------------------------
// Several workers, one run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_get_distinct_batches() {
    let test = "concurrent_claims_get_distinct_batches";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(t0()));
    let p = plan();
    let run = RunId::new("claims").unwrap();
    let mut ledgers = Vec::new();
    for _ in 0..6 {
        let w = PgWarehouse::from_pool(pool(&url, &schema, 2));
        ledgers.push(w.ledger_with_clock(&schema, clock.clone()).await.unwrap());
    }
    // Everyone begins the same run at once: one plans, the others resume.
    let starts = futures_join(
        ledgers
            .iter()
            .map(|l| {
                let l = l.clone();
                let batches = p.batches.clone();
                async move { l.begin_run(&record("claims", "fp"), &batches).await }
            })
            .collect(),
    )
    .await;
    let starts: Vec<RunStart> = starts.into_iter().map(|s| s.unwrap()).collect();
    assert_eq!(starts.iter().filter(|s| **s == RunStart::New).count(), 1);
    // Six claims at once on five batches: five distinct batches, one none.
    let claims = futures_join(
        ledgers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (l, run) = (l.clone(), run.clone());
                async move {
                    l.claim(&run, &format!("w{i}"), Duration::from_secs(60), None)
                        .await
                }
            })
            .collect(),
    )
    .await;
    let mut ids: Vec<String> = claims
        .into_iter()
        .filter_map(|c| c.unwrap())
        .map(|c| {
            assert_eq!((c.token, c.attempt), (1, 1));
            c.batch.id.0
        })
        .collect();
    ids.sort();
    let mut all: Vec<String> = p.batches.iter().map(|b| b.id.0.clone()).collect();
    all.sort();
    assert_eq!(ids, all);
    let log = ledgers[0].transitions(&run).await.unwrap();
    let claimed = log
        .iter()
        .filter(|t| t.batch_id.is_some() && t.to == "running")
        .count();
    assert_eq!(claimed, 5);
}

/// Runs the futures concurrently (each on its own task) and collects
/// their outputs in order.
async fn futures_join<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

const WORKER_DAYS: i8 = 24;
const WORKER_ROWS_PER_DAY: i64 = 25;

fn worker_rows(fixed: bool) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for d in 0..WORKER_DAYS {
        for k in 0..WORKER_ROWS_PER_DAY {
            let i = i64::from(d) * WORKER_ROWS_PER_DAY + k + 1;
            let dd = date(2026, 1, 1) + backfill_core::jiff::Span::new().days(i64::from(d));
            if fixed {
                rows.push(row(i, dd, i * 10 + 1, "fixed"));
            } else {
                rows.push(row(i, dd, i * 10, "original"));
            }
        }
    }
    rows
}

/// A job over every day of the worker tables, with the source in
/// `facts_fix`.
fn worker_job(run: &str) -> Backfill {
    let end = date(2026, 1, 1) + backfill_core::jiff::Span::new().days(i64::from(WORKER_DAYS));
    let scope = Scope::new(
        tr("facts"),
        "day",
        Bounds::dates(date(2026, 1, 1), end),
        "UTC",
    )
    .unwrap();
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).unwrap();
    Backfill::new(
        RunId::new(run).unwrap(),
        brief(scope, StrategySpec::PartitionOverwrite),
        plan,
        Source::Table(tr("facts_fix")),
    )
}

/// A worker process: its own pool, warehouse and ledger handle on the
/// shared schema, and a runner with concurrency 1 under its own name.
async fn worker(url: &str, schema: &str, name: &str, clock: Arc<ManualClock>) -> Runner {
    let w = PgWarehouse::from_pool(pool(url, schema, 3));
    let ledger = w.ledger_with_clock(schema, clock).await.unwrap();
    let options = backfill_core::RunOptions {
        worker: name.to_string(),
        concurrency: 1,
        lease: Duration::from_secs(60),
        ..backfill_testkit::conformance::fast_options()
    };
    Runner::new(Arc::new(w), Arc::new(ledger)).with_options(options)
}

/// Seeds the worker tables; returns the warehouse and the expected
/// checksum.
async fn seed_workers(
    url: &str,
    schema: &str,
) -> (PgWarehouse, backfill_core::warehouse::Checksum) {
    let w = PgWarehouse::from_pool(pool(url, schema, 2));
    seed(&w, "facts", &worker_rows(false)).await;
    seed(&w, "facts_fix", &worker_rows(true)).await;
    let expected = seed(&w, "facts_expected", &worker_rows(true)).await;
    let sum = checksum(&w, &expected).await;
    (w, sum)
}

/// Every batch went running -> written exactly once; returns the
/// transitions.
async fn assert_written_once(
    l: &dyn Ledger,
    job: &Backfill,
) -> Vec<backfill_core::ledger::Transition> {
    let log = l.transitions(&job.run_id).await.unwrap();
    for b in &job.plan.batches {
        let n = log
            .iter()
            .filter(|t| {
                t.batch_id.as_ref() == Some(&b.id) && t.from == "running" && t.to == "written"
            })
            .count();
        assert_eq!(n, 1, "batch {} written {n} times: {log:#?}", b.id);
    }
    log
}

async fn assert_complete(w: &PgWarehouse, expected: &backfill_core::warehouse::Checksum) {
    let facts = tr("facts");
    let keys = w
        .key_report(&facts, &[id("id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!(keys.duplicate_keys, 0, "{keys:?}");
    assert_eq!(
        keys.rows,
        (i64::from(WORKER_DAYS) * WORKER_ROWS_PER_DAY) as u64
    );
    assert_eq!(&checksum(w, &facts).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_one_run_and_write_each_batch_once() {
    let test = "workers_share_one_run_and_write_each_batch_once";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let (w, expected) = seed_workers(&url, &schema).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let job = worker_job("shared");
    let mut handles = Vec::new();
    for i in 0..4 {
        let runner = worker(&url, &schema, &format!("w{i}"), clock.clone()).await;
        let job = job.clone();
        handles.push(tokio::spawn(async move { runner.run(&job).await }));
    }
    let mut this_run = 0;
    for h in handles {
        let report = h.await.unwrap().unwrap();
        this_run += report.batches_this_run;
    }
    assert_eq!(
        this_run,
        job.plan.batches.len(),
        "each batch done by one worker"
    );
    let ledger = w.ledger_with_clock(&schema, clock.clone()).await.unwrap();
    let log = assert_written_once(&ledger, &job).await;
    assert_eq!(
        log.iter()
            .filter(|t| t.batch_id.is_some() && t.to == "running")
            .count(),
        job.plan.batches.len(),
        "each batch claimed once"
    );
    let records = ledger.batches(&job.run_id).await.unwrap();
    assert!(records.iter().all(|r| r.state == BatchState::Validated));
    let workers: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.lease.as_ref().map(|l| l.worker.clone()))
        .collect();
    assert!(workers.len() >= 2, "work was shared: {workers:?}");
    assert_complete(&w, &expected).await;
    assert_eq!(
        ledger.run(&job.run_id).await.unwrap().rows_affected,
        (i64::from(WORKER_DAYS) * WORKER_ROWS_PER_DAY) as u64
    );
    // Whichever worker finished last, one more pass settles the run.
    let last = worker(&url, &schema, "closer", clock).await;
    let report = last.run(&job).await.unwrap();
    assert_eq!(report.batches_this_run, 0);
    assert_eq!(report.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_workers_batch_is_taken_over_and_its_late_commit_refused() {
    let test = "a_dead_workers_batch_is_taken_over";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let (w, expected) = seed_workers(&url, &schema).await;
    let original = checksum(&w, &tr("facts")).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let job = worker_job("takeover");

    // The doomed worker starts the run, claims the first batch and dies
    // before writing it.
    let doomed_w = PgWarehouse::from_pool(pool(&url, &schema, 2));
    let doomed = doomed_w
        .ledger_with_clock(&schema, clock.clone())
        .await
        .unwrap();
    doomed.lock_target(job.target(), &job.run_id).await.unwrap();
    let rec = RunRecord {
        run_id: job.run_id.clone(),
        target: job.target().clone(),
        fingerprint: job.fingerprint(),
        code_version: job.code_version.clone(),
        parameters: job.parameters.clone(),
        operator: job.brief.operator.clone(),
        status: RunStatus::Running,
        started_at: t0(),
        finished_at: None,
        rows_affected: 0,
        notes: vec![],
    };
    doomed.begin_run(&rec, &job.plan.batches).await.unwrap();
    let claim = doomed
        .claim(&job.run_id, "doomed", Duration::from_secs(60), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claim.batch.seq, claim.token), (0, 1));

    // Before the lease expires, the others leave the batch alone.
    let early = worker(&url, &schema, "early", clock.clone()).await;
    let report = early.run(&job).await.unwrap();
    assert_eq!(report.batches_this_run, job.plan.batches.len() - 1);
    assert_eq!(report.gaps, vec![claim.batch.id.clone()]);

    // After it expires, the next worker takes the batch over and finishes.
    clock.advance(Duration::from_secs(61));
    let mut handles = Vec::new();
    for i in 0..4 {
        let runner = worker(&url, &schema, &format!("w{i}"), clock.clone()).await;
        let job = job.clone();
        handles.push(tokio::spawn(async move { runner.run(&job).await }));
    }
    let mut this_run = 0;
    for h in handles {
        this_run += h.await.unwrap().unwrap().batches_this_run;
    }
    assert_eq!(this_run, 1, "only the abandoned batch was left");
    assert_complete(&w, &expected).await;
    let log = assert_written_once(&doomed, &job).await;
    let first: Vec<(&str, &str)> = log
        .iter()
        .filter(|t| t.batch_id.as_ref() == Some(&claim.batch.id))
        .map(|t| (t.from.as_str(), t.to.as_str()))
        .collect();
    assert_eq!(
        first,
        vec![
            ("pending", "running"),
            ("running", "running"),
            ("running", "written"),
            ("written", "validated")
        ]
    );
    assert!(log
        .iter()
        .any(|t| t.reason.contains("taken over") && t.reason.contains("(expired)")));

    // The stale worker wakes up and commits: refused, nothing changes.
    let after = checksum(&w, &tr("facts")).await;
    assert_ne!(after, original);
    let mark = doomed
        .tx_mark(&job.run_id, &claim.batch.id, claim.token)
        .unwrap();
    let fix = Source::Table(tr("facts_fix"));
    let columns = cols();
    let pre = tr("facts__bf_pre_takeover");
    let mut late = write(
        &job.run_id,
        &claim.batch,
        job.target(),
        &fix,
        &columns,
        Some(&pre),
    );
    late.mark = Some(&mark);
    let err = doomed_w.overwrite_slice(&late).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { token: 1, .. }), "{err:?}");
    let err = doomed
        .transition(
            &job.run_id,
            &claim.batch.id,
            Some(claim.token),
            BatchState::Written,
            BatchUpdate::reason("late"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(checksum(&w, &tr("facts")).await, after);
    assert_complete(&w, &expected).await;
    // The pre-image holds each batch's original rows once, so rollback
    // restores the exact prior table.
    assert_eq!(
        w.count(&pre, &Predicate::All).await.unwrap(),
        (i64::from(WORKER_DAYS) * (WORKER_ROWS_PER_DAY + 1)) as u64
    );
    early.rollback(&job).await.unwrap();
    assert_eq!(checksum(&w, &tr("facts")).await, original);
}

// ---------------------------------------------------------------------------
// Load signals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_read_activity_replication_and_probes() {
    use backfill_core::{Event, Load, LoadSignal};
    use backfill_postgres::Thresholds;
    let Some((w, facts, _)) = setup("signals_read_activity_replication_and_probes").await else {
        return;
    };

    // Replication: a server without replicas reads Ok, and says so.
    let lag = w.replication_lag_signal(Duration::from_secs(1), Duration::from_secs(10));
    let r = lag.replication().await.unwrap();
    assert_eq!((r.replicas, r.max_lag), (0, Duration::ZERO));
    assert_eq!(lag.read().await.unwrap().load, Load::Ok);
    assert_eq!(lag.name(), "postgres replication lag");

    // Activity: a session waiting on a lock is seen.
    let holder = w.client().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM facts WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let waiter = w.client().await.unwrap();
    let blocked = tokio::spawn(async move {
        waiter
            .batch_execute("UPDATE facts SET amount = amount WHERE id = 1")
            .await
    });
    let act = w.activity_signal(Thresholds::never(), Thresholds::new(1.0, 1000.0));
    let mut seen = None;
    for _ in 0..100 {
        let a = act.activity().await.unwrap();
        if a.waiting_on_locks >= 1 {
            seen = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("the blocked update shows as a lock waiter");
    assert!(seen.active >= 1, "{seen:?}");
    match act.read().await.unwrap().load {
        Load::Throttle(why) => assert!(why.contains("waiting on locks"), "{why}"),
        other => panic!("expected a throttle, got {other:?}"),
    }
    let critical = w.activity_signal(Thresholds::new(0.0, 1.0), Thresholds::never());
    assert!(matches!(
        critical.read().await.unwrap().load,
        Load::Critical(_)
    ));
    holder.batch_execute("ROLLBACK").await.unwrap();
    blocked.await.unwrap().unwrap();
    let calm = w.activity_signal(Thresholds::never(), Thresholds::never());
    assert_eq!(calm.read().await.unwrap().load, Load::Ok);

    // Probes: a number of yours against thresholds.
    let probe = |t: Thresholds| w.probe_signal("facts size", "SELECT count(*) FROM facts", t);
    assert_eq!(
        probe(Thresholds::new(50.0, 100.0))
            .read()
            .await
            .unwrap()
            .load,
        Load::Ok
    );
    assert!(matches!(
        probe(Thresholds::new(10.0, 100.0)).read().await.unwrap().load,
        Load::Throttle(ref why) if why.contains("40")
    ));
    assert!(matches!(
        probe(Thresholds::new(1.0, 20.0)).read().await.unwrap().load,
        Load::Critical(_)
    ));
    assert_eq!(probe(Thresholds::never()).value().await.unwrap(), 40.0);
    let null = w.probe_signal("nothing", "SELECT NULL::int", Thresholds::never());
    assert!(null.read().await.is_err());
    let broken = w.probe_signal("broken", "SELECT * FROM nope", Thresholds::never());
    assert!(broken.read().await.is_err());

    // In a run: the probe throttles until the knob is turned down.
    w.execute_batch("CREATE TABLE knob (v INTEGER); INSERT INTO knob VALUES (5)")
        .await
        .unwrap();
    let knob = w.probe_signal("knob", "SELECT v FROM knob", Thresholds::new(1.0, 100.0));
    let ledger = w
        .ledger(&schema_name("signals_read_activity_replication_and_probes"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let runner = Runner::new(Arc::new(w.clone()), Arc::new(ledger))
        .with_options(backfill_testkit::conformance::fast_options())
        .with_signal(Arc::new(knob))
        .on_event(move |e| {
            if let Event::Throttled { reason } = e {
                let _ = tx.send(reason.clone());
            }
        });
    let job = Backfill::new(
        RunId::new("knob").unwrap(),
        brief(scope(), StrategySpec::PartitionOverwrite),
        plan(),
        Source::Table(tr("facts_fix")),
    );
    let handle = tokio::spawn(async move { runner.run(&job).await });
    let reason = rx.recv().await.unwrap();
    assert!(reason.starts_with("knob: "), "{reason}");
    assert_eq!(
        checksum(&w, &facts).await.rows,
        40,
        "nothing written while throttled"
    );
    w.execute_batch("UPDATE knob SET v = 0").await.unwrap();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Completed);
    assert!(report.throttled > Duration::ZERO);
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

/// A rough timing of 10k-row batches (an overwrite with pre-image, then a
/// merge) on a 100k-row table: `./scripts/with-postgres.sh cargo test -p
/// backfill-postgres --test postgres -- --ignored --nocapture timing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_of_10k_row_batches() {
    let Some(w) = fresh("timing_of_10k_row_batches").await else {
        return;
    };
    w.execute_batch(
        "CREATE TABLE facts AS SELECT i::bigint AS id, DATE '2026-03-01' + (i % 10) AS day, \
         i::bigint * 10 AS amount, 'original'::text AS note FROM generate_series(0, 99999) AS g(i); \
         CREATE TABLE facts_fix AS SELECT id, day, amount + 1 AS amount, 'fixed'::text AS note FROM facts; \
         ANALYZE facts; ANALYZE facts_fix",
    )
    .await
    .unwrap();
    let facts = tr("facts");
    let p = plan();
    let run = RunId::new("timing").unwrap();
    let columns = cols();
    let pre = tr("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let src = Source::Table(tr("facts_fix"));
    for (i, b) in p.batches.iter().take(3).enumerate() {
        let snap = if i == 0 { Some(&pre) } else { None };
        let t = std::time::Instant::now();
        let out = w
            .overwrite_slice(&write(&run, b, &facts, &src, &columns, snap))
            .await
            .unwrap();
        println!(
            "overwrite (pre-image: {}) {out:?} in {:?}",
            snap.is_some(),
            t.elapsed()
        );
    }
    let log = tr("facts_keys");
    w.create_snapshot_table(&facts, &[id("id")], &log)
        .await
        .unwrap();
    let keys = [id("id")];
    for b in &p.batches[3..5] {
        let t = std::time::Instant::now();
        let out = w
            .merge_slice(&MergeWrite {
                slice: write(&run, b, &facts, &src, &columns, Some(&pre)),
                keys: &keys,
                key_log: Some(&log),
            })
            .await
            .unwrap();
        println!("merge {out:?} in {:?}", t.elapsed());
    }
    let t = std::time::Instant::now();
    let c = checksum(&w, &facts).await;
    println!("checksum {c:?} in {:?}", t.elapsed());
}

// ---------------------------------------------------------------------------
// CONFORMANCE SUITE (backfill-testkit): the shared adapter cases, each in a
// fresh schema, with the ledger in the same schema, so batch marks commit
// with the data.
// ---------------------------------------------------------------------------

/// PostgreSQL's capabilities: its ledger commits with the data and it runs
/// SQL; its views bind tables by identity, not by name, so a view over a
/// swapped target keeps reading the old table.
fn capabilities() -> backfill_testkit::conformance::Capabilities {
    backfill_testkit::conformance::Capabilities {
        ledger_in_data_tx: true,
        views_bind_by_name: false,
        runs_sql: true,
    }
}

/// An env on `w`, whose pool's search path is `schema`: the case's tables
/// and its ledger live there.
async fn env_in(w: &PgWarehouse, schema: &str) -> backfill_testkit::conformance::Env {
    let warehouse = Arc::new(w.clone());
    backfill_testkit::conformance::sql_env(
        warehouse,
        &**w,
        Some(id(schema)),
        schema,
        capabilities(),
    )
    .await
}

/// A fresh schema per case, holding the case's tables and its ledger;
/// `None` (the case is skipped, with a message) without a server outside
/// CI.
async fn conformance_env(name: &str) -> Option<backfill_testkit::conformance::Env> {
    let test = format!("c_{name}");
    let (url, schema) = fresh_schema(&test).await?;
    let w = PgWarehouse::from_pool(pool(&url, &schema, 8));
    Some(env_in(&w, &schema).await)
}

/// Partition oids by name, for telling a swapped partition from a kept one.
async fn partition_oids(w: &PgWarehouse) -> Vec<(Value, Value)> {
    use backfill_core::sql::inspect::SqlRead;
    let q = backfill_core::sql::Sql {
        text: "SELECT relname::text, oid::bigint FROM pg_class \
               WHERE relname LIKE 'facts_p%' AND relkind = 'r' AND relnamespace = current_schema()::regnamespace \
               ORDER BY relname"
            .into(),
        params: vec![],
    };
    let mut rows = w.read(vec![q]).await.unwrap();
    rows.pop()
        .unwrap()
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

/// On a table partitioned by day, a daily overwrite swaps each batch's
/// partition for a new one (DETACH/ATTACH) instead of deleting rows, gives
/// the same table as the plain path, and rolls back to the exact prior
/// state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_overwrite_swaps_partitions() {
    let Some((url, schema)) = fresh_schema("partition_swap").await else {
        return;
    };
    let w = PgWarehouse::from_pool(pool(&url, &schema, 8));
    let mut ddl = String::from(
        "CREATE TABLE facts (id BIGINT NOT NULL, day DATE, amount BIGINT, note TEXT) \
         PARTITION BY RANGE (day);",
    );
    for d in 0..10 {
        ddl.push_str(&format!(
            "CREATE TABLE facts_p{d} PARTITION OF facts FOR VALUES FROM ('{}') TO ('{}');",
            day(d),
            day(d + 1)
        ));
    }
    ddl.push_str("CREATE INDEX facts_id ON facts (id);");
    w.execute_batch(ddl).await.unwrap();
    let env = env_in(&w, &schema).await;
    let facts = env.table("facts");
    env.seed
        .insert_rows(&facts, &original_rows())
        .await
        .unwrap();
    let fix = backfill_testkit::conformance::seed_table(&env, "facts_fix", &fixed_rows()).await;
    let expected =
        backfill_testkit::conformance::seed_table(&env, "expected", &expected_replace()).await;
    let original = w.checksum(&facts, &Predicate::All).await.unwrap();
    let before = partition_oids(&w).await;
    assert_eq!(before.len(), 10);

    let job = backfill_testkit::conformance::job_on(
        &env,
        backfill_testkit::conformance::Pattern::Overwrite,
        "partswap",
        Source::Table(fix),
    );
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let report = runner.run(&job).await.unwrap();
    assert_eq!(report.batches_done, 5);
    assert_eq!(
        w.checksum(&facts, &Predicate::All).await.unwrap(),
        w.checksum(&expected, &Predicate::All).await.unwrap()
    );
    let after = partition_oids(&w).await;
    let swapped: Vec<bool> = before
        .iter()
        .zip(&after)
        .map(|((n0, o0), (n1, o1))| {
            assert_eq!(n0, n1, "partitions keep their names");
            o0 != o1
        })
        .collect();
    // Days 2..7 are in scope: exactly their partitions are new.
    let in_scope: Vec<bool> = (0..10).map(|d| (2..7).contains(&d)).collect();
    assert_eq!(swapped, in_scope);
    // The parent's index covers the new partitions too.
    use backfill_core::sql::inspect::SqlRead;
    let idx = w
        .read(vec![backfill_core::sql::Sql {
            text: "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent \
                   WHERE c.relname = 'facts_id'"
                .into(),
            params: vec![],
        }])
        .await
        .unwrap();
    assert_eq!(idx[0][0][0], Value::Int(10));

    runner.rollback(&job).await.unwrap();
    assert_eq!(w.checksum(&facts, &Predicate::All).await.unwrap(), original);
}

backfill_testkit::conformance_tests!(|name: &str| {
    let name = name.to_string();
    async move { conformance_env(&name).await }
});

/// A refresh's SQL runs as written: a materialized view is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_refreshes_a_materialized_view() {
    let Some((w, facts, _)) = setup("execute_refreshes_a_materialized_view").await else {
        return;
    };
    w.execute("CREATE MATERIALIZED VIEW facts_count AS SELECT count(*) AS n FROM facts")
        .await
        .unwrap();
    w.execute("DELETE FROM facts WHERE id <= 4").await.unwrap();
    w.execute("REFRESH MATERIALIZED VIEW facts_count")
        .await
        .unwrap();
    let n = backfill_core::inspect::metric(
        &w,
        backfill_core::inspect::Rows::all(tr("facts_count")),
        backfill_core::inspect::Metric {
            name: "n".into(),
            aggregate: backfill_core::inspect::Aggregate::Sum(id("n")),
            by: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(n[0].value.to_string(), "36");
    assert_eq!(w.count(&facts, &Predicate::All).await.unwrap(), 36);
    assert!(w.execute("REFRESH NOTHING").await.is_err());
}
