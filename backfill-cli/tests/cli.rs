//! End-to-end tests of the `backfill` binary: real processes, a real
//! DuckDB file and a real PostgreSQL server (via ./scripts/test.sh).
//! One integration-test binary for the crate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use backfill_core::ledger::Transition;
use backfill_core::{Ledger, RunId};
use backfill_testkit::scratch::ScratchDir;
use serde_json::Value;

const BRIEF: &str = include_str!("../../examples/refunds_fix.yaml");
const RUN: &str = "refunds_2026h1";

/// A scratch directory for one test: removed first if a run left one, and
/// when the test passes.
fn scratch(test: &str) -> ScratchDir {
    ScratchDir::new(&format!("cli-{test}"))
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backfill"));
    for v in [
        "BACKFILL_DB",
        "BACKFILL_LEDGER",
        "BACKFILL_BRIEF",
        "BACKFILL_USER",
    ] {
        c.env_remove(v);
    }
    c.env("BACKFILL_USER", "ada.lovelace");
    c
}

/// Runs the binary; returns its exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = cli().args(args).output().expect("the binary runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `--output json`; returns its exit code and the
/// last JSON document it printed.
fn json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let (code, out, err) = run(&all);
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output from {args:?}; stderr: {err}"));
    let doc: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(doc["schema"], "backfill.cli/1", "{doc}");
    assert_eq!(doc["exit"]["code"], code, "{doc}");
    (code, doc)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// A DuckDB file with the refunds dataset, made by `backfill demo`.
fn demo_db(dir: &Path) -> String {
    let db = dir.join("demo.duckdb").to_string_lossy().into_owned();
    let (code, _, err) = run(&["demo", "--db", &db, "--orders", "100000"]);
    assert_eq!(code, 0, "{err}");
    db
}

/// Every transition of `run` in log order, read with the library.
async fn transitions(db: &str, run: &str) -> Vec<Transition> {
    let run = RunId::new(run).unwrap();
    if db.contains("host=") {
        let wh = backfill_postgres::PgWarehouse::connect(db).await.unwrap();
        wh.ledger("backfill")
            .await
            .unwrap()
            .transitions(&run)
            .await
            .unwrap()
    } else {
        let wh = backfill_duckdb::DuckDbWarehouse::open_existing(db).unwrap();
        wh.ledger("backfill")
            .await
            .unwrap()
            .transitions(&run)
            .await
            .unwrap()
    }
}

/// Starts `run` in a child process with JSON lines on stdout, and waits
/// until it reports its first written batch.
fn start_run(brief: &str, db: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = cli()
        .args(["run", "-f", brief, "--db", db, "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let started = loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if v["event"]["event"] == "batch_finished" {
            break true;
        }
    };
    if !started {
        let code = child.wait().map(|s| s.code());
        panic!("the run ended before its first batch: {code:?}");
    }
    (child, out)
}

/// Waits for the child; returns its exit code and the final document.
fn finish(mut child: Child, mut out: BufReader<std::process::ChildStdout>) -> (i32, Value) {
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let code = child.wait().unwrap().code().unwrap();
    let last = rest.lines().rev().find(|l| !l.is_empty()).unwrap_or("{}");
    (code, serde_json::from_str(last).unwrap())
}

/// No batch was claimed after the run's steering changed to `to`.
fn no_claim_after(log: &[Transition], to: &str) {
    let at = log
        .iter()
        .position(|t| t.batch_id.is_none() && t.to == format!("steering:{to}"))
        .unwrap_or_else(|| panic!("no steering:{to} in the log"));
    let claimed: Vec<_> = log[at..]
        .iter()
        .filter(|t| t.from == "pending" && t.to == "running")
        .collect();
    assert!(claimed.is_empty(), "claimed after {to}: {claimed:?}");
}

