//! The adapter conformance suite, run on the fake warehouse.

backfill_testkit::conformance_tests!(|_name: &str| async {
    Some(backfill_testkit::conformance::fake_env())
});
