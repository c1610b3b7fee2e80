//! Conformance cases for the ledger: it behaves exactly like
//! [`MemoryLedger`](backfill_core::MemoryLedger) step by step, refuses
//! what it must, and fences out a worker whose lease was taken over.
//!
//! The cases move time by hand: they make their ledger with
//! [`Env::ledger_with_clock`].

use std::sync::Arc;
use std::time::Duration;

use backfill_core::ledger::{
    Asset, AssetKind, BatchState, BatchUpdate, Ledger, ManualClock, RunRecord, RunStart, RunStatus,
    Steering,
};
use backfill_core::{Error, RunId, TableRef};

use super::{daily_plan, ident, Env};

/// The instant the ledger cases start at.
pub fn ledger_t0() -> jiff::Timestamp {
    "2026-03-10T12:00:00Z".parse().expect("timestamp")
}

/// A run record for `run` with plan `fingerprint` on `facts`, started at
/// [`ledger_t0`], as the ledger cases begin it.
pub fn ledger_record(run: &str, fingerprint: &str) -> RunRecord {
    RunRecord {
        run_id: RunId::new(run).expect("run id"),
        target: TableRef::new(ident("facts")),
        fingerprint: fingerprint.into(),
        code_version: "v1".into(),
        parameters: serde_json::json!({"k": 1}),
        operator: "ada".into(),
        status: RunStatus::Running,
        started_at: ledger_t0(),
        finished_at: None,
        rows_affected: 0,
        notes: vec![],
    }
}

/// A clock for [`ledger_mirrors_memory`], stopped at the script's start.
pub fn ledger_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(ledger_t0()))
}

