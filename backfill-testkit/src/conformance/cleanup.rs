//! Conformance cases for cleanup: only expired tables this library made
//! are dropped, never live data, and a dry run drops nothing.

use backfill_core::cleanup::{CleanupOptions, Kept};
use backfill_core::jiff::SignedDuration;
use backfill_core::warehouse::Warehouse;

use super::{original_rows, seed_table, setup, Env, Pattern};

/// Runs and cuts over, then cleans up: before expiry nothing goes; a dry
/// run after expiry names what would go and drops nothing; the real run
/// drops exactly that, records it, keeps a version that a view still
/// reads, leaves a look-alike table the ledger never recorded, and leaves
/// the visible data intact.
pub async fn cleanup_drops_only_expired_assets(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "cleanup").await;
    let runner = case.runner();
    case.run_and_cut_over(&runner).await.expect("run");
    let stranger = seed_table(&case.env, "facts__bf_pre_someone_else", &original_rows()).await;
    let w: &dyn Warehouse = case.env.warehouse.as_ref();
    let assets = case
        .env
        .ledger
        .assets(Some(&case.job.run_id))
        .await
        .expect("assets");
    assert!(!assets.is_empty(), "the run recorded its tables");

    let now = case.env.ledger.now();
    let early = runner
        .cleanup(&CleanupOptions::default())
        .await
        .expect("cleanup");
    assert!(
        early.dropped.is_empty() && early.missing.is_empty(),
        "{early}"
    );
    assert!(
        early
            .kept
            .iter()
            .all(|(_, why)| matches!(why, Kept::NotExpired | Kept::Live | Kept::AlreadyDropped)),
        "{early}"
    );

    let later = now
        .checked_add(SignedDuration::from_hours(24 * 8))
        .expect("time");
    let dry = runner
        .cleanup(&CleanupOptions {
            dry_run: true,
            now: Some(later),
            ..CleanupOptions::default()
        })
        .await
        .expect("dry run");
    // Everything but a parallel version (live behind its view) expires.
    assert_eq!(
        dry.dropped.is_empty(),
        pattern == Pattern::Parallel,
        "{dry}"
    );
    for a in &dry.dropped {
        assert!(w.describe(&a.table).await.expect("describe").is_some());
    }

    let done = runner
        .cleanup(&CleanupOptions {
            now: Some(later),
            ..CleanupOptions::default()
        })
        .await
        .expect("cleanup");
    assert_eq!(done.dropped, dry.dropped, "{done}");
    for a in &done.dropped {
        assert!(w.describe(&a.table).await.expect("describe").is_none());
    }
    let live: Vec<_> = done
        .kept
        .iter()
        .filter(|(_, why)| *why == Kept::Live)
        .collect();
    assert_eq!(
        live.len(),
        usize::from(pattern == Pattern::Parallel),
        "{done}"
    );
    for (a, _) in &live {
        assert!(w.describe(&a.table).await.expect("describe").is_some());
    }
    let recorded = case
        .env
        .ledger
        .assets(Some(&case.job.run_id))
        .await
        .expect("assets");
    for a in &recorded {
        let dropped = done
            .dropped
            .iter()
            .chain(&done.missing)
            .any(|d| d.table == a.table);
        if dropped {
            assert!(a.dropped_at.is_some(), "recorded: {a:?}");
        } else {
            // Kept: live, or gone before (a stage that became the target).
            let why = done.kept.iter().find(|(k, _)| k.table == a.table);
            assert!(
                matches!(why, Some((_, Kept::Live | Kept::AlreadyDropped))),
                "{a:?} {why:?}"
            );
        }
    }
    assert!(w.describe(&stranger).await.expect("describe").is_some());
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);

    let again = runner
        .cleanup(&CleanupOptions {
            now: Some(later),
            ..CleanupOptions::default()
        })
        .await
        .expect("again");
    assert!(
        again.dropped.is_empty() && again.missing.is_empty(),
        "{again}"
    );
}