/// Pauses a run from a second process, reads its status meanwhile,
/// refuses a second run on the same target, resumes and finishes.
async fn pause_status_resume(db: &str, dir: &Path) {
    let brief = write(dir, "brief.yaml", BRIEF);
    let (child, out) = start_run(&brief, db);

    let (code, status) = json(&["status", RUN, "--db", db]);
    assert_eq!(code, 3, "mid-run status is incomplete: {status}");
    assert_eq!(status["result"]["complete"], false);

    let (code, paused) = json(&["pause", RUN, "--db", db]);
    assert_eq!(code, 0, "{paused}");
    let (code, last) = finish(child, out);
    assert_eq!(code, 3, "a paused run is not a success: {last}");
    assert_eq!(last["result"]["report"]["status"], "paused", "{last}");
    let done = last["result"]["report"]["batches_done"].as_u64().unwrap();
    assert!(done > 0 && done < 181, "paused part-way: {done}");
    no_claim_after(&transitions(db, RUN).await, "pause");

    // While paused the target stays taken: another run is refused.
    let other = write(
        dir,
        "other.yaml",
        &BRIEF.replace("run: refunds_2026h1", "run: other_fix"),
    );
    let (code, refused) = json(&["run", "-f", &other, "--db", db]);
    assert_eq!(code, 5, "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains(RUN),
        "names the holder: {refused}"
    );

    // A run while paused stays paused; resume, then it finishes.
    let (code, _) = json(&["run", "-f", &brief, "--db", db]);
    assert_eq!(code, 3);
    let (code, _) = json(&["resume", RUN, "--db", db]);
    assert_eq!(code, 0);
    let (code, doc) = json(&["run", "-f", &brief, "--db", db]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["result"]["report"]["status"], "completed");
    assert_eq!(doc["result"]["report"]["batches_done"], 181);
    let (code, status) = json(&["status", RUN, "--db", db]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["result"]["done"], 181);
    assert_eq!(status["result"]["validation"], "passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_pause_from_another_process_and_resume() {
    let dir = scratch("pause");
    let db = demo_db(&dir);
    pause_status_resume(&db, &dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_status_mid_run_comes_from_the_status_file() {
    let dir = scratch("status");
    let db = demo_db(&dir);
    let brief = write(&dir, "brief.yaml", BRIEF);
    let (child, out) = start_run(&brief, &db);
    let (code, status) = json(&["status", RUN, "--db", &db]);
    let (end, _) = finish(child, out);
    assert_eq!(end, 0);
    assert_eq!(code, 3, "{status}");
    assert_eq!(status["result"]["source"], "status_file", "{status}");
    assert!(status["result"]["live"]["done"].as_u64().unwrap() >= 1);
    assert_eq!(status["result"]["live"]["total"], 181);
    // Once the run let go of the file, status reads the ledger.
    let (code, status) = json(&["status", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["result"]["source"], "ledger");
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_cancel_leaves_the_ledger_resumable() {
    let dir = scratch("cancel");
    let db = demo_db(&dir);
    let brief = write(&dir, "brief.yaml", BRIEF);
    let (child, out) = start_run(&brief, &db);
    let (code, _) = json(&["cancel", RUN, "--db", &db]);
    assert_eq!(code, 0);
    let (code, last) = finish(child, out);
    assert_eq!(code, 3, "{last}");
    assert_eq!(last["result"]["report"]["status"], "cancelled");
    no_claim_after(&transitions(&db, RUN).await, "cancel");
    let (code, status) = json(&["status", RUN, "--db", &db]);
    assert_eq!(code, 3);
    assert_eq!(
        status["result"]["leases"],
        serde_json::json!([]),
        "nothing left held"
    );
    assert!(
        status["result"]["counts"].get("running").is_none(),
        "{status}"
    );
    let (code, doc) = json(&["run", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["result"]["report"]["batches_done"], 181);
}

/// The runbook through the CLI: preflight, plan, slice, run with a stop,
/// resume, validate, approval rules, note, rollback.
#[tokio::test(flavor = "multi_thread")]
async fn duckdb_runbook_end_to_end() {
    let dir = scratch("runbook");
    let db = demo_db(&dir);
    let brief = write(&dir, "brief.yaml", BRIEF);
    let before = checksum(&db).await;

    let (code, pf) = json(&["preflight", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{pf}");
    assert_eq!(pf["result"]["engine_checked"], true);

    let (code, plan) = json(&["plan", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0);
    assert_eq!(plan["result"]["count"], 181);
    assert_eq!(plan["result"]["batches"][0]["start"], "2026-01-01");
    assert!(plan["result"]["batches"][0]["estimated_rows"]
        .as_u64()
        .is_some());

    let (code, text, _) = run(&["announce", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0);
    assert!(text.contains("Planned backfill"), "{text}");
    let (code, dry) = json(&["run", "-f", &brief, "--db", &db, "--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(dry["result"]["dry_run"], true);
    assert_eq!(checksum(&db).await, before, "a dry run writes nothing");

    let (code, slice) = json(&["slice", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{slice}");
    assert_eq!(slice["result"]["plan_batches"], 181);
    assert_eq!(slice["result"]["batches"].as_array().unwrap().len(), 3);

    let (code, part) = json(&["run", "-f", &brief, "--db", &db, "--until", "10"]);
    assert_eq!(code, 3, "a partial run is never success: {part}");
    let (code, done) = json(&["done", "-f", &brief, "--db", &db]);
    assert_eq!(code, 3, "{done}");
    assert_eq!(done["result"]["done"], false);

    let (code, full) = json(&["run", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{full}");
    assert_eq!(full["result"]["report"]["batches_done"], 181);
    assert_ne!(checksum(&db).await, before, "history was restated");

    let (code, v) = json(&["validate", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{v}");
    let approve = |reviewer: &str, actor: &str| {
        json(&[
            "approve",
            "-f",
            &brief,
            "--db",
            &db,
            "--reviewer",
            reviewer,
            "--note",
            "checked",
            "--as",
            actor,
        ])
    };
    let (code, refused) = approve("Ada.Lovelace", "ada.lovelace");
    assert_eq!(code, 5, "the operator cannot approve: {refused}");
    let (code, refused) = approve("grace.hopper", "ada.lovelace");
    assert_eq!(code, 5, "nor in someone else's name: {refused}");
    let (code, ok) = approve("grace.hopper", "grace.hopper");
    assert_eq!(code, 0, "{ok}");
    let (code, text, _) = run(&["note", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0);
    assert!(text.contains("net revenue"), "{text}");

    let (code, rb) = json(&["rollback", "-f", &brief, "--db", &db]);
    assert_eq!(code, 0, "{rb}");
    assert_eq!(
        checksum(&db).await,
        before,
        "rollback restores the exact prior state"
    );
    let (code, _) = json(&["cleanup", "--dry-run", "--db", &db]);
    assert_eq!(code, 0);
}

/// The target's row count and content hash, read with the library.
async fn checksum(db: &str) -> String {
    use backfill_core::{Predicate, TableRef, Warehouse};
    let wh = backfill_duckdb::DuckDbWarehouse::open_existing(db).unwrap();
    let t = TableRef::parse("analytics.revenue").unwrap();
    let c = wh.checksum(&t, &Predicate::All).await.unwrap();
    format!("{} {}", c.rows, c.hash)
}

/// Each bad brief gives one clear message naming the field, exit 2, and
/// writes nothing.
#[test]
fn bad_brief_files_are_refused_before_any_write() {
    let dir = scratch("bad");
    let db = demo_db(&dir);
    let bytes = std::fs::read(&db).unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "unknown key",
            "  retention_days: 14",
            "  retention_day: 30",
            "rollback.retention_day",
        ),
        (
            "wrong type",
            "  retention_days: 14",
            "  retention_days: two weeks",
            "rollback.retention_days",
        ),
        ("missing reason", "reason: >", "reasons: >", "reason"),
        (
            "injection in a table name",
            "target: analytics.revenue",
            "target: \"analytics.revenue; DROP TABLE shop.orders\"",
            "scope.target",
        ),
        (
            "inverted bounds",
            "start: \"2026-01-01T00:00:00\", end: \"2026-07-01T00:00:00\"",
            "start: \"2026-07-01T00:00:00\", end: \"2026-01-01T00:00:00\"",
            "scope",
        ),
        (
            "unknown zone",
            "time_zone: America/New_York",
            "time_zone: America/Gotham",
            "scope",
        ),
        (
            "typo'd strategy",
            "{kind: partition_overwrite}",
            "{kind: partition_overwrte}",
            "strategy",
        ),
        (
            "quoted placeholder",
            "USING (order_id);",
            "USING (order_id) WHERE o.order_date >= DATE '{start}';",
            "source.query",
        ),
    ];
    for (what, from, to, path) in cases {
        assert!(BRIEF.contains(from), "{what}: the example has {from:?}");
        let bad = write(&dir, "bad.yaml", &BRIEF.replacen(from, to, 1));
        for command in ["preflight", "run"] {
            let (code, doc) = json(&[command, "-f", &bad, "--db", &db]);
            assert_eq!(code, 2, "{what}: {doc}");
            let findings = doc["error"]["findings"].as_array().unwrap();
            assert!(
                findings.iter().any(|f| f["path"] == *path),
                "{what}: names {path}: {doc}"
            );
        }
        let (_, text, err) = run(&["preflight", "-f", &bad]);
        assert!(text.is_empty() && err.contains(path), "{what}: {err}");
    }
    // Every missing field at once, with line numbers for what is there.
    let bad = write(
        &dir,
        "bad.yaml",
        &BRIEF
            .replacen("title:", "titel:", 1)
            .replacen("strategy: {kind", "strategies: {kind", 1),
    );
    let (code, doc) = json(&["preflight", "-f", &bad]);
    assert_eq!(code, 2);
    let paths: Vec<&str> = doc["error"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for p in ["titel", "strategies", "title", "strategy"] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    let unknown = &doc["error"]["findings"][0];
    assert!(unknown["line"].as_u64().is_some(), "{unknown}");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("expected one of"),
        "{unknown}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "nothing was written");

    // A mistyped database path is an error, not a new empty database.
    let missing = dir.join("typo.duckdb");
    let good = write(&dir, "good.yaml", BRIEF);
    let (code, doc) = json(&["run", "-f", &good, "--db", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{doc}");
    assert!(!missing.exists());
}

/// The same brief in TOML reads to the same job.
#[test]
fn toml_briefs_read_like_yaml() {
    let dir = scratch("toml");
    let toml = r#"
run = "toml_fix"
title = "t"
reason = "r"
operator = "a"
reviewer = "b"
risk = "enrichment"
expected_impact = "none"
idempotency = "overwrite"
planner = { kind = "windows", grain = "day" }
strategy = { kind = "partition_overwrite" }
source = { table = "shop.fixed" }

[scope]
target = "analytics.revenue"
batch_column = "order_date"
time_zone = "UTC"
bounds = { kind = "time", start = 2026-01-01T00:00:00, end = 2026-01-08T00:00:00, column = "date" }

[rollback]
description = "pre-images"
keep_pre_image = true
retention_day = 3
"#;
    let p = write(&dir, "brief.toml", toml);
    let (code, doc) = json(&["preflight", "-f", &p]);
    assert_eq!(code, 2, "{doc}");
    let f = &doc["error"]["findings"][0];
    assert_eq!(f["path"], "rollback.retention_day", "{doc}");
    assert_eq!(f["line"], 23, "{doc}");
    let p = write(
        &dir,
        "brief.toml",
        &toml.replace("retention_day", "retention_days"),
    );
    let (code, doc) = json(&["plan", "-f", &p]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["result"]["count"], 7);
}

/// Rule periods in a brief file: the plan cuts the week that holds a
/// boundary; a gap between periods is refused with the field.
#[test]
fn rule_periods_cut_the_plan() {
    let dir = scratch("rules");
    let i = BRIEF.find("source:\n").unwrap();
    let j = BRIEF.find("strategy:").unwrap();
    let query = "SELECT * FROM shop.orders";
    let rules = format!(
        "rules:\n  - {{name: rule 2025, reason: old policy, from: \"2026-01-01T00:00:00\", until: \"2026-04-01T00:00:00\", query: \"{query}\"}}\n  - {{name: rule 2026, reason: new policy, from: \"2026-04-01T00:00:00\", until: \"2026-07-01T00:00:00\", query: \"{query}\"}}\n"
    );
    // Weekly batches; the daily test slice goes.
    let text = format!("{}{rules}{}", &BRIEF[..i], &BRIEF[j..])
        .replace(
            "{kind: windows, grain: day}",
            "{kind: windows, grain: week}",
        )
        .replace(
            "slice: [\"2026-01-31\", \"2026-03-08\", \"2026-04-15\"]",
            "",
        );
    let p = write(&dir, "rules.yaml", &text);
    let (code, plan) = json(&["plan", "-f", &p]);
    assert_eq!(code, 0, "{plan}");
    let ids: Vec<&str> = plan["result"]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    // 2026-04-01 is a Wednesday: its week is cut there.
    assert!(ids.contains(&"week-2026-03-30"), "{ids:?}");
    assert!(ids.contains(&"week-2026-03-30@2026-04-01"), "{ids:?}");
    let gap = text.replace(
        "from: \"2026-04-01T00:00:00\", until: \"2026-07-01",
        "from: \"2026-04-02T00:00:00\", until: \"2026-07-01",
    );
    let p = write(&dir, "gap.yaml", &gap);
    let (code, doc) = json(&["preflight", "-f", &p]);
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["error"]["findings"][0]["path"], "rules", "{doc}");
    assert!(
        doc["error"]["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a gap"),
        "{doc}"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL: a database of its own per test
// ---------------------------------------------------------------------------

/// The refunds of the command-line cases' shop, and its revenue fact whose
/// history ignores them, from `shop.orders`: SQL both PostgreSQL and Spark
/// run.
const REFUNDS_AND_REVENUE: &str = "CREATE TABLE shop.refunds AS
             SELECT order_id, CAST(round(gross * 0.5, 2) AS DECIMAL(18,2)) AS amount
             FROM shop.orders WHERE order_id % 20 = 0;
             CREATE TABLE analytics.revenue AS
             SELECT order_id, order_date, customer_id, gross,
                    CAST(0 AS DECIMAL(18,2)) AS refunds, gross AS net
             FROM shop.orders";

/// A new, empty database `<name>_<pid>` on the server at `url`; its
/// connection string.
async fn fresh_database(url: &str, name: &str) -> String {
    let name = format!("{name}_{}", std::process::id());
    let admin = backfill_postgres::PgWarehouse::connect(url).await.unwrap();
    let c = admin.client().await.unwrap();
    for q in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        c.batch_execute(&q).await.unwrap();
    }
    format!("{url} dbname={name}")
}

/// A fresh database on the server from BACKFILL_PG_URL with the refunds
/// tables, or `None` outside ./scripts/test.sh (a panic under CI).
async fn pg_db(test: &str) -> Option<String> {
    let url = match std::env::var("BACKFILL_PG_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") => {
            panic!("{test}: BACKFILL_PG_URL is not set under CI; run ./scripts/test.sh")
        }
        _ => {
            eprintln!("skipping {test}: BACKFILL_PG_URL is not set");
            return None;
        }
    };
    let db = fresh_database(&url, &format!("cli_{test}")).await;
    let wh = backfill_postgres::PgWarehouse::connect(&db).await.unwrap();
    wh.client()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE SCHEMA shop; CREATE SCHEMA analytics;
             CREATE TABLE shop.orders AS
             SELECT CAST(row_number() OVER (ORDER BY d, k) AS BIGINT) AS order_id,
                    CAST(d AS DATE) AS order_date,
                    CAST(100 + (k * 7919) % 600 AS BIGINT) AS customer_id,
                    CAST(5 + ((k * 31 + extract(doy FROM d)::int * 17) % 20000) / 100.0 AS DECIMAL(18,2)) AS gross
             FROM generate_series(DATE '2025-07-01', DATE '2026-06-30', INTERVAL '1 day') AS d,
                  generate_series(1, 20) AS k;
             {REFUNDS_AND_REVENUE};",
        ))
        .await
        .unwrap();
    Some(db)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_pause_from_another_process_and_resume() {
    let Some(db) = pg_db("pause").await else {
        return;
    };
    let dir = scratch("pg-pause");
    pause_status_resume(&db, &dir).await;
}

/// The servers of the Spark case (Sail, and PostgreSQL for its ledger),
/// or `None` outside CI when one was not started.
fn spark_servers(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("BACKFILL_SPARK_SAIL_URL"),
        std::env::var("BACKFILL_PG_URL"),
    ) {
        (Ok(sail), Ok(pg)) => Some((sail, pg)),
        _ if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") => {
            panic!("{test}: Sail or PostgreSQL is not running under CI; run ./scripts/test.sh")
        }
        _ => {
            eprintln!("skipping {test}: BACKFILL_SPARK_SAIL_URL or BACKFILL_PG_URL is not set");
            None
        }
    }
}

/// The target's row count and content hash on Spark.
async fn spark_checksum(url: &str) -> String {
    use backfill_core::{Predicate, TableRef, Warehouse};
    let wh = backfill_spark::SparkWarehouse::connect(url).await.unwrap();
    let t = TableRef::parse("analytics.revenue").unwrap();
    let c = wh.checksum(&t, &Predicate::All).await.unwrap();
    format!("{} {}", c.rows, c.hash)
}

/// The refunds fix from the command line on Spark (Sail, Delta tables),
/// its ledger in PostgreSQL: preflight, run, validate and roll back, as on
/// the other engines; without `--ledger`, and with a staging swap, refused
/// with the reason before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn spark_runbook_with_its_ledger_in_postgres() {
    use backfill_core::Warehouse;
    let test = "spark_runbook";
    let Some((sail, pg)) = spark_servers(test) else {
        return;
    };
    // One Spark session for the test and every process it starts: Sail
    // keeps a session's catalog, and a client rejoins it by its id.
    let db = format!("{sail}/;session_id={}", uuid::Uuid::new_v4());
    let spark = backfill_spark::Spark::connect(&db).await.unwrap();
    let dir = scratch("spark");
    spark
        .set_config(
            "spark.sql.warehouse.dir",
            &dir.join("tables").to_string_lossy(),
        )
        .await
        .unwrap();
    spark
        .set_config("spark.sql.sources.default", "delta")
        .await
        .unwrap();
    backfill_spark::SparkWarehouse::on(spark)
        .execute(&format!(
            "CREATE SCHEMA shop; CREATE SCHEMA analytics;
             CREATE TABLE shop.orders AS
             SELECT CAST(row_number() OVER (ORDER BY d, k) AS BIGINT) AS order_id, d AS order_date,
                    CAST(100 + (k * 7919) % 600 AS BIGINT) AS customer_id,
                    CAST(5 + ((k * 31 + dayofyear(d) * 17) % 20000) / 100.0 AS DECIMAL(18,2)) AS gross
             FROM (SELECT date_add(DATE '2025-07-01', CAST(id AS INT)) AS d FROM range(365)) AS days
             CROSS JOIN (SELECT id AS k FROM range(1, 21)) AS ks;
             {REFUNDS_AND_REVENUE}",
        ))
        .await
        .unwrap();
    // January only; Sail does not resolve `o.order_id` after `USING`.
    let text = BRIEF
        .replace("USING (order_id);", "ON o.order_id = r.order_id;")
        .replace(
            r#"end: "2026-07-01T00:00:00""#,
            r#"end: "2026-02-01T00:00:00""#,
        )
        .replace(
            r#"slice: ["2026-01-31", "2026-03-08", "2026-04-15"]"#,
            r#"slice: ["2026-01-15"]"#,
        );
    let brief = write(&dir, "brief.yaml", &text);
    // The ledger in a database of its own.
    let ledger = fresh_database(&pg, "cli_spark").await;
    let ledger = ledger.as_str();
    let before = spark_checksum(&db).await;

    let (code, refused) = json(&["preflight", "-f", &brief, "--db", &db]);
    assert_eq!(code, 5, "no ledger: {refused}");
    assert!(refused.to_string().contains("--ledger"), "{refused}");
    let swap = write(
        &dir,
        "swap.yaml",
        &text.replace(
            "strategy: {kind: partition_overwrite}",
            "strategy: {kind: staging_swap}",
        ),
    );
    let (code, refused) = json(&["run", "-f", &swap, "--db", &db, "--ledger", ledger]);
    assert_ne!(code, 0, "{refused}");
    assert!(
        refused.to_string().contains("renames two tables at once"),
        "{refused}"
    );
    assert_eq!(spark_checksum(&db).await, before, "nothing written");

    let (code, pf) = json(&["preflight", "-f", &brief, "--db", &db, "--ledger", ledger]);
    assert_eq!(code, 0, "{pf}");
    let (code, full) = json(&["run", "-f", &brief, "--db", &db, "--ledger", ledger]);
    assert_eq!(code, 0, "{full}");
    assert_eq!(full["result"]["report"]["batches_done"], 31);
    assert_ne!(spark_checksum(&db).await, before, "January was restated");
    let (code, v) = json(&["validate", "-f", &brief, "--db", &db, "--ledger", ledger]);
    assert_eq!(code, 0, "{v}");
    let (code, rb) = json(&["rollback", "-f", &brief, "--db", &db, "--ledger", ledger]);
    assert_eq!(code, 0, "{rb}");
    assert_eq!(
        spark_checksum(&db).await,
        before,
        "rollback restores the exact prior state"
    );
}