/// Runs one scripted sequence of every ledger operation (claims, leases,
/// takeovers, fencing, transitions allowed and refused, locks, assets) on
/// `l`, returning every answer as text.
pub async fn ledger_script(l: &dyn Ledger, clock: &ManualClock) -> Vec<String> {
    let p = daily_plan(TableRef::new(ident("facts")));
    let run = RunId::new("mirror").expect("run id");
    let lease = Duration::from_secs(60);
    let mut out = Vec::new();
    // Each ledger records its own process instance with its leases.
    let me = l.instance().to_string();
    let mut log = |s: String| out.push(s.replace(&me, "<this instance>"));
    log(format!("{:?}", l.run(&run).await));
    log(format!(
        "{:?}",
        l.begin_run(&ledger_record("mirror", "fp1"), &p.batches)
            .await
    ));
    log(format!(
        "{:?}",
        l.begin_run(&ledger_record("mirror", "fp1"), &p.batches)
            .await
    ));
    log(format!(
        "{:?}",
        l.begin_run(&ledger_record("mirror", "fp2"), &p.batches)
            .await
    ));
    let only = [p.batches[3].id.clone()];
    let c1 = l
        .claim(&run, "w1", lease, Some(&only))
        .await
        .unwrap()
        .unwrap();
    log(format!("{c1:?}"));
    log(format!("{:?}", l.claim(&run, "w1", lease, Some(&[])).await));
    let c2 = l.claim(&run, "w1", lease, None).await.unwrap().unwrap();
    log(format!("{c2:?}"));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c2.batch.id,
            Some(c2.token),
            BatchState::Written,
            BatchUpdate {
                rows_before: Some(4),
                rows_written: Some(5),
                ..BatchUpdate::reason("written")
            }
        )
        .await
    ));
    // Stale token, invalid move, unknown batch.
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c2.batch.id,
            Some(c2.token),
            BatchState::Written,
            BatchUpdate::reason("again")
        )
        .await
    ));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c2.batch.id,
            None,
            BatchState::Pending,
            BatchUpdate::reason("bad")
        )
        .await
    ));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &"nope".into(),
            None,
            BatchState::Failed,
            BatchUpdate::reason("x")
        )
        .await
    ));
    // Lease takeover after expiry; the old token is fenced out.
    clock.advance(Duration::from_secs(30));
    let c3 = l.claim(&run, "w2", lease, None).await.unwrap().unwrap();
    log(format!("{c3:?}"));
    clock.advance(Duration::from_secs(45));
    let c4 = l.claim(&run, "w3", lease, Some(&only)).await.unwrap();
    log(format!("{c4:?}"));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c1.batch.id,
            Some(c1.token),
            BatchState::Failed,
            BatchUpdate {
                error: Some("boom".into()),
                ..BatchUpdate::reason("old worker")
            }
        )
        .await
    ));
    let c4 = c4.unwrap();
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c4.batch.id,
            Some(c4.token),
            BatchState::Failed,
            BatchUpdate {
                error: Some("boom".into()),
                rows_written: Some(2),
                ..BatchUpdate::reason("failed")
            }
        )
        .await
    ));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c4.batch.id,
            None,
            BatchState::Pending,
            BatchUpdate::reason("requeued")
        )
        .await
    ));
    log(format!(
        "{:?}",
        l.transition(
            &run,
            &c2.batch.id,
            None,
            BatchState::Validated,
            BatchUpdate::reason("checks passed")
        )
        .await
    ));
    log(format!(
        "{:?}",
        l.set_run_status(&run, RunStatus::Paused, Some("paused by operator"))
            .await
    ));
    log(format!(
        "{:?}",
        l.set_run_status(&run, RunStatus::Completed, None).await
    ));
    // Locks.
    let other = RunId::new("other").unwrap();
    log(format!(
        "{:?}",
        l.lock_target(&TableRef::new(ident("facts")), &run).await
    ));
    log(format!(
        "{:?}",
        l.lock_target(&TableRef::new(ident("facts")), &run).await
    ));
    log(format!(
        "{:?}",
        l.lock_target(&TableRef::new(ident("facts")), &other).await
    ));
    log(format!(
        "{:?}",
        l.unlock_target(&TableRef::new(ident("facts")), &other)
            .await
    ));
    log(format!(
        "{:?}",
        l.lock_target(&TableRef::new(ident("facts")), &other).await
    ));
    log(format!(
        "{:?}",
        l.unlock_target(&TableRef::new(ident("facts")), &run).await
    ));
    log(format!(
        "{:?}",
        l.lock_target(&TableRef::new(ident("facts")), &other).await
    ));
    // Assets.
    let asset = Asset {
        run_id: run.clone(),
        kind: AssetKind::PreImage,
        table: TableRef::new(ident("facts__bf_pre_mirror")),
        owner: "ada".into(),
        created_at: ledger_t0(),
        expires_at: ledger_t0(),
        dropped_at: None,
    };
    log(format!("{:?}", l.record_asset(&asset).await));
    log(format!("{:?}", l.record_asset(&asset).await));
    log(format!(
        "{:?}",
        l.record_asset(&Asset {
            kind: AssetKind::KeyLog,
            table: TableRef::new(ident("facts__bf_keys_mirror")),
            ..asset.clone()
        })
        .await
    ));
    log(format!(
        "{:?}",
        l.record_asset(&Asset {
            run_id: RunId::new("ghost").unwrap(),
            ..asset.clone()
        })
        .await
    ));
    log(format!(
        "{:?}",
        l.asset_dropped(&run, &asset.table, ledger_t0()).await
    ));
    log(format!("{:?}", l.assets(Some(&run)).await));
    log(format!("{:?}", l.assets(None).await));
    log(format!("{:?}", l.assets(Some(&other)).await));
    // Documents: stored, replaced, absent, and refused for unknown runs.
    let doc = serde_json::json!({"metric": "amount", "values": [["2026-03-03", "120.50"]]});
    log(format!("{:?}", l.document(&run, "baseline").await));
    log(format!(
        "{:?}",
        l.put_document(&run, "baseline", &doc).await
    ));
    log(format!("{:?}", l.document(&run, "baseline").await));
    let doc2 = serde_json::json!({"approved_by": "grace"});
    log(format!(
        "{:?}",
        l.put_document(&run, "baseline", &doc2).await
    ));
    let stored = l.document(&run, "baseline").await;
    assert_eq!(stored.as_ref().ok(), Some(&Some(doc2.clone())), "replaced");
    log(format!("{stored:?}"));
    log(format!("{:?}", l.document(&run, "other").await));
    // Only the first of several racing stores wins.
    let first = serde_json::json!({"first": true});
    let second = serde_json::json!({"first": false});
    let won = l.put_document_if_absent(&run, "baseline2", &first).await;
    assert_eq!(won.as_ref().ok(), Some(&true), "{won:?}");
    log(format!("{won:?}"));
    let lost = l.put_document_if_absent(&run, "baseline2", &second).await;
    assert_eq!(lost.as_ref().ok(), Some(&false), "{lost:?}");
    log(format!("{lost:?}"));
    let kept = l.document(&run, "baseline2").await;
    assert_eq!(kept.as_ref().ok(), Some(&Some(first)), "{kept:?}");
    log(format!("{kept:?}"));
    let unknown = RunId::new("no_such_run").expect("run id");
    log(format!(
        "{:?}",
        l.put_document(&unknown, "baseline", &doc).await
    ));
    // Heartbeats renew a held lease only; an operator's release needs who
    // and why, takes a running batch back to pending with its attempts
    // counted from zero, and refuses a batch that is not running or
    // failed; a live holder is alive.
    let held = l.claim(&run, "w9", lease, None).await;
    log(format!("{held:?}"));
    if let Ok(Some(c)) = held {
        clock.advance(Duration::from_secs(30));
        log(format!(
            "{:?}",
            l.renew(&run, &c.batch.id, c.token, lease).await
        ));
        log(format!(
            "{:?}",
            l.renew(&run, &c.batch.id, c.token + 1, lease).await
        ));
        let mine = l
            .batches(&run)
            .await
            .ok()
            .and_then(|bs| bs.into_iter().find(|b| b.batch.id == c.batch.id))
            .and_then(|b| b.lease);
        log(format!("{mine:?}"));
        if let Some(lease) = &mine {
            log(format!("{:?}", l.liveness(lease).await));
        }
        log(format!(
            "{:?}",
            l.release(&run, &c.batch.id, " ", "why").await
        ));
        log(format!(
            "{:?}",
            l.release(&run, &c.batch.id, "grace", "its worker will not finish")
                .await
        ));
        log(format!(
            "{:?}",
            l.release(&run, &c.batch.id, "grace", "again").await
        ));
        log(format!(
            "{:?}",
            l.transition(
                &run,
                &c.batch.id,
                Some(c.token),
                BatchState::Written,
                BatchUpdate::reason("late")
            )
            .await
        ));
    }
    // Steering from any process: pause, resume, cancel, each logged.
    log(format!("{:?}", l.steering(&run).await));
    log(format!(
        "{:?}",
        l.steer(&run, Steering::Pause, "grace").await
    ));
    log(format!("{:?}", l.steering(&run).await));
    log(format!(
        "{:?}",
        l.steer(&run, Steering::Cancel, "ops").await
    ));
    log(format!("{:?}", l.steering(&run).await));
    log(format!("{:?}", l.steer(&run, Steering::Run, "ops").await));
    log(format!("{:?}", l.steering(&run).await));
    log(format!(
        "{:?}",
        l.steer(&unknown, Steering::Pause, "ops").await
    ));
    log(format!("{:?}", l.batches(&run).await));
    log(format!("{:?}", l.transitions(&run).await));
    log(format!("{:?}", l.run(&run).await));
    log(format!("{:?}", l.now()));
    out
}

