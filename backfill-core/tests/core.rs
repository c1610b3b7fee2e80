//! Integration tests of the backfill model: planners (with DST), the
//! ledger state machine, brief preflight, identifiers and the SQL renderer.
//!
//! Every property here would fail if the feature it names broke.

use std::collections::HashSet;

use backfill_core::jiff::civil::{date, Date, DateTime, Time, Weekday};
use backfill_core::jiff::tz::TimeZone;
use backfill_core::jiff::{SignedDuration, Timestamp, ToSpan};
use backfill_core::{
    Batch, Bounds, Error, Grain, Ident, Plan, Planner, Predicate, Scope, TableRef, TimeColumn,
    Value,
};
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
];
const GRAINS: &[Grain] = &[Grain::Hour, Grain::Day, Grain::Week, Grain::Month];
const COLUMNS: &[TimeColumn] = &[TimeColumn::Date, TimeColumn::Local, TimeColumn::Instant];

/// A modest case count, and no regression files written next to the test.
fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn target() -> TableRef {
    TableRef::parse("analytics.facts").unwrap()
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

/// The instant of an existing, unambiguous wall-clock time.
fn instant(zone: &str, dt: DateTime) -> Timestamp {
    tz(zone)
        .to_ambiguous_zoned_datetime(dt)
        .unambiguous()
        .unwrap()
        .timestamp()
}

fn ts(v: &Value) -> Timestamp {
    match v {
        Value::Timestamp(t) => *t,
        other => panic!("expected a timestamp, got {other:?}"),
    }
}

/// Checks the structure shared by every range plan: non-empty batches in
/// order, contiguous, covering `[first, last)` exactly, sequenced, unique
/// ids, and predicates equal to the batch range (plus the scope filter).
fn check_range_plan(plan: &Plan, first: &Value, last: &Value) -> Result<(), TestCaseError> {
    let bs = &plan.batches;
    prop_assert!(!bs.is_empty(), "no batches");
    let mut ids = HashSet::new();
    for (i, b) in bs.iter().enumerate() {
        prop_assert_eq!(b.seq as usize, i);
        prop_assert!(ids.insert(b.id.clone()), "duplicate id {}", b.id);
        let (s, e) = (b.start.as_ref().unwrap(), b.end.as_ref().unwrap());
        prop_assert_eq!(
            s.compare(e),
            Some(std::cmp::Ordering::Less),
            "batch {} is empty or inverted: {:?} .. {:?}",
            b.id,
            s,
            e
        );
        let range = Predicate::Range {
            column: plan.scope.batch_column.clone(),
            start: Some(s.clone()),
            end: Some(e.clone()),
        };
        let expected = match &plan.scope.filter {
            Some(f) => range.and(f.clone()),
            None => range,
        };
        prop_assert_eq!(&b.predicate, &expected);
    }
    for w in bs.windows(2) {
        // Contiguous: half-open batches that touch are ordered and disjoint.
        prop_assert_eq!(
            &w[0].end,
            &w[1].start,
            "gap or overlap between {} and {}",
            w[0].id,
            w[1].id
        );
    }
    prop_assert_eq!(bs[0].start.as_ref(), Some(first));
    prop_assert_eq!(bs.last().unwrap().end.as_ref(), Some(last));
    // The scope predicate spans exactly the same range.
    if let Predicate::Range { start, end, .. } = plan.scope.predicate().unwrap() {
        prop_assert_eq!(start.as_ref(), Some(first));
        prop_assert_eq!(end.as_ref(), Some(last));
    }
    prop_assert_eq!(plan.fingerprint.len(), 64);
    prop_assert!(plan.fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    Ok(())
}

/// Building the same scope twice (also after a JSON round trip of the
/// scope, as a resume would) gives the identical plan.
fn check_stable(plan: &Plan) -> Result<(), TestCaseError> {
    let again = Plan::build(plan.scope.clone(), plan.planner.clone()).unwrap();
    prop_assert_eq!(&again, plan);
    let json = serde_json::to_string(&plan.scope).unwrap();
    let scope: Scope = serde_json::from_str(&json).unwrap();
    let revived = Plan::build(scope, plan.planner.clone()).unwrap();
    prop_assert_eq!(&revived.fingerprint, &plan.fingerprint);
    let plan_json = serde_json::to_string(plan).unwrap();
    let back: Plan = serde_json::from_str(&plan_json).unwrap();
    prop_assert_eq!(&back, plan);
    Ok(())
}

/// A changed scope (or planner) gives a different fingerprint.
fn check_fingerprint_sensitive(plan: &Plan) -> Result<(), TestCaseError> {
    let mut other = plan.scope.clone();
    other.batch_column = Ident::new("other_col").unwrap();
    let p = Plan::build(other, plan.planner.clone()).unwrap();
    prop_assert_ne!(&p.fingerprint, &plan.fingerprint);

    let other = plan.scope.clone().with_expected_rows(12345);
    let p = Plan::build(other, plan.planner.clone()).unwrap();
    prop_assert_ne!(&p.fingerprint, &plan.fingerprint);

    let filter = Predicate::In {
        column: Ident::new("customer").unwrap(),
        values: vec![Value::Int(7)],
    };
    let other = plan.scope.clone().with_filter(filter.clone());
    let p = Plan::build(other, plan.planner.clone()).unwrap();
    prop_assert_ne!(&p.fingerprint, &plan.fingerprint);
    // The filter reaches every batch.
    for b in &p.batches {
        match &b.predicate {
            Predicate::And(parts) => prop_assert_eq!(parts.last(), Some(&filter)),
            other => prop_assert!(false, "batch predicate without the filter: {:?}", other),
        }
    }
    Ok(())
}

mod planner {
    use super::*;

    const DST_DATES: &[(i16, i8, i8)] = &[
        (2026, 3, 8),
        (2026, 11, 1),
        (2026, 3, 29),
        (2026, 10, 25),
        (2026, 4, 5),
        (2026, 10, 4),
        (2025, 3, 9),
        (2025, 11, 2),
        (2025, 4, 6),
        (2025, 10, 5),
    ];

    #[derive(Clone, Debug)]
    struct WindowCase {
        zone: &'static str,
        grain: Grain,
        column: TimeColumn,
        start: DateTime,
        end: DateTime,
    }

    fn arb_start_date() -> impl Strategy<Value = Date> {
        prop_oneof![
            (0i64..4000).prop_map(|d| date(2020, 1, 1).checked_add(d.days()).unwrap()),
            // Just before a DST change in one of the zones.
            (prop::sample::select(DST_DATES), -3i64..=0)
                .prop_map(|((y, m, d), off)| date(y, m, d).checked_add(off.days()).unwrap()),
        ]
    }

    fn max_span_minutes(grain: Grain) -> usize {
        match grain {
            Grain::Hour => 3 * 1440,
            Grain::Day => 60 * 1440,
            Grain::Week => 200 * 1440,
            Grain::Month => 3 * 365 * 1440,
        }
    }

    fn arb_window_case() -> impl Strategy<Value = WindowCase> {
        (
            prop::sample::select(ZONES),
            prop::sample::select(GRAINS),
            prop::sample::select(COLUMNS),
            arb_start_date(),
            0i64..1440,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(zone, grain, column, d, minute, span)| {
                let span = span.index(max_span_minutes(grain)) as i64 + 1;
                let (start, end) = if column == TimeColumn::Date {
                    let start = d.to_datetime(Time::midnight());
                    (start, start.checked_add((span / 1440 + 1).days()).unwrap())
                } else {
                    let start = d.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
                    (start, start.checked_add(span.minutes()).unwrap())
                };
                WindowCase {
                    zone,
                    grain,
                    column,
                    start,
                    end,
                }
            })
    }

    fn expected_value(zone: &str, column: TimeColumn, dt: DateTime) -> Value {
        match column {
            TimeColumn::Date => Value::Date(dt.date()),
            TimeColumn::Local => Value::DateTime(dt),
            TimeColumn::Instant => Value::Timestamp(instant(zone, dt)),
        }
    }

    /// The wall-clock time of a boundary value.
    fn wall(zone: &str, v: &Value) -> DateTime {
        match v {
            Value::Date(d) => d.to_datetime(Time::midnight()),
            Value::DateTime(dt) => *dt,
            Value::Timestamp(t) => t.to_zoned_datetime(tz(zone)).datetime(),
            other => panic!("not a time value: {other:?}"),
        }
    }

    /// The labels of every grain period that `[start, end)` touches,
    /// worked out by walking the covered dates / hours one by one.
    fn expected_ids(grain: Grain, start: DateTime, end: DateTime) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |s: String| {
            if out.last() != Some(&s) {
                out.push(s);
            }
        };
        let last = end.checked_sub(1.nanosecond()).unwrap();
        if grain == Grain::Hour {
            let mut h = start.date().at(start.hour(), 0, 0, 0);
            while h <= last {
                push(format!("{}T{:02}", h.date(), h.hour()));
                h = h.checked_add(1.hour()).unwrap();
            }
            return out;
        }
        let mut d = start.date();
        while d <= last.date() {
            push(match grain {
                Grain::Day => d.to_string(),
                Grain::Week => {
                    let monday = d
                        .checked_sub(i64::from(d.weekday().to_monday_zero_offset()).days())
                        .unwrap();
                    format!("week-{monday}")
                }
                Grain::Month => format!("{:04}-{:02}", d.year(), d.month()),
                Grain::Hour => unreachable!(),
            });
            d = d.tomorrow().unwrap();
        }
        out
    }

    fn check_windows(c: &WindowCase) -> Result<(), TestCaseError> {
        let bounds = Bounds::Time {
            start: c.start,
            end: c.end,
            column: c.column,
        };
        if c.column == TimeColumn::Instant {
            let exists = |dt| {
                tz(c.zone)
                    .to_ambiguous_zoned_datetime(dt)
                    .unambiguous()
                    .is_ok()
            };
            if !exists(c.start) || !exists(c.end) {
                // A wall-clock bound in a gap or a fold is refused.
                let r = Scope::new(target(), "ts", bounds, c.zone);
                prop_assert!(matches!(r, Err(Error::InvalidScope(_))), "{:?}", r);
                return Ok(());
            }
        }
        let scope = Scope::new(target(), "ts", bounds, c.zone).unwrap();
        let planner = Planner::Windows { grain: c.grain };
        let built = Plan::build(scope, planner);
        if c.column == TimeColumn::Date && c.grain == Grain::Hour {
            prop_assert!(matches!(built, Err(Error::InvalidPlan(_))), "{:?}", built);
            return Ok(());
        }
        let plan = built.unwrap();
        let first = expected_value(c.zone, c.column, c.start);
        let last = expected_value(c.zone, c.column, c.end);
        check_range_plan(&plan, &first, &last)?;

        if c.column == TimeColumn::Instant && c.grain == Grain::Hour {
            // Hours on an instant column are 3,600 real seconds.
            let hour = SignedDuration::from_hours(1);
            for (i, b) in plan.batches.iter().enumerate() {
                let len = ts(b.end.as_ref().unwrap()).duration_since(ts(b.start.as_ref().unwrap()));
                prop_assert!(len <= hour, "batch {} lasts {:?}", b.id, len);
                if i > 0 && i + 1 < plan.batches.len() {
                    prop_assert_eq!(len, hour, "inner batch {} is not one hour", b.id);
                }
            }
        } else {
            // Every inner boundary sits on a grain boundary of the zone's
            // wall clock, and the ids name the periods covered.
            for b in plan.batches.iter().skip(1) {
                let w = wall(c.zone, b.start.as_ref().unwrap());
                let ok = match c.grain {
                    Grain::Hour => w.minute() == 0 && w.second() == 0 && w.subsec_nanosecond() == 0,
                    Grain::Day => w.time() == Time::midnight(),
                    Grain::Week => w.time() == Time::midnight() && w.weekday() == Weekday::Monday,
                    Grain::Month => w.time() == Time::midnight() && w.day() == 1,
                };
                prop_assert!(ok, "batch {} starts off-grain at {}", b.id, w);
            }
            let ids: Vec<String> = plan.batches.iter().map(|b| b.id.0.clone()).collect();
            prop_assert_eq!(ids, expected_ids(c.grain, c.start, c.end));
        }
        check_stable(&plan)?;
        check_fingerprint_sensitive(&plan)?;
        // Another grain over the same scope is another plan.
        let other_grain = if c.grain == Grain::Month {
            Grain::Week
        } else {
            Grain::Month
        };
        let p = Plan::build(plan.scope.clone(), Planner::Windows { grain: other_grain }).unwrap();
        prop_assert_ne!(&p.fingerprint, &plan.fingerprint);
        Ok(())
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn windows_are_ordered_contiguous_and_cover_the_scope(c in arb_window_case()) {
            check_windows(&c)?;
        }
    }

    fn arb_keys() -> impl Strategy<Value = (i64, i64, u64)> {
        prop_oneof![
            4 => (-1_000_000_000_000i64..1_000_000_000_000, 1i64..4000, 1u64..500)
                .prop_map(|(s, len, w)| (s, s + len, w)),
            1 => (1i64..4000, 1u64..500).prop_map(|(len, w)| (i64::MAX - len, i64::MAX, w)),
            1 => (1i64..4000, 1u64..500).prop_map(|(len, w)| (i64::MIN, i64::MIN + len, w)),
            // Huge widths over huge ranges: a handful of batches, no overflow.
            1 => (any::<i64>(), any::<i64>(), (u64::MAX / 4)..=u64::MAX)
                .prop_filter_map("empty", |(a, b, w)| (a != b).then(|| (a.min(b), a.max(b), w))),
        ]
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn key_ranges_are_ordered_contiguous_and_cover_the_scope(
            (start, end, width) in arb_keys(),
            probes in prop::collection::vec(any::<prop::sample::Index>(), 8),
        ) {
            let scope = Scope::new(target(), "id", Bounds::Keys { start, end }, "UTC").unwrap();
            let plan = Plan::build(scope, Planner::KeyRanges { width }).unwrap();
            check_range_plan(&plan, &Value::Int(start), &Value::Int(end))?;
            let effective = i128::from(width.min(i64::MAX as u64));
            let len = i128::from(end) - i128::from(start);
            prop_assert_eq!(plan.batches.len() as i128, (len + effective - 1) / effective);
            for (i, b) in plan.batches.iter().enumerate() {
                let (lo, hi) = (b.start.as_ref().unwrap().as_i64().unwrap(), b.end.as_ref().unwrap().as_i64().unwrap());
                prop_assert_eq!(&b.id.0, &format!("k-{lo}-{hi}"));
                let w = i128::from(hi) - i128::from(lo);
                if i + 1 < plan.batches.len() {
                    prop_assert_eq!(w, effective);
                } else {
                    prop_assert!(w <= effective);
                }
            }
            // Every key in scope is in exactly one batch; keys outside in none.
            for p in &probes {
                let k = (i128::from(start) + (p.index(len.min(usize::MAX as i128) as usize) as i128)) as i64;
                let row = |_: &Ident| Value::Int(k);
                prop_assert_eq!(plan.batches.iter().filter(|b| b.predicate.matches(&row)).count(), 1);
            }
            for k in [start.checked_sub(1), Some(end)].into_iter().flatten() {
                let row = |_: &Ident| Value::Int(k);
                prop_assert!(!plan.batches.iter().any(|b| b.predicate.matches(&row)));
            }
            check_stable(&plan)?;
            check_fingerprint_sensitive(&plan)?;
            let other_width = if width == u64::MAX { width - 1 } else { width + 1 };
            let wider = Plan::build(plan.scope.clone(), Planner::KeyRanges { width: other_width }).unwrap();
            prop_assert_ne!(&wider.fingerprint, &plan.fingerprint);
            if end < i64::MAX {
                let bigger = Scope::new(target(), "id", Bounds::Keys { start, end: end + 1 }, "UTC").unwrap();
                let p = Plan::build(bigger, Planner::KeyRanges { width }).unwrap();
                prop_assert_ne!(&p.fingerprint, &plan.fingerprint);
            }
        }
    }

    proptest! {
        #![proptest_config(cfg(128))]

        /// NaN and infinity are not partitions: a batch `IN (NaN)` matches
        /// nothing on one engine and every NaN row on another. Refused
        /// wherever they are in the list.
        #[test]
        fn non_finite_partitions_are_refused(
            finite in prop::collection::hash_set(-1_000_000i64..1_000_000, 0..20),
            bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
            at in any::<prop::sample::Index>(),
        ) {
            let mut values: Vec<Value> = finite.into_iter().map(|v| Value::Float(v as f64 / 4.0)).collect();
            values.insert(at.index(values.len() + 1), Value::Float(bad));
            let r = Scope::new(target(), "part", Bounds::Partitions { values }, "UTC");
            prop_assert!(matches!(&r, Err(Error::InvalidScope(m)) if m.contains("finite")), "{:?}", r);
        }
    }

    fn arb_partition_values() -> impl Strategy<Value = Vec<Value>> {
        prop_oneof![
            prop::collection::hash_set(any::<i64>(), 1..40)
                .prop_map(|s| s.into_iter().map(Value::Int).collect::<Vec<_>>()),
            prop::collection::hash_set("[a-z0-9_' -]{0,10}", 1..40)
                .prop_map(|s| s.into_iter().map(Value::Text).collect::<Vec<_>>()),
            prop::collection::hash_set(0i64..5000, 1..40).prop_map(|s| s
                .into_iter()
                .map(|d| Value::Date(date(2015, 1, 1).checked_add(d.days()).unwrap()))
                .collect::<Vec<_>>()),
        ]
        .prop_shuffle()
    }

    proptest! {
        #![proptest_config(cfg(128))]

        #[test]
        fn partitions_give_one_batch_per_value_in_order(values in arb_partition_values()) {
            let scope = Scope::new(target(), "part", Bounds::Partitions { values: values.clone() }, "UTC").unwrap();
            let plan = Plan::build(scope, Planner::Partitions).unwrap();
            prop_assert_eq!(plan.batches.len(), values.len());
            let mut ids = HashSet::new();
            for (i, (b, v)) in plan.batches.iter().zip(&values).enumerate() {
                prop_assert_eq!(b.seq as usize, i);
                prop_assert_eq!(b.start.as_ref(), Some(v));
                prop_assert_eq!(&b.end, &None);
                prop_assert!(ids.insert(b.id.clone()), "duplicate id {}", b.id);
                prop_assert_eq!(&b.predicate, &Predicate::In { column: Ident::new("part").unwrap(), values: vec![v.clone()] });
            }
            // Each value's rows belong to its batch and no other.
            for (i, v) in values.iter().enumerate() {
                let row = |_: &Ident| v.clone();
                let hits: Vec<usize> = plan.batches.iter().enumerate()
                    .filter(|(_, b)| b.predicate.matches(&row)).map(|(j, _)| j).collect();
                prop_assert_eq!(hits, vec![i]);
            }
            check_stable(&plan)?;
            check_fingerprint_sensitive(&plan)?;
        }

        #[test]
        fn duplicate_partitions_are_refused(
            values in arb_partition_values(),
            pick in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut dup = values.clone();
            let v = values[pick.index(values.len())].clone();
            dup.insert(at.index(dup.len() + 1), v);
            let r = Scope::new(target(), "part", Bounds::Partitions { values: dup.clone() }, "UTC");
            prop_assert!(matches!(r, Err(Error::InvalidScope(_))), "{:?}", r);
            // Plan::build re-checks a scope that bypassed Scope::new.
            let mut scope = Scope::new(target(), "part", Bounds::Partitions { values }, "UTC").unwrap();
            scope.bounds = Bounds::Partitions { values: dup };
            let r = Plan::build(scope, Planner::Partitions);
            prop_assert!(matches!(r, Err(Error::InvalidScope(_))), "{:?}", r);
        }

        #[test]
        fn hash_buckets_put_every_row_in_exactly_one_bucket(
            buckets in 1u32..64,
            rows in prop::collection::vec(prop_oneof![
                any::<i64>().prop_map(Value::Int),
                ".{0,12}".prop_map(Value::Text),
                Just(Value::Null),
            ], 1..64),
        ) {
            let scope = Scope::new(target(), "customer_id", Bounds::All, "UTC").unwrap();
            let plan = Plan::build(scope, Planner::HashBuckets { buckets }).unwrap();
            prop_assert_eq!(plan.batches.len(), buckets as usize);
            for (i, b) in plan.batches.iter().enumerate() {
                prop_assert_eq!(b.seq as usize, i);
                prop_assert_eq!(&b.id.0, &format!("h-{i}-of-{buckets}"));
            }
            let ids: HashSet<_> = plan.batches.iter().map(|b| b.id.clone()).collect();
            prop_assert_eq!(ids.len(), plan.batches.len());
            for v in &rows {
                let row = |c: &Ident| {
                    assert_eq!(c.as_str(), "customer_id");
                    v.clone()
                };
                let hits = plan.batches.iter().filter(|b| b.predicate.matches(&row)).count();
                prop_assert_eq!(hits, 1, "value {:?} is in {} buckets", v, hits);
            }
            check_stable(&plan)?;
            let other = Plan::build(plan.scope.clone(), Planner::HashBuckets { buckets: buckets + 1 }).unwrap();
            prop_assert_ne!(&other.fingerprint, &plan.fingerprint);
        }

        #[test]
        fn hash_buckets_keep_the_scope_bounds(
            buckets in 1u32..16,
            keys in prop::collection::vec(-50i64..150, 1..40),
        ) {
            let scope = Scope::new(target(), "id", Bounds::Keys { start: 0, end: 100 }, "UTC").unwrap();
            let plan = Plan::build(scope, Planner::HashBuckets { buckets }).unwrap();
            for k in keys {
                let row = |_: &Ident| Value::Int(k);
                let hits = plan.batches.iter().filter(|b| b.predicate.matches(&row)).count();
                prop_assert_eq!(hits, usize::from((0..100).contains(&k)), "key {}", k);
            }
        }
    }

    #[test]
    fn mixed_type_partition_lists_are_refused() {
        // Int(1) and Text("1") would both get the batch id "p-1"; the ledger
        // finds batches by id, so a list must have one type.
        let values = vec![Value::Int(1), Value::Text("1".into())];
        let r = Scope::new(target(), "part", Bounds::Partitions { values }, "UTC");
        assert!(matches!(r, Err(Error::InvalidScope(_))), "{r:?}");
    }

    #[test]
    fn partitions_equal_in_sql_are_duplicates() {
        // Value::compare says 0.0 == -0.0 (so does SQL), but the duplicate
        // check sorts and compares with f64::total_cmp, which tells them
        // apart: two batches then overwrite the same rows.
        let values = vec![Value::Float(0.0), Value::Float(-0.0)];
        let r = Scope::new(target(), "part", Bounds::Partitions { values }, "UTC");
        assert!(matches!(r, Err(Error::InvalidScope(_))), "{r:?}");
    }

    #[test]
    fn planners_refuse_the_wrong_bounds_and_zero_sizes() {
        let keys = Scope::new(target(), "id", Bounds::Keys { start: 0, end: 10 }, "UTC").unwrap();
        let days = Scope::new(
            target(),
            "d",
            Bounds::dates(date(2026, 1, 1), date(2026, 2, 1)),
            "UTC",
        )
        .unwrap();
        let parts = Scope::new(
            target(),
            "p",
            Bounds::Partitions {
                values: vec![Value::Int(1)],
            },
            "UTC",
        )
        .unwrap();
        let bad = [
            Plan::build(keys.clone(), Planner::Windows { grain: Grain::Day }),
            Plan::build(keys.clone(), Planner::Partitions),
            Plan::build(keys.clone(), Planner::KeyRanges { width: 0 }),
            Plan::build(keys.clone(), Planner::HashBuckets { buckets: 0 }),
            Plan::build(keys, Planner::Keyset { rows_per_batch: 10 }),
            Plan::build(days.clone(), Planner::KeyRanges { width: 1 }),
            Plan::build(days.clone(), Planner::Partitions),
            Plan::build(days, Planner::Windows { grain: Grain::Hour }),
            Plan::build(parts, Planner::Windows { grain: Grain::Day }),
        ];
        for r in bad {
            assert!(matches!(r, Err(Error::InvalidPlan(_))), "{r:?}");
        }
    }
}

mod dst {
    use super::*;

    const NY: &str = "America/New_York";

    fn instant_day_plan(zone: &str, grain: Grain, start: DateTime, end: DateTime) -> Plan {
        let scope = Scope::new(target(), "event_at", Bounds::instants(start, end), zone).unwrap();
        Plan::build(scope, Planner::Windows { grain }).unwrap()
    }

    fn len(b: &Batch) -> SignedDuration {
        ts(b.end.as_ref().unwrap()).duration_since(ts(b.start.as_ref().unwrap()))
    }

    #[test]
    fn spring_forward_day_is_23_hours() {
        let plan = instant_day_plan(
            NY,
            Grain::Day,
            date(2026, 3, 8).at(0, 0, 0, 0),
            date(2026, 3, 9).at(0, 0, 0, 0),
        );
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0].id.0, "2026-03-08");
        assert_eq!(len(&plan.batches[0]), SignedDuration::from_hours(23));
        assert_eq!(
            ts(plan.batches[0].start.as_ref().unwrap()),
            "2026-03-08T05:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn fall_back_day_is_25_hours() {
        let plan = instant_day_plan(
            NY,
            Grain::Day,
            date(2026, 11, 1).at(0, 0, 0, 0),
            date(2026, 11, 2).at(0, 0, 0, 0),
        );
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0].id.0, "2026-11-01");
        assert_eq!(len(&plan.batches[0]), SignedDuration::from_hours(25));
    }

    #[test]
    fn daily_batches_across_a_month_know_each_day_length() {
        let plan = instant_day_plan(
            NY,
            Grain::Day,
            date(2026, 3, 1).at(0, 0, 0, 0),
            date(2026, 4, 1).at(0, 0, 0, 0),
        );
        assert_eq!(plan.batches.len(), 31);
        for b in &plan.batches {
            let expect = if b.id.0 == "2026-03-08" { 23 } else { 24 };
            assert_eq!(len(b), SignedDuration::from_hours(expect), "{}", b.id);
        }
        let plan = instant_day_plan(
            "Europe/Berlin",
            Grain::Day,
            date(2026, 10, 20).at(0, 0, 0, 0),
            date(2026, 10, 30).at(0, 0, 0, 0),
        );
        let long: Vec<_> = plan
            .batches
            .iter()
            .filter(|b| len(b) != SignedDuration::from_hours(24))
            .collect();
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].id.0, "2026-10-25");
        assert_eq!(len(long[0]), SignedDuration::from_hours(25));
        // Lord Howe moves its clocks by half an hour.
        let plan = instant_day_plan(
            "Australia/Lord_Howe",
            Grain::Day,
            date(2026, 4, 5).at(0, 0, 0, 0),
            date(2026, 4, 6).at(0, 0, 0, 0),
        );
        assert_eq!(
            len(&plan.batches[0]),
            SignedDuration::from_mins(24 * 60 + 30)
        );
    }

    #[test]
    fn hourly_batches_on_a_25_hour_day() {
        let plan = instant_day_plan(
            NY,
            Grain::Hour,
            date(2026, 11, 1).at(0, 0, 0, 0),
            date(2026, 11, 2).at(0, 0, 0, 0),
        );
        assert_eq!(plan.batches.len(), 25);
        for b in &plan.batches {
            assert_eq!(len(b), SignedDuration::from_hours(1), "{}", b.id);
        }
        // The repeated 01:00 hour gets two distinct ids.
        let ids: HashSet<_> = plan.batches.iter().map(|b| b.id.0.clone()).collect();
        assert_eq!(ids.len(), 25);
        assert!(ids.contains("2026-11-01T01-0400"), "{ids:?}");
        assert!(ids.contains("2026-11-01T01-0500"), "{ids:?}");
        // And 23 on the spring-forward day.
        let plan = instant_day_plan(
            NY,
            Grain::Hour,
            date(2026, 3, 8).at(0, 0, 0, 0),
            date(2026, 3, 9).at(0, 0, 0, 0),
        );
        assert_eq!(plan.batches.len(), 23);
    }

    #[test]
    fn local_hourly_batches_follow_the_wall_clock() {
        // A TIMESTAMP (no zone) column stores wall-clock values: 24 hours a
        // day, even on DST days.
        let scope = Scope::new(
            target(),
            "event_at",
            Bounds::local(
                date(2026, 11, 1).at(0, 0, 0, 0),
                date(2026, 11, 2).at(0, 0, 0, 0),
            ),
            NY,
        )
        .unwrap();
        let plan = Plan::build(scope, Planner::Windows { grain: Grain::Hour }).unwrap();
        assert_eq!(plan.batches.len(), 24);
    }

    #[test]
    fn hourly_instant_batches_align_to_local_hours_in_half_hour_zones() {
        // Asia/Kolkata is UTC+05:30 all year: a local day is 24 hours.
        let plan = instant_day_plan(
            "Asia/Kolkata",
            Grain::Hour,
            date(2026, 1, 1).at(0, 0, 0, 0),
            date(2026, 1, 2).at(0, 0, 0, 0),
        );
        assert_eq!(
            plan.batches.len(),
            24,
            "{:?}",
            plan.batches.iter().map(|b| &b.id.0).collect::<Vec<_>>()
        );
        assert_eq!(plan.batches[0].id.0, "2026-01-01T00+0530");
        for b in &plan.batches {
            assert_eq!(len(b), SignedDuration::from_hours(1), "{}", b.id);
        }
    }

    #[test]
    fn nonexistent_and_ambiguous_instant_bounds_are_refused() {
        let gap = Scope::new(
            target(),
            "event_at",
            Bounds::instants(
                date(2026, 3, 8).at(2, 30, 0, 0),
                date(2026, 3, 9).at(0, 0, 0, 0),
            ),
            NY,
        );
        assert!(matches!(gap, Err(Error::InvalidScope(_))), "{gap:?}");
        let gap_end = Scope::new(
            target(),
            "event_at",
            Bounds::instants(
                date(2026, 3, 7).at(0, 0, 0, 0),
                date(2026, 3, 8).at(2, 30, 0, 0),
            ),
            NY,
        );
        assert!(
            matches!(gap_end, Err(Error::InvalidScope(_))),
            "{gap_end:?}"
        );
        let fold = Scope::new(
            target(),
            "event_at",
            Bounds::instants(
                date(2026, 11, 1).at(1, 30, 0, 0),
                date(2026, 11, 2).at(0, 0, 0, 0),
            ),
            NY,
        );
        assert!(matches!(fold, Err(Error::InvalidScope(_))), "{fold:?}");
        // A scope that bypassed Scope::new is re-checked by Plan::build.
        let mut scope = Scope::new(
            target(),
            "event_at",
            Bounds::instants(
                date(2026, 3, 8).at(0, 0, 0, 0),
                date(2026, 3, 9).at(0, 0, 0, 0),
            ),
            NY,
        )
        .unwrap();
        scope.bounds = Bounds::instants(
            date(2026, 3, 8).at(2, 30, 0, 0),
            date(2026, 3, 9).at(0, 0, 0, 0),
        );
        let r = Plan::build(scope, Planner::Windows { grain: Grain::Hour });
        assert!(matches!(r, Err(Error::InvalidScope(_))), "{r:?}");
        // The same wall-clock time on a TIMESTAMP (no zone) column is a
        // plain value and is allowed.
        let local = Scope::new(
            target(),
            "event_at",
            Bounds::local(
                date(2026, 3, 8).at(2, 30, 0, 0),
                date(2026, 3, 9).at(0, 0, 0, 0),
            ),
            NY,
        );
        assert!(local.is_ok(), "{local:?}");
    }

    #[test]
    fn malformed_scopes_are_typed_errors() {
        let d = |y, m, dd| date(y, m, dd);
        let cases = [
            (
                "unknown zone",
                Bounds::dates(d(2026, 1, 1), d(2026, 1, 2)),
                "Mars/Olympus_Mons",
            ),
            (
                "blank zone",
                Bounds::dates(d(2026, 1, 1), d(2026, 1, 2)),
                "",
            ),
            (
                "empty dates",
                Bounds::dates(d(2026, 1, 1), d(2026, 1, 1)),
                "UTC",
            ),
            (
                "inverted dates",
                Bounds::dates(d(2026, 1, 2), d(2026, 1, 1)),
                "UTC",
            ),
            (
                "empty instants",
                Bounds::instants(d(2026, 1, 1).at(5, 0, 0, 0), d(2026, 1, 1).at(5, 0, 0, 0)),
                NY,
            ),
            (
                "inverted local",
                Bounds::local(d(2026, 1, 1).at(5, 0, 0, 0), d(2026, 1, 1).at(4, 0, 0, 0)),
                NY,
            ),
            ("empty keys", Bounds::Keys { start: 5, end: 5 }, "UTC"),
            ("inverted keys", Bounds::Keys { start: 6, end: 5 }, "UTC"),
            (
                "empty partitions",
                Bounds::Partitions { values: vec![] },
                "UTC",
            ),
            (
                "null partition",
                Bounds::Partitions {
                    values: vec![Value::Int(1), Value::Null],
                },
                "UTC",
            ),
            (
                "date column off midnight",
                Bounds::Time {
                    start: d(2026, 1, 1).at(1, 0, 0, 0),
                    end: d(2026, 1, 2).at(0, 0, 0, 0),
                    column: TimeColumn::Date,
                },
                "UTC",
            ),
        ];
        for (what, bounds, zone) in cases {
            let r = Scope::new(target(), "c", bounds, zone);
            assert!(matches!(r, Err(Error::InvalidScope(_))), "{what}: {r:?}");
        }
        // Zero-width plans.
        let days = Scope::new(
            target(),
            "d",
            Bounds::dates(d(2026, 1, 1), d(2026, 1, 3)),
            "UTC",
        )
        .unwrap();
        let r = Plan::build(days, Planner::Windows { grain: Grain::Hour });
        assert!(matches!(r, Err(Error::InvalidPlan(_))), "{r:?}");
        let keys = Scope::new(target(), "k", Bounds::Keys { start: 0, end: 3 }, "UTC").unwrap();
        let r = Plan::build(keys, Planner::KeyRanges { width: 0 });
        assert!(matches!(r, Err(Error::InvalidPlan(_))), "{r:?}");
        // A bad batch column is an identifier error.
        let r = Scope::new(
            target(),
            "d; drop",
            Bounds::Keys { start: 0, end: 3 },
            "UTC",
        );
        assert!(matches!(r, Err(Error::InvalidIdentifier { .. })), "{r:?}");
    }
}

