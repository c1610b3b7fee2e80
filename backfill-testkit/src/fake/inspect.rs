//! The fake's in-memory answers to [`Inspect`] questions, with the
//! semantics of the shared SQL renderer: groups ordered ascending with
//! NULLs last, `count(DISTINCT)` skipping NULL for one column and counting
//! whole tuples for several, sums of NULL as zero, null-safe comparison.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use backfill_core::amount::Amount;
use backfill_core::inspect::{
    Aggregate, Answer, Change, Compared, Contribution, Dependent, Diff, DiffReport, Dim, Inspect,
    Metric, MetricValue, Period, ProfileGroup, RelationKind, Rows, TableSize, Tolerance,
};
use backfill_core::sql::inspect::{diff_columns, MAX_GROUPS};
use backfill_core::warehouse::MARKER_COLUMN;
use backfill_core::{Error, Ident, Result, TableSchema, Value};

use super::{canon, check_predicate, cmp_rows, index, indexes, row_matches, State};

/// Rows read from one table: its schema and the matching rows.
struct Read<'a> {
    schema: &'a TableSchema,
    rows: Vec<&'a Vec<Value>>,
    table: String,
}

impl<'a> Read<'a> {
    fn of(st: &'a State, rows: &Rows) -> Result<Read<'a>> {
        let t = st.read(&rows.table)?;
        check_predicate(&t.schema, &rows.filter, &rows.table)?;
        let marker = if rows.pre_image {
            let m = Ident::new(MARKER_COLUMN).expect("valid marker column");
            Some(index(&t.schema, &m, &rows.table)?)
        } else {
            None
        };
        let listed: Option<(Vec<usize>, HashSet<String>)> = match &rows.keys_in {
            Some(set) => {
                let k = st.read(&set.table)?;
                let ki = indexes(&k.schema, &set.keys, &set.table)?;
                let keys = k
                    .rows
                    .iter()
                    .map(|r| ki.iter().map(|i| r[*i].clone()).collect::<Vec<_>>())
                    .filter(|key| !key.iter().any(Value::is_null))
                    .map(|key| encode(&key))
                    .collect();
                Some((indexes(&t.schema, &set.keys, &rows.table)?, keys))
            }
            None => None,
        };
        let matched = t
            .rows
            .iter()
            .filter(|r| marker.is_none_or(|m| r[m] != Value::Bool(true)))
            .filter(|r| row_matches(&rows.filter, &t.schema, r))
            .filter(|r| {
                listed.as_ref().is_none_or(|(idx, keys)| {
                    let key: Vec<Value> = idx.iter().map(|i| r[*i].clone()).collect();
                    keys.contains(&encode(&key))
                })
            })
            .collect();
        Ok(Read {
            schema: &t.schema,
            rows: matched,
            table: rows.table.to_string(),
        })
    }

    fn idx(&self, cols: &[Ident]) -> Result<Vec<usize>> {
        indexes(self.schema, cols, &rows_table(&self.table))
    }

    fn dims(&self, by: &[Dim]) -> Result<Vec<(usize, Option<Period>)>> {
        by.iter()
            .map(|d| Ok((self.idx(std::slice::from_ref(&d.column))?[0], d.period)))
            .collect()
    }
}

fn rows_table(name: &str) -> backfill_core::TableRef {
    backfill_core::TableRef::parse(name).expect("a table name that was parsed before")
}

/// SQL's ascending order with NULLs last.
fn sql_order(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => x.total_cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

fn truncate(v: &Value, period: Option<Period>) -> Result<Value> {
    let Some(p) = period else {
        return Ok(v.clone());
    };
    let date = match v {
        Value::Null => return Ok(Value::Null),
        Value::Date(d) => *d,
        Value::DateTime(dt) => dt.date(),
        Value::Timestamp(t) => t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date(),
        other => {
            return Err(Error::SchemaMismatch(format!(
                "cannot truncate {other:?} to a {}",
                p.unit()
            )))
        }
    };
    let d = match p {
        Period::Day => date,
        Period::Month => date.first_of_month(),
        Period::Year => date.first_of_year(),
    };
    Ok(Value::Date(d))
}

fn dim_key(row: &[Value], dims: &[(usize, Option<Period>)]) -> Result<Vec<Value>> {
    dims.iter().map(|(i, p)| truncate(&row[*i], *p)).collect()
}

fn encode(vals: &[Value]) -> String {
    let mut s = String::new();
    vals.iter().for_each(|v| canon(v, &mut s));
    s
}

/// Groups rows by key, keeping groups in SQL order.
fn grouped<T: Default>(
    rows: impl Iterator<Item = Result<(Vec<Value>, impl FnOnce(&mut T) -> Result<()>)>>,
) -> Result<Vec<(Vec<Value>, T)>> {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(Vec<Value>, T)> = Vec::new();
    for r in rows {
        let (key, apply) = r?;
        let i = *at.entry(encode(&key)).or_insert_with(|| {
            out.push((key, T::default()));
            out.len() - 1
        });
        apply(&mut out[i].1)?;
    }
    if out.len() > MAX_GROUPS {
        return Err(Error::NotAllowed(format!(
            "more than {MAX_GROUPS} groups; group by something coarser"
        )));
    }
    out.sort_by(|a, b| sql_order(&a.0, &b.0));
    Ok(out)
}

fn text(v: &Value) -> String {
    v.to_string()
}

fn key_text(row: &[Value], idx: &[usize]) -> String {
    idx.iter()
        .map(|i| text(&row[*i]))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn answer(st: &State, q: &Inspect) -> Result<Answer> {
    Ok(match q {
        Inspect::Profile {
            rows,
            by,
            distinct,
            nulls,
        } => Answer::Profile(profile(st, rows, by, distinct, nulls)?),
        Inspect::Spine {
            rows,
            dim,
            expected,
        } => {
            let r = Read::of(st, rows)?;
            let d = r.dims(std::slice::from_ref(dim))?;
            let mut counts: HashMap<String, u64> = HashMap::new();
            for row in &r.rows {
                let k = dim_key(row, &d)?;
                if !k[0].is_null() {
                    *counts.entry(encode(&k)).or_default() += 1;
                }
            }
            let mut out: Vec<(Value, u64)> = expected
                .iter()
                .map(|v| {
                    let n = counts.get(&encode(std::slice::from_ref(v))).copied();
                    (v.clone(), n.unwrap_or(0))
                })
                .collect();
            out.sort_by(|a, b| sql_order(std::slice::from_ref(&a.0), std::slice::from_ref(&b.0)));
            Answer::Spine(out)
        }
        Inspect::Orphans {
            rows,
            columns,
            parent,
            parent_columns,
            sample,
        } => {
            if columns.len() != parent_columns.len() || columns.is_empty() {
                return Err(Error::InvalidPlan(
                    "a foreign key needs as many parent columns as columns".into(),
                ));
            }
            let r = Read::of(st, rows)?;
            let idx = r.idx(columns)?;
            let p = Read::of(st, &Rows::all(parent.clone()))?;
            let pidx = p.idx(parent_columns)?;
            let parents: std::collections::HashSet<String> = p
                .rows
                .iter()
                .filter(|row| pidx.iter().all(|i| !row[*i].is_null()))
                .map(|row| encode(&pidx.iter().map(|i| row[*i].clone()).collect::<Vec<_>>()))
                .collect();
            let mut n = 0u64;
            let mut keys = std::collections::BTreeSet::new();
            for row in &r.rows {
                if idx.iter().any(|i| row[*i].is_null()) {
                    continue;
                }
                let k: Vec<Value> = idx.iter().map(|i| row[*i].clone()).collect();
                if !parents.contains(&encode(&k)) {
                    n += 1;
                    keys.insert(key_text(row, &idx));
                }
            }
            Answer::Orphans {
                rows: n,
                sample: keys.into_iter().take(*sample).collect(),
            }
        }
        Inspect::Metric { rows, metric } => Answer::Metric(metric_values(st, rows, metric)?),
        Inspect::Diff(d) => Answer::Diff(diff(st, d)?),
        Inspect::Size { table } => Answer::Size(TableSize {
            rows: st.read(table)?.rows.len() as u64,
            bytes: None,
        }),
        Inspect::Estimate { rows } => Answer::Estimate(Read::of(st, rows)?.rows.len() as u64),
        Inspect::Dependents { table } => {
            if !st.exists(table) {
                return Err(Error::UnknownTable(table.to_string()));
            }
            let mut out: Vec<Dependent> = st
                .views
                .iter()
                .filter(|(_, reads)| *reads == table)
                .map(|(view, reads)| Dependent {
                    kind: RelationKind::View,
                    relation: view.clone(),
                    definition: Some(format!("SELECT * FROM {reads}")),
                })
                .collect();
            out.sort();
            Answer::Dependents(out)
        }
    })
}

#[derive(Default)]
struct Acc {
    rows: u64,
    distinct: std::collections::HashSet<String>,
    nulls: Vec<u64>,
}

fn profile(
    st: &State,
    rows: &Rows,
    by: &[Dim],
    distinct: &[Ident],
    nulls: &[Ident],
) -> Result<Vec<ProfileGroup>> {
    let r = Read::of(st, rows)?;
    let d = r.dims(by)?;
    let didx = r.idx(distinct)?;
    let nidx = r.idx(nulls)?;
    let groups = grouped::<Acc>(r.rows.iter().map(|row| {
        let key = dim_key(row, &d)?;
        let (didx, nidx) = (&didx, &nidx);
        Ok((key, move |a: &mut Acc| {
            a.rows += 1;
            let tuple: Vec<Value> = didx.iter().map(|i| row[*i].clone()).collect();
            // One column: NULL is not a value; several: the tuple counts.
            if !(tuple.is_empty() || tuple.len() == 1 && tuple[0].is_null()) {
                a.distinct.insert(encode(&tuple));
            }
            a.nulls.resize(nidx.len(), 0);
            for (j, i) in nidx.iter().enumerate() {
                if row[*i].is_null() {
                    a.nulls[j] += 1;
                }
            }
            Ok(())
        }))
    }))?;
    let mut out: Vec<ProfileGroup> = groups
        .into_iter()
        .map(|(key, a)| ProfileGroup {
            key,
            rows: a.rows,
            distinct: (!distinct.is_empty()).then_some(a.distinct.len() as u64),
            nulls: if a.nulls.is_empty() {
                vec![0; nulls.len()]
            } else {
                a.nulls
            },
        })
        .collect();
    // Without dimensions SQL returns one row even for no rows.
    if by.is_empty() && out.is_empty() {
        out.push(ProfileGroup {
            key: Vec::new(),
            rows: 0,
            distinct: (!distinct.is_empty()).then_some(0),
            nulls: vec![0; nulls.len()],
        });
    }
    Ok(out)
}

fn measure(row: &[Value], agg: &Option<usize>) -> Result<Amount> {
    match agg {
        None => Ok(Amount::from(1)),
        Some(i) => Amount::from_value(&row[*i])
            .ok_or_else(|| Error::SchemaMismatch(format!("cannot sum {:?}", row[*i]))),
    }
}

fn metric_values(st: &State, rows: &Rows, metric: &Metric) -> Result<Vec<MetricValue>> {
    let r = Read::of(st, rows)?;
    let d = r.dims(&metric.by)?;
    let m = measure_index(&r, &metric.aggregate)?;
    let groups = grouped::<Amount>(r.rows.iter().map(|row| {
        let key = dim_key(row, &d)?;
        let v = measure(row, &m)?;
        Ok((key, move |a: &mut Amount| {
            *a = a.checked_add(v)?;
            Ok(())
        }))
    }))?;
    let mut out: Vec<MetricValue> = groups
        .into_iter()
        .map(|(key, value)| MetricValue { key, value })
        .collect();
    if metric.by.is_empty() && out.is_empty() {
        out.push(MetricValue {
            key: Vec::new(),
            value: Amount::ZERO,
        });
    }
    Ok(out)
}

fn measure_index(r: &Read<'_>, agg: &Aggregate) -> Result<Option<usize>> {
    Ok(match agg {
        Aggregate::Count => None,
        Aggregate::Sum(c) => Some(r.idx(std::slice::from_ref(c))?[0]),
    })
}

fn epoch(v: &Value) -> Option<f64> {
    match v {
        Value::Timestamp(t) => Some(t.as_microsecond() as f64 / 1e6),
        Value::DateTime(dt) => Some(
            jiff::tz::TimeZone::UTC
                .to_timestamp(*dt)
                .ok()?
                .as_microsecond() as f64
                / 1e6,
        ),
        Value::Date(d) => epoch(&Value::DateTime(
            d.to_datetime(jiff::civil::Time::midnight()),
        )),
        other => other.as_f64(),
    }
}

fn differs(o: &Value, n: &Value, c: &Compared) -> bool {
    match (o.is_null(), n.is_null()) {
        (true, true) => return false,
        (true, false) | (false, true) => return true,
        _ => {}
    }
    match c.tolerance {
        None => o.compare(n) != Some(Ordering::Equal),
        Some(Tolerance::Absolute(t)) => match (o.as_f64(), n.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() > t,
            _ => o.compare(n) != Some(Ordering::Equal),
        },
        Some(Tolerance::Seconds(t)) => match (epoch(o), epoch(n)) {
            (Some(a), Some(b)) => (a - b).abs() > t,
            _ => o.compare(n) != Some(Ordering::Equal),
        },
    }
}

fn diff(st: &State, d: &Diff) -> Result<DiffReport> {
    if d.keys.is_empty() {
        return Err(Error::InvalidPlan("a diff needs a key".into()));
    }
    let old = Read::of(st, &d.old)?;
    let new = Read::of(st, &d.new)?;
    let cols = diff_columns(d);
    old.idx(&cols)?;
    new.idx(&cols)?;
    let (ok, nk) = (old.idx(&d.keys)?, new.idx(&d.keys)?);
    let ocols = old.idx(
        &d.columns
            .iter()
            .map(|c| c.column.clone())
            .collect::<Vec<_>>(),
    )?;
    let ncols = new.idx(
        &d.columns
            .iter()
            .map(|c| c.column.clone())
            .collect::<Vec<_>>(),
    )?;
    let key = |row: &[Value], idx: &[usize]| -> Vec<Value> {
        idx.iter().map(|i| row[*i].clone()).collect()
    };
    // NULL keys never match, as in a SQL join.
    let mut old_by: HashMap<String, &Vec<Value>> = HashMap::new();
    for row in &old.rows {
        let k = key(row, &ok);
        if k.iter().all(|v| !v.is_null()) {
            old_by.insert(encode(&k), row);
        }
    }
    let mut report = DiffReport {
        old_rows: old.rows.len() as u64,
        new_rows: new.rows.len() as u64,
        column_changes: d.columns.iter().map(|c| (c.column.clone(), 0)).collect(),
        ..DiffReport::default()
    };
    let mut samples: HashMap<Change, Vec<Vec<Value>>> = HashMap::new();
    let mut changes: Vec<RowChange<'_>> = Vec::new();
    let mut matched: std::collections::HashSet<String> = std::collections::HashSet::new();
    for row in &new.rows {
        let k = key(row, &nk);
        let enc = encode(&k);
        let prior = if k.iter().any(Value::is_null) {
            None
        } else {
            old_by.get(&enc).copied()
        };
        match prior {
            None => {
                report.added += 1;
                samples.entry(Change::Added).or_default().push(k);
                changes.push((Change::Added, None, Some(row)));
            }
            Some(o) => {
                matched.insert(enc);
                let mut any = false;
                for (j, c) in d.columns.iter().enumerate() {
                    if differs(&o[ocols[j]], &row[ncols[j]], c) {
                        report.column_changes[j].1 += 1;
                        any = true;
                    }
                }
                if any {
                    report.changed += 1;
                    samples.entry(Change::Changed).or_default().push(k);
                    changes.push((Change::Changed, Some(o), Some(row)));
                }
            }
        }
    }
    for row in &old.rows {
        let k = key(row, &ok);
        if k.iter().any(Value::is_null) || !matched.contains(&encode(&k)) {
            report.removed += 1;
            samples.entry(Change::Removed).or_default().push(k);
            changes.push((Change::Removed, Some(row), None));
        }
    }
    report.unchanged = report
        .new_rows
        .saturating_sub(report.added + report.changed);
    report.samples = Change::ALL
        .into_iter()
        .map(|c| {
            let mut keys = samples.remove(&c).unwrap_or_default();
            keys.sort_by(|a, b| cmp_rows(a, b));
            let n: Vec<usize> = (0..d.keys.len()).collect();
            (
                c,
                keys.iter()
                    .take(d.sample)
                    .map(|k| key_text(k, &n))
                    .collect(),
            )
        })
        .collect();
    if let Some(m) = &d.attribute {
        report.contributions = attribute(&old, &new, m, &changes)?;
    }
    Ok(report)
}

type RowChange<'a> = (Change, Option<&'a Vec<Value>>, Option<&'a Vec<Value>>);

fn attribute(
    old: &Read<'_>,
    new: &Read<'_>,
    m: &Metric,
    changes: &[RowChange<'_>],
) -> Result<Vec<Contribution>> {
    let (od, nd) = (old.dims(&m.by)?, new.dims(&m.by)?);
    let (om, nm) = (
        measure_index(old, &m.aggregate)?,
        measure_index(new, &m.aggregate)?,
    );
    let mut parts: Vec<Result<(Vec<Value>, Change, Amount)>> = Vec::new();
    for (kind, o, n) in changes {
        if let Some(o) = o {
            parts.push(dim_key(o, &od).and_then(|k| Ok((k, *kind, -measure(o, &om)?))));
        }
        if let Some(n) = n {
            parts.push(dim_key(n, &nd).and_then(|k| Ok((k, *kind, measure(n, &nm)?))));
        }
    }
    let groups = grouped::<Contribution>(parts.into_iter().map(|p| {
        let (key, kind, v) = p?;
        Ok((key, move |c: &mut Contribution| {
            match kind {
                Change::Added => c.added = c.added.checked_add(v)?,
                Change::Removed => c.removed = c.removed.checked_add(v)?,
                Change::Changed => c.changed = c.changed.checked_add(v)?,
            }
            Ok(())
        }))
    }))?;
    Ok(groups
        .into_iter()
        .map(|(key, c)| Contribution { key, ..c })
        .collect())
}