/// A ledger behaves exactly like [`MemoryLedger`](backfill_core::MemoryLedger):
/// the same script gives the same answers, step by step. `clock` must be
/// the ledger's clock, made with [`ledger_clock`].
pub async fn ledger_mirrors_memory(l: &dyn Ledger, clock: &ManualClock) {
    let mc = ledger_clock();
    let mem = backfill_core::MemoryLedger::with_clock(mc.clone());
    let expected = ledger_script(&mem, &mc).await;
    let got = ledger_script(l, clock).await;
    for (step, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "step {step}");
    }
    assert_eq!(expected.len(), got.len());
}

/// The env's ledger, made on a manual clock, behaves exactly like
/// [`MemoryLedger`](backfill_core::MemoryLedger) (see
/// [`ledger_mirrors_memory`]); it hands out in-transaction marks exactly
/// when the engine says its ledger commits with the data.
pub async fn mirrors_memory_ledger(env: Env) {
    let clock = ledger_clock();
    let l = env.ledger_with_clock(clock.clone()).await;
    ledger_mirrors_memory(l.as_ref(), &clock).await;
    let first = &daily_plan(TableRef::new(ident("facts"))).batches[0];
    let mark = l.tx_mark(&RunId::new("mirror").expect("run id"), &first.id, 1);
    assert_eq!(
        mark.is_some(),
        env.capabilities.ledger_in_data_tx,
        "ledger_in_data_tx says whether the ledger hands out marks: {mark:?}"
    );
}