mod ledger {
    use std::sync::Arc;
    use std::time::Duration;

    use backfill_core::ledger::{
        gaps, BatchUpdate, Clock, Ledger, ManualClock, RunRecord, RunStart, Transition,
    };
    use backfill_core::{BatchId, BatchState, MemoryLedger, RunId, RunStatus};

    use super::*;

    const STATES: &[BatchState] = &[
        BatchState::Pending,
        BatchState::Running,
        BatchState::Written,
        BatchState::Validated,
        BatchState::Failed,
        BatchState::RolledBack,
    ];

    fn t0() -> Timestamp {
        "2026-05-01T12:00:00Z".parse().unwrap()
    }

    fn key_plan(n: i64) -> Plan {
        let scope = Scope::new(
            target(),
            "id",
            Bounds::Keys {
                start: 0,
                end: n * 10,
            },
            "UTC",
        )
        .unwrap();
        Plan::build(scope, Planner::KeyRanges { width: 10 }).unwrap()
    }

    fn record(run: &str, fingerprint: &str, at: Timestamp) -> RunRecord {
        RunRecord {
            run_id: RunId::new(run).unwrap(),
            target: target(),
            fingerprint: fingerprint.into(),
            code_version: "v1".into(),
            parameters: serde_json::json!({"k": 1}),
            operator: "alice".into(),
            status: RunStatus::Running,
            started_at: at,
            finished_at: None,
            rows_affected: 0,
            notes: vec![],
        }
    }