/// Locks, fingerprints and unknown runs are refused; claims go in plan
/// order with fencing tokens that grow with every claim of a batch; after
/// a lease expires, pending batches still come first, then the takeover;
/// the worker that lost its lease cannot move its batch.
pub async fn ledger_refuses_and_fences(env: Env) {
    let clock = Arc::new(ManualClock::new(ledger_t0()));
    let l = env.ledger_with_clock(clock.clone()).await;
    let p = daily_plan(TableRef::new(ident("facts")));
    let a = RunId::new("a").expect("run id");
    let b = RunId::new("b").expect("run id");
    let facts = TableRef::new(ident("facts"));
    // Lock refusal.
    l.lock_target(&facts, &a).await.expect("lock");
    let err = l.lock_target(&facts, &b).await.expect_err("locked");
    assert!(
        matches!(err, Error::TargetLocked { ref holder, .. } if holder == "a"),
        "{err:?}"
    );
    // Resume with a different fingerprint is refused.
    let begin = |fp: &'static str| {
        let (l, batches) = (l.clone(), p.batches.clone());
        async move { l.begin_run(&ledger_record("a", fp), &batches).await }
    };
    assert_eq!(begin("fp").await.expect("begin"), RunStart::New);
    assert_eq!(begin("fp").await.expect("resume"), RunStart::Resumed);
    let err = begin("other").await.expect_err("another plan");
    assert!(matches!(err, Error::FingerprintMismatch { .. }), "{err:?}");
    let err = l.run(&b).await.expect_err("no such run");
    assert!(matches!(err, Error::RunNotFound(_)), "{err:?}");
    // Claims go in plan order; tokens grow with every claim of a batch.
    let claim = |worker: &'static str, lease: u64| {
        let (l, a) = (l.clone(), a.clone());
        async move {
            l.claim(&a, worker, Duration::from_secs(lease), None)
                .await
                .expect("claim")
                .expect("a batch to claim")
        }
    };
    let c1 = claim("w1", 10).await;
    assert_eq!((c1.batch.seq, c1.token, c1.attempt), (0, 1, 1));
    let c2 = claim("w2", 10).await;
    assert_eq!(c2.batch.seq, 1);
    // After expiry, pending batches still come first, then takeovers.
    clock.advance(Duration::from_secs(11));
    for seq in 2..5 {
        assert_eq!(claim("w3", 100).await.batch.seq, seq);
    }
    let c = claim("w3", 100).await;
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
        .expect_err("fenced out");
    assert!(matches!(err, Error::LeaseLost { token: 1, .. }), "{err:?}");
    l.transition(
        &a,
        &c.batch.id,
        Some(c.token),
        BatchState::Written,
        BatchUpdate::reason("ok"),
    )
    .await
    .expect("the new holder writes");
}