    #[test]
    fn the_state_machine_is_the_documented_one() {
        use BatchState::*;
        let allowed = [
            (Pending, Running),
            (Running, Running),
            (Running, Pending),
            (Running, Written),
            (Running, Failed),
            (Written, Validated),
            (Written, Failed),
            (Written, RolledBack),
            (Validated, RolledBack),
            (Failed, Pending),
            (Failed, RolledBack),
        ];
        for &from in STATES {
            for &to in STATES {
                assert_eq!(
                    from.can_move_to(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
            assert_eq!(BatchState::parse(from.as_str()).unwrap(), from);
        }
        assert!(Written.is_done() && Validated.is_done());
        assert!(
            !Pending.is_done() && !Running.is_done() && !Failed.is_done() && !RolledBack.is_done()
        );
    }

    #[derive(Clone, Debug)]
    enum Tok {
        None,
        Current,
        Stale,
        Ahead,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Claim {
            worker: u8,
            lease_secs: u64,
        },
        Move {
            batch: usize,
            tok: Tok,
            to: BatchState,
        },
        Advance(u64),
    }

    fn arb_ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
        (1usize..6).prop_flat_map(|n| {
            let tok = prop_oneof![
                Just(Tok::None),
                Just(Tok::Current),
                Just(Tok::Current),
                Just(Tok::Stale),
                Just(Tok::Ahead)
            ];
            let op = prop_oneof![
                3 => (0u8..3, 1u64..120).prop_map(|(worker, lease_secs)| Op::Claim { worker, lease_secs }),
                5 => (0..n, tok, prop::sample::select(STATES)).prop_map(|(batch, tok, to)| Op::Move { batch, tok, to }),
                1 => (1u64..150).prop_map(Op::Advance),
            ];
            (Just(n), prop::collection::vec(op, 1..80))
        })
    }

    #[derive(Clone, Debug)]
    struct MLease {
        token: u64,
        expires: Timestamp,
        worker: String,
    }

    #[derive(Clone, Debug)]
    struct MBatch {
        id: BatchId,
        state: BatchState,
        lease: Option<MLease>,
        attempts: u32,
        issued: Vec<u64>,
    }

    async fn run_ops(n: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let clock = Arc::new(ManualClock::new(t0()));
        let ledger = MemoryLedger::with_clock(clock.clone());
        let plan = key_plan(n as i64);
        let run = RunId::new("prop_run").unwrap();
        let rec = record("prop_run", &plan.fingerprint, clock.now());
        prop_assert_eq!(
            ledger.begin_run(&rec, &plan.batches).await.unwrap(),
            RunStart::New
        );
        let mut model: Vec<MBatch> = plan
            .batches
            .iter()
            .map(|b| MBatch {
                id: b.id.clone(),
                state: BatchState::Pending,
                lease: None,
                attempts: 0,
                issued: vec![],
            })
            .collect();
        // (batch, from, to, at) of every successful change; the first entry
        // is the run being planned.
        let mut log: Vec<(Option<BatchId>, String, String, Timestamp)> =
            vec![(None, "none".into(), "running".into(), clock.now())];

        for op in ops {
            let now = clock.now();
            match op {
                Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                Op::Claim { worker, lease_secs } => {
                    let worker = format!("w{worker}");
                    let before = ledger.batches(&run).await.unwrap();
                    let expect = model
                        .iter()
                        .position(|b| b.state == BatchState::Pending)
                        .or_else(|| {
                            model.iter().position(|b| {
                                b.state == BatchState::Running
                                    && b.lease.as_ref().is_some_and(|l| l.expires <= now)
                            })
                        });
                    let claim = ledger
                        .claim(&run, &worker, Duration::from_secs(lease_secs), None)
                        .await
                        .unwrap();
                    match (expect, claim) {
                        (None, None) => {}
                        (Some(i), Some(c)) => {
                            let m = &mut model[i];
                            prop_assert_eq!(&c.batch.id, &m.id);
                            // Never two holders of a live lease.
                            let prev = &before[i];
                            if prev.state == BatchState::Running {
                                let l = prev.lease.as_ref().unwrap();
                                prop_assert!(
                                    l.expires_at <= now,
                                    "live lease of {} handed out again",
                                    l.worker
                                );
                                prop_assert!(c.token > l.token);
                            }
                            // Fencing tokens strictly increase per batch.
                            prop_assert!(m.issued.last().is_none_or(|t| c.token > *t));
                            prop_assert_eq!(c.token, m.lease.as_ref().map_or(0, |l| l.token) + 1);
                            prop_assert_eq!(c.attempt, m.attempts + 1);
                            m.issued.push(c.token);
                            m.attempts += 1;
                            log.push((
                                Some(m.id.clone()),
                                m.state.as_str().into(),
                                "running".into(),
                                now,
                            ));
                            m.state = BatchState::Running;
                            m.lease = Some(MLease {
                                token: c.token,
                                expires: now
                                    .checked_add(SignedDuration::from_secs(lease_secs as i64))
                                    .unwrap(),
                                worker,
                            });
                        }
                        (e, c) => prop_assert!(false, "expected claim of {:?}, got {:?}", e, c),
                    }
                }
                Op::Move { batch, tok, to } => {
                    let m = &mut model[batch];
                    let cur = m.lease.as_ref().map_or(0, |l| l.token);
                    let token = match tok {
                        Tok::None => None,
                        Tok::Current => Some(cur),
                        Tok::Stale => Some(cur.saturating_sub(1)),
                        Tok::Ahead => Some(cur + 1),
                    };
                    let held = m.state == BatchState::Running
                        && m.lease.as_ref().is_some_and(|l| Some(l.token) == token);
                    let expect = match token {
                        Some(t) if !held => Err(Error::LeaseLost {
                            batch: m.id.to_string(),
                            token: t,
                        }),
                        _ if !m.state.can_move_to(to) => Err(Error::InvalidTransition {
                            batch: m.id.to_string(),
                            from: m.state.to_string(),
                            to: to.to_string(),
                        }),
                        _ => Ok(()),
                    };
                    let got = ledger
                        .transition(&run, &m.id, token, to, BatchUpdate::reason("prop"))
                        .await;
                    prop_assert_eq!(&got, &expect, "{} -> {} with {:?}", m.state, to, token);
                    if got.is_ok() {
                        log.push((
                            Some(m.id.clone()),
                            m.state.as_str().into(),
                            to.as_str().into(),
                            now,
                        ));
                        // A claim handed back unused is not an attempt.
                        if backfill_core::ledger::gives_claim_back(m.state, to) {
                            m.attempts = m.attempts.saturating_sub(1);
                        }
                        m.state = to;
                    }
                }
            }

            // The ledger agrees with the model after every step.
            let records = ledger.batches(&run).await.unwrap();
            prop_assert_eq!(records.len(), model.len());
            for (r, m) in records.iter().zip(&model) {
                prop_assert_eq!(&r.batch.id, &m.id);
                prop_assert_eq!(r.state, m.state, "batch {}", m.id);
                prop_assert_eq!(r.attempts, m.attempts);
                prop_assert_eq!(
                    r.lease
                        .as_ref()
                        .map(|l| (l.token, l.expires_at, l.worker.clone())),
                    m.lease
                        .as_ref()
                        .map(|l| (l.token, l.expires, l.worker.clone()))
                );
            }
            let expected_gaps: Vec<BatchId> = model
                .iter()
                .filter(|m| !m.state.is_done())
                .map(|m| m.id.clone())
                .collect();
            prop_assert_eq!(gaps(&records), expected_gaps);
            let got: Vec<_> = ledger
                .transitions(&run)
                .await
                .unwrap()
                .into_iter()
                .map(|t: Transition| (t.batch_id, t.from, t.to, t.at))
                .collect();
            prop_assert_eq!(&got, &log);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(cfg(192))]

        #[test]
        fn memory_ledger_follows_the_state_machine((n, ops) in arb_ops()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run_ops(n, ops))?;
        }
    }

    #[tokio::test]
    async fn begin_run_resumes_the_same_plan_and_refuses_another() {
        let clock = Arc::new(ManualClock::new(t0()));
        let ledger = MemoryLedger::with_clock(clock.clone());
        let plan = key_plan(3);
        let run = RunId::new("r1").unwrap();
        let rec = record("r1", &plan.fingerprint, clock.now());
        assert_eq!(
            ledger.begin_run(&rec, &plan.batches).await.unwrap(),
            RunStart::New
        );
        let c = ledger
            .claim(&run, "w", Duration::from_secs(60), None)
            .await
            .unwrap()
            .unwrap();
        ledger
            .transition(
                &run,
                &c.batch.id,
                Some(c.token),
                BatchState::Written,
                BatchUpdate::reason("ok"),
            )
            .await
            .unwrap();

        // Same fingerprint: resumed, progress kept.
        assert_eq!(
            ledger.begin_run(&rec, &plan.batches).await.unwrap(),
            RunStart::Resumed
        );
        let states: Vec<_> = ledger
            .batches(&run)
            .await
            .unwrap()
            .iter()
            .map(|b| b.state)
            .collect();
        assert_eq!(
            states,
            vec![
                BatchState::Written,
                BatchState::Pending,
                BatchState::Pending
            ]
        );

        // A different plan under the same run id is refused.
        let other = key_plan(4);
        let rec2 = record("r1", &other.fingerprint, clock.now());
        let err = ledger.begin_run(&rec2, &other.batches).await.unwrap_err();
        assert_eq!(
            err,
            Error::FingerprintMismatch {
                run: "r1".into(),
                stored: plan.fingerprint.clone(),
                given: other.fingerprint.clone(),
                changed: Vec::new(),
            }
        );
        assert_eq!(ledger.batches(&run).await.unwrap().len(), 3);
        assert!(matches!(
            ledger.run(&RunId::new("nope").unwrap()).await,
            Err(Error::RunNotFound(_))
        ));
    }

    #[tokio::test]
    async fn lock_target_admits_one_run() {
        let ledger = MemoryLedger::new();
        let t = target();
        let a = RunId::new("run_a").unwrap();
        let b = RunId::new("run_b").unwrap();
        ledger.lock_target(&t, &a).await.unwrap();
        ledger.lock_target(&t, &a).await.unwrap(); // the holder again
        let err = ledger.lock_target(&t, &b).await.unwrap_err();
        assert_eq!(
            err,
            Error::TargetLocked {
                target: "analytics.facts".into(),
                holder: "run_a".into(),
            }
        );
        // Another table is independent.
        ledger
            .lock_target(&TableRef::parse("other").unwrap(), &b)
            .await
            .unwrap();
        // Only the holder unlocks.
        ledger.unlock_target(&t, &b).await.unwrap();
        assert!(matches!(
            ledger.lock_target(&t, &b).await,
            Err(Error::TargetLocked { .. })
        ));
        ledger.unlock_target(&t, &a).await.unwrap();
        ledger.lock_target(&t, &b).await.unwrap();
        assert!(matches!(
            ledger.lock_target(&t, &a).await,
            Err(Error::TargetLocked { .. })
        ));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_a_higher_token() {
        let clock = Arc::new(ManualClock::new(t0()));
        let ledger = MemoryLedger::with_clock(clock.clone());
        let plan = key_plan(1);
        let run = RunId::new("lease").unwrap();
        ledger
            .begin_run(
                &record("lease", &plan.fingerprint, clock.now()),
                &plan.batches,
            )
            .await
            .unwrap();
        let first = ledger
            .claim(&run, "w1", Duration::from_secs(30), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.token, first.attempt), (1, 1));
        // Live lease: nobody else gets it.
        assert_eq!(
            ledger
                .claim(&run, "w2", Duration::from_secs(30), None)
                .await
                .unwrap(),
            None
        );
        clock.advance(Duration::from_secs(29));
        assert_eq!(
            ledger
                .claim(&run, "w2", Duration::from_secs(30), None)
                .await
                .unwrap(),
            None
        );
        clock.advance(Duration::from_secs(1));
        let second = ledger
            .claim(&run, "w2", Duration::from_secs(30), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.batch.id, first.batch.id);
        assert!(second.token > first.token);
        assert_eq!(second.attempt, 2);
        // The old holder is fenced off; the new one writes.
        let err = ledger
            .transition(
                &run,
                &first.batch.id,
                Some(first.token),
                BatchState::Written,
                BatchUpdate::reason("late"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::LeaseLost {
                batch: first.batch.id.to_string(),
                token: first.token,
            }
        );
        let update = BatchUpdate {
            rows_written: Some(42),
            reason: "done".into(),
            ..Default::default()
        };
        ledger
            .transition(
                &run,
                &second.batch.id,
                Some(second.token),
                BatchState::Written,
                update,
            )
            .await
            .unwrap();
        assert_eq!(ledger.run(&run).await.unwrap().rows_affected, 42);
        // Written is not claimable, and a written batch refuses a token.
        assert_eq!(
            ledger
                .claim(&run, "w3", Duration::from_secs(30), None)
                .await
                .unwrap(),
            None
        );
        let err = ledger
            .transition(
                &run,
                &second.batch.id,
                Some(second.token),
                BatchState::Validated,
                BatchUpdate::reason("x"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
        let log = ledger.transitions(&run).await.unwrap();
        let reasons: Vec<_> = log.iter().map(|t| t.reason.as_str()).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[2].contains("taken over"), "{reasons:?}");
    }

    #[tokio::test]
    async fn claim_respects_only_and_failed_batches_requeue() {
        let clock = Arc::new(ManualClock::new(t0()));
        let ledger = MemoryLedger::with_clock(clock.clone());
        let plan = key_plan(3);
        let run = RunId::new("only").unwrap();
        ledger
            .begin_run(
                &record("only", &plan.fingerprint, clock.now()),
                &plan.batches,
            )
            .await
            .unwrap();
        let third = [plan.batches[2].id.clone()];
        let c = ledger
            .claim(&run, "w", Duration::from_secs(10), Some(&third))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.batch.id, third[0]);
        assert_eq!(
            ledger
                .claim(&run, "w", Duration::from_secs(10), Some(&third))
                .await
                .unwrap(),
            None
        );
        let fail = BatchUpdate {
            error: Some("boom".into()),
            reason: "failed".into(),
            ..Default::default()
        };
        ledger
            .transition(&run, &c.batch.id, Some(c.token), BatchState::Failed, fail)
            .await
            .unwrap();
        let rec = &ledger.batches(&run).await.unwrap()[2];
        assert_eq!(rec.error.as_deref(), Some("boom"));
        assert_eq!(gaps(&ledger.batches(&run).await.unwrap()).len(), 3);
        // Failed is not claimable until requeued; then the token grows.
        assert_eq!(
            ledger
                .claim(&run, "w", Duration::from_secs(10), Some(&third))
                .await
                .unwrap(),
            None
        );
        ledger
            .transition(
                &run,
                &c.batch.id,
                None,
                BatchState::Pending,
                BatchUpdate::reason("requeue"),
            )
            .await
            .unwrap();
        let again = ledger
            .claim(&run, "w", Duration::from_secs(10), Some(&third))
            .await
            .unwrap()
            .unwrap();
        assert!(again.token > c.token);
        assert_eq!(again.attempt, 2);
    }
}

mod brief {
    use backfill_core::{
        Brief, CheckSpec, Dependencies, Dependency, Expectation, Operations, RiskClass,
        RollbackPlan, StrategySpec, ValidationPlan,
    };

    use super::*;

    #[test]
    fn drift_policy_defaults_follow_the_risk_class() {
        use backfill_core::drift::{Act, DriftPolicy, Kind};
        let p = DriftPolicy::default();
        for risk in [RiskClass::Enrichment, RiskClass::ProductionCriticalRebuild] {
            assert_eq!(p.act(Kind::Columns, risk), Act::Pause);
        }
        assert_eq!(p.act(Kind::Rows, RiskClass::Enrichment), Act::Warn);
        assert_eq!(
            p.act(Kind::Rows, RiskClass::MetricChangingRepair),
            Act::Pause
        );
        assert_eq!(
            p.act(Kind::Definition, RiskClass::MetricChangingRepair),
            Act::Warn
        );
        assert_eq!(
            p.act(Kind::Definition, RiskClass::ProductionCriticalRebuild),
            Act::Pause
        );
        let set = DriftPolicy {
            rows: Some(Act::Warn),
            ..DriftPolicy::default()
        };
        assert_eq!(
            set.act(Kind::Rows, RiskClass::MetricChangingRepair),
            Act::Warn
        );
    }

    #[test]
    fn unknown_keys_are_refused_not_ignored() {
        let good = serde_json::to_value(complete()).unwrap();
        let back: Brief = serde_json::from_value(good.clone()).unwrap();
        assert_eq!(back, complete());
        for (path, key) in [
            (&["rollback"][..], "retention_day"),
            (&[][..], "reviewers"),
            (&["scope"][..], "timezone"),
            (&["scope", "bounds"][..], "stop"),
            (&["strategy"][..], "key"),
        ] {
            let mut v = good.clone();
            let mut at = &mut v;
            for p in path {
                at = &mut at[*p];
            }
            at[key] = serde_json::json!(30);
            let e = serde_json::from_value::<Brief>(v)
                .map(|_| panic!("{key} accepted"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown field `{key}`")), "{key}: {e}");
        }
    }

    fn complete() -> Brief {
        let scope = Scope::new(
            TableRef::parse("analytics.revenue").unwrap(),
            "order_date",
            Bounds::dates(date(2026, 1, 1), date(2026, 2, 1)),
            "Europe/Berlin",
        )
        .unwrap()
        .with_expected_rows(120_000);
        Brief {
            title: "Recompute refunds".into(),
            reason: "Refunds were counted twice since the 2026-01 release.".into(),
            operator: "alice".into(),
            reviewer: "bob".into(),
            risk: RiskClass::MetricChangingRepair,
            scope,
            dependencies: Dependencies {
                direct: vec![Dependency::new("mart.revenue_daily", "data-eng")],
                indirect: vec![Dependency::new("metric.net_revenue", "analytics")],
                human: vec![Dependency::new("finance", "carol")],
            },
            strategy: StrategySpec::PartitionOverwrite,
            idempotency:
                "Each batch deletes then inserts its day; repeating it gives the same table.".into(),
            validation: ValidationPlan {
                emptiness: Default::default(),
                drift: Default::default(),
                checks: vec![
                    CheckSpec::RowCount {
                        expect: Expectation::MaxChangePercent(5.0),
                        blocking: true,
                    },
                    CheckSpec::Unique {
                        keys: vec![Ident::new("order_id").unwrap()],
                        blocking: true,
                    },
                ],
                description: "Row counts move by at most 5%; order_id stays unique.".into(),
            },
            rollback: RollbackPlan {
                description: "Restore each day from the pre-image.".into(),
                keep_pre_image: true,
                retention_days: 14,
                restore_point: None,
            },
            expected_impact: "Net revenue for January drops by about 2%.".into(),
            operations: Operations {
                rerun: "Rerun resumes from the ledger.".into(),
                pause: "Pause stops at a batch boundary.".into(),
                recovery: "Resume, or roll back from pre-images.".into(),
            },
        }
    }

    type Blank = fn(&mut Brief);

    /// Each section, with a way to blank it.
    const SECTIONS: &[(&str, Blank)] = &[
        ("title", |b| b.title = "  ".into()),
        ("reason", |b| b.reason.clear()),
        ("operator", |b| b.operator = "\t".into()),
        ("reviewer", |b| b.reviewer.clear()),
        ("expected_impact", |b| b.expected_impact.clear()),
        ("scope", |b| b.scope.time_zone.clear()),
        ("dependencies", |b| b.dependencies = Dependencies::default()),
        ("idempotency", |b| b.idempotency = " \n ".into()),
        ("strategy", |b| {
            b.strategy = StrategySpec::Merge { keys: vec![] }
        }),
        ("validation", |b| b.validation.checks.clear()),
        ("rollback", |b| b.rollback.description.clear()),
        ("operations.rerun", |b| b.operations.rerun.clear()),
        ("operations.pause", |b| b.operations.pause.clear()),
        ("operations.recovery", |b| b.operations.recovery.clear()),
    ];

    fn blocking_sections(b: &Brief) -> Vec<String> {
        let mut s: Vec<String> = b
            .preflight()
            .blocking()
            .map(|f| f.section.clone())
            .collect();
        s.sort();
        s.dedup();
        s
    }

    #[test]
    fn a_complete_brief_passes() {
        let pf = complete().preflight();
        assert!(pf.passed(), "{pf:?}");
        assert!(pf.findings.is_empty(), "{pf:?}");
        assert!(pf.into_result().is_ok());
    }

    #[test]
    fn each_blank_section_blocks_by_name() {
        for (section, blank) in SECTIONS {
            let mut b = complete();
            blank(&mut b);
            let pf = b.preflight();
            assert!(!pf.passed(), "{section} blank but preflight passed");
            assert_eq!(
                blocking_sections(&b),
                vec![section.to_string()],
                "blanking {section}"
            );
            match pf.into_result() {
                Err(Error::Preflight(findings)) => {
                    assert!(findings.iter().any(|f| f.section == *section))
                }
                other => panic!("{section}: {other:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(cfg(128))]

        #[test]
        fn every_blank_section_is_reported(mask in 1u32..(1 << SECTIONS.len())) {
            let mut b = complete();
            let mut expected = Vec::new();
            for (i, (section, blank)) in SECTIONS.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    blank(&mut b);
                    expected.push(section.to_string());
                }
            }
            expected.sort();
            prop_assert_eq!(blocking_sections(&b), expected.clone());
            match b.preflight().into_result() {
                Err(Error::Preflight(findings)) => {
                    prop_assert!(findings.iter().filter(|f| f.blocking).count() >= expected.len());
                    let msg = Error::Preflight(findings).to_string();
                    for s in &expected {
                        prop_assert!(msg.contains(s.as_str()), "{} missing from {}", s, msg);
                    }
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn operator_cannot_review_their_own_run() {
        let mut b = complete();
        b.reviewer = " Alice ".into();
        assert_eq!(blocking_sections(&b), vec!["reviewer".to_string()]);
    }

    #[test]
    fn overwriting_in_place_needs_a_pre_image() {
        let mut b = complete();
        b.rollback.keep_pre_image = false;
        assert_eq!(blocking_sections(&b), vec!["rollback".to_string()]);
        // A blank restore point is no restore point.
        b.rollback.restore_point = Some("  ".into());
        assert_eq!(blocking_sections(&b), vec!["rollback".to_string()]);
        // An outside restore point stands in for the pre-image, with a
        // warning that names it.
        b.rollback.restore_point = Some("PITR to 2026-11-24T06:00Z".into());
        let pf = b.preflight();
        assert!(pf.passed(), "{pf:?}");
        assert!(pf
            .findings
            .iter()
            .any(|f| f.section == "rollback" && f.message.contains("PITR to 2026-11-24T06:00Z")));
        b.rollback.restore_point = None;
        b.strategy = StrategySpec::Merge {
            keys: vec![Ident::new("order_id").unwrap()],
        };
        assert_eq!(blocking_sections(&b), vec!["rollback".to_string()]);
        // Strategies that never touch the target in place need none.
        b.strategy = StrategySpec::StagingSwap;
        assert!(b.preflight().passed());
        b.strategy = StrategySpec::ParallelVersion {
            view: TableRef::parse("analytics.revenue_v").unwrap(),
        };
        assert!(b.preflight().passed());
    }

    #[test]
    fn other_blocking_rules() {
        let mut b = complete();
        b.strategy = StrategySpec::Merge { keys: vec![] };
        assert_eq!(blocking_sections(&b), vec!["strategy".to_string()]);

        let mut b = complete();
        b.rollback.retention_days = 0;
        assert_eq!(blocking_sections(&b), vec!["rollback".to_string()]);

        // Whole-scope checks cannot run per batch; slice checks can.
        let mut b = complete();
        b.validation.checks.push(CheckSpec::PerBatch {
            of: Box::new(CheckSpec::Coverage {
                empty_allowed: 0,
                blocking: true,
            }),
        });
        assert_eq!(blocking_sections(&b), vec!["validation".to_string()]);
        let mut b = complete();
        b.validation.checks.push(CheckSpec::PerBatch {
            of: Box::new(CheckSpec::NullRate {
                columns: vec![],
                max_increase: 0.0,
                blocking: true,
            }),
        });
        assert!(b.preflight().passed());

        let mut b = complete();
        b.dependencies
            .direct
            .push(Dependency::new("orphan_dashboard", " "));
        assert_eq!(blocking_sections(&b), vec!["dependencies".to_string()]);

        let mut b = complete();
        b.risk = RiskClass::ProductionCriticalRebuild;
        assert!(b.preflight().passed());
        b.dependencies.human.clear();
        assert_eq!(
            blocking_sections(&b),
            vec!["dependencies.human".to_string()]
        );

        let mut b = complete();
        b.scope.bounds = Bounds::dates(date(2026, 2, 1), date(2026, 1, 1));
        assert_eq!(blocking_sections(&b), vec!["scope".to_string()]);

        // A missing row estimate only warns.
        let mut b = complete();
        b.scope.expected_rows = None;
        let pf = b.preflight();
        assert!(pf.passed());
        assert_eq!(pf.findings.len(), 1);
        assert!(!pf.findings[0].blocking);
        assert_eq!(pf.findings[0].section, "scope");
    }

    fn variants() -> Vec<Brief> {
        let mut out = vec![complete()];
        let mut b = complete();
        b.scope = Scope::new(
            target(),
            "event_at",
            Bounds::instants(
                date(2026, 3, 1).at(0, 0, 0, 0),
                date(2026, 4, 1).at(6, 30, 0, 0),
            ),
            "America/New_York",
        )
        .unwrap()
        .with_filter(Predicate::And(vec![
            Predicate::In {
                column: Ident::new("customer").unwrap(),
                values: vec![
                    Value::Int(1),
                    Value::Text("x'); DROP TABLE y; --".into()),
                    Value::Null,
                ],
            },
            Predicate::Not(Box::new(Predicate::Range {
                column: Ident::new("amount").unwrap(),
                start: None,
                end: Some(Value::Float(10.5)),
            })),
            Predicate::Or(vec![
                Predicate::All,
                Predicate::HashBucket {
                    column: Ident::new("customer").unwrap(),
                    buckets: 8,
                    bucket: 3,
                },
            ]),
        ]));
        b.strategy = StrategySpec::Merge {
            keys: vec![Ident::new("a").unwrap(), Ident::new("b").unwrap()],
        };
        b.validation.checks.push(CheckSpec::RowCount {
            expect: Expectation::Unchanged,
            blocking: false,
        });
        b.validation.checks.push(CheckSpec::RowCount {
            expect: Expectation::MaxChangeAbsolute(7),
            blocking: true,
        });
        out.push(b);
        let mut b = complete();
        b.scope = Scope::new(
            target(),
            "region",
            Bounds::Partitions {
                values: vec![Value::Text("eu".into()), Value::Text("us".into())],
            },
            "Asia/Kolkata",
        )
        .unwrap()
        .with_filter(Predicate::In {
            column: Ident::new("mixed").unwrap(),
            values: vec![
                Value::Date(date(2026, 1, 1)),
                Value::DateTime(date(2026, 1, 1).at(1, 2, 3, 0)),
                Value::Timestamp(t("2026-01-01T00:00:00Z")),
                Value::Bool(true),
            ],
        });
        b.strategy = StrategySpec::ParallelVersion {
            view: TableRef::parse("analytics.revenue_current").unwrap(),
        };
        b.risk = RiskClass::ProductionCriticalRebuild;
        b.dependencies.indirect.push(Dependency {
            name: "ml.features".into(),
            owner: "ml".into(),
            depends_on: vec!["mart.revenue_daily".into()],
        });
        out.push(b);
        let mut b = complete();
        b.scope = Scope::new(
            target(),
            "id",
            Bounds::Keys {
                start: -5,
                end: 1 << 40,
            },
            "UTC",
        )
        .unwrap();
        b.strategy = StrategySpec::StagingSwap;
        b.risk = RiskClass::SchemaMigration;
        out.push(b);
        let mut b = complete();
        b.scope = Scope::new(target(), "id", Bounds::All, "Australia/Lord_Howe").unwrap();
        b.risk = RiskClass::Enrichment;
        b.scope.columns = vec![Ident::new("a").unwrap(), Ident::new("b").unwrap()];
        out.push(b);
        out
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn briefs_round_trip_through_json() {
        for b in variants() {
            let json = serde_json::to_string_pretty(&b).unwrap();
            let back: Brief = serde_json::from_str(&json).unwrap();
            assert_eq!(back, b, "{json}");
        }
    }

    #[test]
    fn briefs_round_trip_through_toml() {
        for b in variants() {
            let text = toml::to_string(&b).unwrap();
            let back: Brief = toml::from_str(&text).unwrap();
            assert_eq!(back, b, "{text}");
        }
    }

    #[test]
    fn a_brief_with_a_bad_identifier_does_not_parse() {
        let mut json: serde_json::Value = serde_json::to_value(complete()).unwrap();
        json["scope"]["batch_column"] = serde_json::Value::String("x; drop table y".into());
        assert!(serde_json::from_value::<Brief>(json).is_err());
        let mut json: serde_json::Value = serde_json::to_value(complete()).unwrap();
        json["scope"]["target"] = serde_json::Value::String("a.b.c".into());
        assert!(serde_json::from_value::<Brief>(json).is_err());
    }
}

mod identifiers {
    use backfill_core::RunId;

    use super::*;

    #[test]
    fn injection_attempts_are_rejected() {
        let long = "a".repeat(64);
        for bad in [
            "a;drop",
            "a\"b",
            "a b",
            "",
            long.as_str(),
            "1abc",
            "9",
            "naïve",
            "表",
            "a-b",
            "a.b",
            "a'b",
            "a\0b",
            "a\nb",
            "Robert'); DROP TABLE students; --",
        ] {
            match Ident::new(bad) {
                Err(Error::InvalidIdentifier { ident, .. }) => assert_eq!(ident, bad),
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
        let max = "a".repeat(63);
        for good in ["a", "_", "_x9", "Order_ID", max.as_str()] {
            assert_eq!(Ident::new(good).unwrap().as_str(), good);
        }
        assert!(matches!(
            Ident::new("a".repeat(60)).unwrap().with_suffix("_xyz"),
            Err(Error::InvalidIdentifier { .. })
        ));
    }

    fn oracle(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn idents_accept_exactly_safe_names(s in prop_oneof!["[A-Za-z0-9_]{0,70}", ".{0,20}", "[a-z_\"'; .\\-]{1,10}"]) {
            let r = Ident::new(s.clone());
            prop_assert_eq!(r.is_ok(), oracle(&s), "{:?} -> {:?}", s, r);
            if let Err(e) = &r {
                prop_assert!(matches!(e, Error::InvalidIdentifier { .. }), "{:?}", e);
            }
            // Serde enforces the same rule.
            let parsed: Result<Ident, _> = serde_json::from_value(serde_json::Value::String(s.clone()));
            prop_assert_eq!(parsed.is_ok(), oracle(&s));
        }
    }

    #[test]
    fn table_refs_parse_one_or_two_parts() {
        let t = TableRef::parse("analytics.revenue").unwrap();
        assert_eq!(t.schema.as_ref().map(Ident::as_str), Some("analytics"));
        assert_eq!(t.name.as_str(), "revenue");
        assert_eq!(t.to_string(), "analytics.revenue");
        let t = TableRef::parse("revenue").unwrap();
        assert_eq!(t.schema, None);
        assert_eq!(t.to_string(), "revenue");
        for bad in [
            "a.b.c", "", ".a", "a.", "a..b", "a;drop.b", "a.b c", "\"a\".b",
        ] {
            assert!(
                matches!(TableRef::parse(bad), Err(Error::InvalidIdentifier { .. })),
                "{bad:?} accepted"
            );
        }
        let t: TableRef = serde_json::from_str("\"s.t\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"s.t\"");
        assert!(serde_json::from_str::<TableRef>("\"s.t.u\"").is_err());
        assert_eq!(t.sibling("_pre").unwrap().to_string(), "s.t_pre");
        assert!(t.sibling("; drop").is_err());
    }

    #[test]
    fn run_ids_are_short_lowercase_words() {
        let max = "a".repeat(32);
        for good in ["a", "refunds_2026_11", "_", "0", max.as_str()] {
            assert_eq!(RunId::new(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "Refunds",
            "a-b",
            "a b",
            "a;b",
            "a.b",
            "é",
            long.as_str(),
            "Robert'); DROP",
        ] {
            assert!(
                matches!(RunId::new(bad), Err(Error::InvalidIdentifier { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(serde_json::from_str::<RunId>("\"BAD\"").is_err());
        let r: RunId = serde_json::from_str("\"ok_1\"").unwrap();
        assert_eq!(r.to_string(), "ok_1");
    }
}

mod sql {
    use backfill_core::sql::{stmt, Dialect, DuckDbDialect, PostgresDialect, SqlBuilder};
    use backfill_core::Source;

    use super::*;

    const EVIL: &str = "x'); DROP TABLE y; --";

    fn dialects() -> [&'static dyn Dialect; 2] {
        [&DuckDbDialect, &PostgresDialect]
    }

    fn col(s: &str) -> Ident {
        Ident::new(s).unwrap()
    }

    /// Engine type names map to what they hold, whatever precision or
    /// length they carry and wherever it is written.
    #[test]
    fn column_types_ignore_precision() {
        use backfill_core::ColumnType as T;
        for (name, ty) in [
            ("timestamp(3) with time zone", T::Timestamp),
            ("TIMESTAMP WITH TIME ZONE", T::Timestamp),
            ("timestamp(6) without time zone", T::DateTime),
            ("NUMERIC(18, 2)", T::Decimal),
            ("character varying(20)", T::Text),
            ("DOUBLE  PRECISION", T::Float),
            ("uuid", T::Other),
        ] {
            assert_eq!(stmt::column_type(name), ty, "{name}");
        }
    }

    /// The values a predicate binds, in rendering order.
    fn bound_values(p: &Predicate, out: &mut Vec<Value>) {
        match p {
            Predicate::All => {}
            Predicate::Range { start, end, .. } => out.extend(start.iter().chain(end).cloned()),
            Predicate::In { values, .. } => out.extend(values.iter().cloned()),
            Predicate::HashBucket { bucket, .. } => out.push(Value::Int(i64::from(*bucket))),
            Predicate::And(ps) | Predicate::Or(ps) => ps.iter().for_each(|q| bound_values(q, out)),
            Predicate::Not(q) => bound_values(q, out),
        }
    }

    /// The columns a predicate's SQL names (an empty IN renders FALSE).
    fn rendered_columns(p: &Predicate, out: &mut Vec<Ident>) {
        match p {
            Predicate::All => {}
            Predicate::In { values, .. } if values.is_empty() => {}
            Predicate::Range { column, .. }
            | Predicate::In { column, .. }
            | Predicate::HashBucket { column, .. } => out.push(column.clone()),
            Predicate::And(ps) | Predicate::Or(ps) => {
                ps.iter().for_each(|q| rendered_columns(q, out))
            }
            Predicate::Not(q) => rendered_columns(q, out),
        }
    }

    /// The placeholder numbers in `text`, in order.
    fn placeholders(text: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            rest = &rest[i + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            out.push(digits.parse().unwrap());
        }
        out
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            "[a-zA-Z0-9' ;\"()\\-]{0,16}".prop_map(|s| Value::Text(format!("ZqX{s}"))),
            (0i64..4000).prop_map(|d| Value::Date(date(2020, 1, 1).checked_add(d.days()).unwrap())),
            (0i64..100_000).prop_map(|m| Value::DateTime(
                date(2020, 1, 1)
                    .at(0, 0, 0, 0)
                    .checked_add(m.minutes())
                    .unwrap()
            )),
            (0i64..1_000_000_000)
                .prop_map(|s| Value::Timestamp(Timestamp::from_second(1_600_000_000 + s).unwrap())),
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn arb_column() -> impl Strategy<Value = Ident> {
        prop::sample::select(&["a", "b", "order_date"][..]).prop_map(col)
    }

    fn arb_predicate() -> impl Strategy<Value = Predicate> {
        let leaf = prop_oneof![
            Just(Predicate::All),
            (
                arb_column(),
                prop::option::of(arb_value()),
                prop::option::of(arb_value())
            )
                .prop_map(|(column, start, end)| Predicate::Range {
                    column,
                    start,
                    end
                }),
            (arb_column(), prop::collection::vec(arb_value(), 0..4))
                .prop_map(|(column, values)| Predicate::In { column, values }),
            (arb_column(), 1u32..16)
                .prop_flat_map(|(c, n)| (Just(c), Just(n), 0..n))
                .prop_map(|(column, buckets, bucket)| Predicate::HashBucket {
                    column,
                    buckets,
                    bucket
                }),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Predicate::And),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Predicate::Or),
                inner.prop_map(|p| Predicate::Not(Box::new(p))),
            ]
        })
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn predicates_bind_every_value_as_a_parameter(p in arb_predicate()) {
            let mut expected = Vec::new();
            bound_values(&p, &mut expected);
            for d in dialects() {
                let mut b = SqlBuilder::new(d);
                b.predicate(&p, Some("__t"));
                let sql = b.finish();
                prop_assert_eq!(&sql.params, &expected, "{}", d.name());
                prop_assert_eq!(placeholders(&sql.text), (1..=expected.len()).collect::<Vec<_>>(), "{}", sql.text);
                prop_assert!(!sql.text.contains('\''), "a literal in {}", sql.text);
                prop_assert!(!sql.text.contains("ZqX"), "a value in {}", sql.text);
                for v in &expected {
                    if matches!(v, Value::Date(_) | Value::DateTime(_) | Value::Timestamp(_)) {
                        prop_assert!(!sql.text.contains(&v.to_string()), "{} in {}", v, sql.text);
                    }
                }
                let mut cols = Vec::new();
                rendered_columns(&p, &mut cols);
                for c in cols {
                    prop_assert!(sql.text.contains(&format!("__t.\"{c}\"")), "{} unquoted in {}", c, sql.text);
                }
            }
        }
    }

    #[test]
    fn an_evil_value_stays_a_parameter() {
        let p = Predicate::And(vec![
            Predicate::In {
                column: col("customer"),
                values: vec![Value::Text(EVIL.into()), Value::Int(7)],
            },
            Predicate::Range {
                column: col("order_date"),
                start: Some(Value::Date(date(2026, 1, 1))),
                end: Some(Value::Date(date(2026, 2, 1))),
            },
        ]);
        let duck = {
            let mut b = SqlBuilder::new(&DuckDbDialect);
            b.predicate(&p, None);
            b.finish()
        };
        assert_eq!(
            duck.text,
            "(\"customer\" IN ($1, $2) AND (\"order_date\" >= CAST($3 AS DATE) AND \"order_date\" < CAST($4 AS DATE)))"
        );
        assert_eq!(
            duck.params,
            vec![
                Value::Text(EVIL.into()),
                Value::Int(7),
                Value::Date(date(2026, 1, 1)),
                Value::Date(date(2026, 2, 1))
            ]
        );
        let pg = stmt::count(
            &PostgresDialect,
            &TableRef::parse("analytics.facts").unwrap(),
            &p,
        );
        assert_eq!(
            pg.text,
            "SELECT count(*) FROM \"analytics\".\"facts\" AS __t WHERE (__t.\"customer\" IN ($1, $2) AND \
             (__t.\"order_date\" >= $3::date AND __t.\"order_date\" < $4::date))"
        );
        assert_eq!(pg.params, duck.params);
        for sql in [&duck, &pg] {
            assert!(!sql.text.contains("DROP"));
            assert!(!sql.text.contains('\''));
            assert!(!sql.text.contains("2026"));
        }
        // The report form shows parameters only after the statement.
        assert!(pg.display().starts_with(&pg.text));
        assert!(pg.display().contains("-- params: ["));
    }

    #[test]
    fn a_bounded_query_reuses_one_parameter_per_token() {
        let q = Source::query(
            "SELECT * FROM raw WHERE d >= {start} AND d < {end} AND created >= {start}",
        );
        assert!(q.is_bounded());
        let (s, e) = (Value::Date(date(2026, 1, 1)), Value::Date(date(2026, 1, 2)));
        let mut b = SqlBuilder::new(&DuckDbDialect);
        b.source(&q, (Some(&s), Some(&e)), "src");
        let sql = b.finish();
        assert_eq!(
            sql.text,
            "(SELECT * FROM raw WHERE d >= CAST($1 AS DATE) AND d < CAST($2 AS DATE) AND created >= CAST($1 AS DATE)\n) AS src"
        );
        assert_eq!(sql.params, vec![s.clone(), e.clone()]);

        // After other parameters, numbering continues; {end} first is fine.
        let q = Source::query("SELECT * FROM raw WHERE k < {end} AND k >= {start} AND j < {end}");
        let (lo, hi) = (Value::Text(EVIL.into()), Value::Text("z'--".into()));
        let mut b = SqlBuilder::new(&PostgresDialect);
        b.push("SELECT ").param(Value::Int(1)).push(" FROM ");
        b.source(&q, (Some(&lo), Some(&hi)), "src");
        let sql = b.finish();
        assert_eq!(
            sql.text,
            "SELECT $1 FROM (SELECT * FROM raw WHERE k < $2 AND k >= $3 AND j < $2\n) AS src"
        );
        assert_eq!(sql.params, vec![Value::Int(1), hi, lo]);
        assert!(!sql.text.contains("DROP"));
    }

    #[test]
    fn a_query_runs_as_people_write_it() {
        // A trailing `;` and trailing comments are set aside; a comment
        // cannot swallow the closing parenthesis.
        let q = Source::query(
            "SELECT * FROM raw -- every row\nWHERE d >= {start} AND s <> ';' ; -- done\n/* end */\n",
        );
        q.check().expect("a query as written");
        let d = Value::Date(date(2026, 1, 1));
        let mut b = SqlBuilder::new(&PostgresDialect);
        b.source(&q, (Some(&d), None), "src");
        assert_eq!(
            b.finish().text,
            "(SELECT * FROM raw -- every row\nWHERE d >= $1::date AND s <> ';'\n) AS src"
        );

        // Placeholders are parameters: quoting one is refused with the fix.
        for quoted in [
            "SELECT * FROM raw WHERE d >= DATE '{start}'",
            "SELECT * FROM raw WHERE d < '{end}'::date",
        ] {
            let e = Source::query(quoted).check().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidSource(m) if m.contains("placeholders are bound parameters")),
                "{e}"
            );
        }
        // A placeholder in a quoted name or comment is not a literal.
        Source::query("SELECT 1 AS \"{start}\" -- '{end}'")
            .check()
            .expect("not a literal");
        let e = Source::query("  ; -- nothing\n").check().unwrap_err();
        assert!(matches!(e, Error::InvalidSource(_)), "{e}");
    }

    #[test]
    fn source_slices_filter_unbounded_sources_only() {
        let scope = Scope::new(target(), "id", Bounds::Keys { start: 0, end: 100 }, "UTC").unwrap();
        let plan = Plan::build(scope, Planner::KeyRanges { width: 50 }).unwrap();
        let batch = &plan.batches[1];
        let cols = [col("id"), col("amount")];

        let table = Source::Table(TableRef::parse("staging.fixed").unwrap());
        let mut b = SqlBuilder::new(&DuckDbDialect);
        b.source_slice(&table, batch, &cols, "n");
        let sql = b.finish();
        assert_eq!(
            sql.text,
            "(SELECT __s.\"id\", __s.\"amount\" FROM (SELECT * FROM \"staging\".\"fixed\") AS __s WHERE \
             (__s.\"id\" >= $1 AND __s.\"id\" < $2)) AS n"
        );
        assert_eq!(sql.params, vec![Value::Int(50), Value::Int(100)]);

        let bounded = Source::query("SELECT * FROM raw WHERE id >= {start} AND id < {end}");
        let mut b = SqlBuilder::new(&PostgresDialect);
        b.source_slice(&bounded, batch, &cols, "n");
        let sql = b.finish();
        assert_eq!(
            sql.text,
            "(SELECT __s.\"id\", __s.\"amount\" FROM (SELECT * FROM raw WHERE id >= $1 AND id < $2\n) AS __s) AS n"
        );
        assert_eq!(sql.params, vec![Value::Int(50), Value::Int(100)]);
    }

    #[test]
    fn typed_placeholders_per_dialect() {
        let vals = [
            Value::Date(date(2026, 1, 1)),
            Value::DateTime(date(2026, 1, 1).at(3, 0, 0, 0)),
            Value::Timestamp(Timestamp::from_second(0).unwrap()),
            Value::Int(1),
        ];
        let render = |d: &dyn Dialect| {
            let mut b = SqlBuilder::new(d);
            for v in &vals {
                b.param(v.clone()).push(" ");
            }
            b.finish().text
        };
        assert_eq!(
            render(&DuckDbDialect),
            "CAST($1 AS DATE) CAST($2 AS TIMESTAMP) CAST($3 AS TIMESTAMPTZ) $4 "
        );
        assert_eq!(
            render(&PostgresDialect),
            "$1::date $2::timestamp $3::timestamptz $4 "
        );
    }

    #[test]
    fn eval_uses_three_valued_logic() {
        let a = col("a");
        let null_row = |_: &Ident| Value::Null;
        let one = |_: &Ident| Value::Int(1);
        let text = |_: &Ident| Value::Text("t".into());
        let range = Predicate::Range {
            column: a.clone(),
            start: Some(Value::Int(0)),
            end: Some(Value::Int(10)),
        };
        let not = |p: &Predicate| Predicate::Not(Box::new(p.clone()));
        let unknown = range.clone(); // on the NULL row
        assert_eq!(range.eval(&null_row), None);
        assert_eq!(
            not(&range).eval(&null_row),
            None,
            "NOT unknown stays unknown"
        );
        assert!(!not(&range).matches(&null_row));
        assert_eq!(not(&not(&range)).eval(&null_row), None);
        assert_eq!(range.eval(&one), Some(true));
        assert_eq!(not(&range).eval(&one), Some(false));
        // Mismatched types compare as unknown.
        assert_eq!(range.eval(&text), None);
        assert_eq!(not(&range).eval(&text), None);

        let f = Predicate::In {
            column: a.clone(),
            values: vec![],
        };
        let t = Predicate::All;
        // An empty IN list is FALSE (as rendered in SQL), even on NULL.
        assert_eq!(f.eval(&null_row), Some(false));
        assert_eq!(
            Predicate::And(vec![f.clone(), unknown.clone()]).eval(&null_row),
            Some(false)
        );
        let falsy = Predicate::Range {
            column: col("b"),
            start: None,
            end: Some(Value::Int(0)),
        };
        let row = |c: &Ident| {
            if c.as_str() == "a" {
                Value::Null
            } else {
                Value::Int(5)
            }
        };
        assert_eq!(falsy.eval(&row), Some(false));
        assert_eq!(
            Predicate::And(vec![falsy.clone(), unknown.clone()]).eval(&row),
            Some(false)
        );
        assert_eq!(
            Predicate::And(vec![unknown.clone(), falsy.clone()]).eval(&row),
            Some(false)
        );
        assert_eq!(
            Predicate::And(vec![t.clone(), unknown.clone()]).eval(&row),
            None
        );
        assert_eq!(
            Predicate::Or(vec![t.clone(), unknown.clone()]).eval(&row),
            Some(true)
        );
        assert_eq!(
            Predicate::Or(vec![unknown.clone(), t.clone()]).eval(&row),
            Some(true)
        );
        assert_eq!(
            Predicate::Or(vec![falsy.clone(), unknown.clone()]).eval(&row),
            None
        );
        assert_eq!(not(&Predicate::Or(vec![falsy, unknown])).eval(&row), None);
        assert_eq!(Predicate::And(vec![]).eval(&row), Some(true));
        assert_eq!(Predicate::Or(vec![]).eval(&row), Some(false));

        // x IN (2, NULL) is unknown for x = 1, and so is its NOT.
        let in_null = Predicate::In {
            column: a.clone(),
            values: vec![Value::Int(2), Value::Null],
        };
        assert_eq!(in_null.eval(&one), None);
        assert_eq!(not(&in_null).eval(&one), None);
        let in_hit = Predicate::In {
            column: a.clone(),
            values: vec![Value::Null, Value::Int(1)],
        };
        assert_eq!(in_hit.eval(&one), Some(true));
        assert_eq!(in_hit.eval(&null_row), None);
        // Unbounded range: every non-NULL value.
        let any = Predicate::Range {
            column: a,
            start: None,
            end: None,
        };
        assert_eq!(any.eval(&one), Some(true));
        assert_eq!(any.eval(&null_row), None);
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn eval_obeys_kleene_laws(
            p in arb_predicate(),
            q in arb_predicate(),
            va in arb_value(),
            vb in arb_value(),
            vc in arb_value(),
        ) {
            let row = |c: &Ident| match c.as_str() {
                "a" => va.clone(),
                "b" => vb.clone(),
                _ => vc.clone(),
            };
            let not = |x: &Predicate| Predicate::Not(Box::new(x.clone()));
            let (ep, eq) = (p.eval(&row), q.eval(&row));
            prop_assert_eq!(not(&p).eval(&row), ep.map(|b| !b));
            prop_assert_eq!(not(&not(&p)).eval(&row), ep);
            prop_assert!(!(p.matches(&row) && not(&p).matches(&row)));
            let and = Predicate::And(vec![p.clone(), q.clone()]);
            let or = Predicate::Or(vec![p.clone(), q.clone()]);
            prop_assert_eq!(not(&and).eval(&row), Predicate::Or(vec![not(&p), not(&q)]).eval(&row));
            prop_assert_eq!(not(&or).eval(&row), Predicate::And(vec![not(&p), not(&q)]).eval(&row));
            prop_assert_eq!(p.clone().and(q.clone()).eval(&row), and.eval(&row));
            prop_assert_eq!(Predicate::And(vec![p.clone()]).eval(&row), ep);
            prop_assert_eq!(Predicate::Or(vec![p.clone()]).eval(&row), ep);
            prop_assert_eq!(p.clone().and(Predicate::All).eval(&row), ep);
            // The truth tables.
            let expect_and = match (ep, eq) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            prop_assert_eq!(and.eval(&row), expect_and);
            let expect_or = match (ep, eq) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
            prop_assert_eq!(or.eval(&row), expect_or);
        }
    }
}

/// Amounts of very different sizes and scales compare exactly, without
/// overflowing the alignment of their scales (a float metric of 1e27
/// against a cent-precision one).
#[test]
fn amounts_far_apart_compare_without_overflow() {
    let big: backfill_core::Amount = "1000000000000000000000000000".parse().unwrap();
    let small: backfill_core::Amount = "0.000000000001".parse().unwrap();
    assert!(big > small);
    assert!(-big < small);
    assert_ne!(big, small);
    assert_eq!(big, big);
}

/// Sums beyond 38 significant digits are a typed error, never a panic or
/// a wrapped value; NaN and infinity are not amounts.
#[test]
fn amounts_out_of_range_are_typed_errors() {
    use backfill_core::Amount;
    let huge: Amount = "99999999999999999999999999999999999999".parse().unwrap();
    let cent: Amount = "0.01".parse().unwrap();
    assert!(matches!(
        huge.checked_add(huge),
        Err(Error::AmountOutOfRange(_))
    ));
    assert!(matches!(
        huge.checked_add(cent),
        Err(Error::AmountOutOfRange(_))
    ));
    assert!(matches!(
        Amount::try_sum([huge, huge]),
        Err(Error::AmountOutOfRange(_))
    ));
    assert_eq!(
        Amount::try_sum([cent, cent, -cent]).unwrap().to_string(),
        "0.01"
    );
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
        assert!(
            matches!(
                Amount::read(&Value::Float(v)),
                Err(Error::AmountOutOfRange(_))
            ),
            "{v}"
        );
    }
    assert!("1e999999999".parse::<Amount>().is_err());
}
