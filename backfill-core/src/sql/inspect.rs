//! SQL for [`Inspect`] questions, shared by the SQL engines.
//!
//! Every question runs in the engine; only aggregates and bounded samples
//! come back. [`crate::engine::answer`] checks a question, renders it
//! here, runs it and reads the answer with [`read_answer`].

use std::collections::BTreeMap;

use super::stmt::select_param;
use super::MARKER_COLUMN;
use super::{Dialect, Sql, SqlBuilder};
use crate::amount::Amount;
use crate::error::{Error, Result};
use crate::inspect::{
    Aggregate, Answer, Change, Compared, Contribution, Dependent, Diff, DiffReport, Dim, Inspect,
    Metric, MetricValue, ProfileGroup, RelationKind, Rows, TableSize, Tolerance,
};
use crate::{Ident, TableRef, Value};

/// The most groups a profile, spine or metric may return; more is an
/// error (group by something coarser).
pub const MAX_GROUPS: usize = 100_000;

/// Name of the temporary table a diff keeps its differing rows in.
pub const DIFF_TABLE: &str = "__bf_diff";

/// The statements that answer `q`, in order.
pub fn render(d: &dyn Dialect, q: &Inspect) -> Vec<Sql> {
    match q {
        Inspect::Profile {
            rows,
            by,
            distinct,
            nulls,
        } => vec![profile(d, rows, by, distinct, nulls)],
        Inspect::Spine {
            rows,
            dim,
            expected,
        } => vec![spine(d, rows, dim, expected)],
        Inspect::Orphans {
            rows,
            columns,
            parent,
            parent_columns,
            sample,
        } => orphans(d, rows, columns, parent, parent_columns, *sample),
        Inspect::Metric { rows, metric } => vec![metric_values(d, rows, metric)],
        Inspect::Diff(diff) => self::diff(d, diff),
        Inspect::Size { table } => vec![d.table_size(table)],
        Inspect::Dependents { table } => vec![d.dependents(table)],
        Inspect::Estimate { rows } => {
            let mut b = SqlBuilder::new(d);
            if d.estimates_by_explain() {
                b.push("EXPLAIN (FORMAT JSON) SELECT 1 FROM ");
            } else {
                b.push("SELECT count(*) FROM ");
            }
            rows_as(&mut b, rows, "__t");
            vec![b.finish()]
        }
    }
}

/// Every column a diff reads: keys, compared columns, the attributed
/// metric's columns and the fast path's partition column, each once.
pub fn diff_columns(diff: &Diff) -> Vec<Ident> {
    let mut out: Vec<Ident> = Vec::new();
    let metric = diff
        .attribute
        .as_ref()
        .map(Metric::columns)
        .unwrap_or_default();
    let all = diff
        .keys
        .iter()
        .chain(diff.columns.iter().map(|c| &c.column))
        .chain(metric.iter())
        .chain(diff.partition.iter().map(|p| &p.column));
    for c in all {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// `(SELECT * FROM table WHERE filter) AS alias`, without a pre-image's
/// marker rows.
fn rows_as(b: &mut SqlBuilder<'_>, rows: &Rows, alias: &str) {
    b.push("(SELECT * FROM ")
        .table(&rows.table)
        .push(" AS __r WHERE ")
        .predicate(&rows.filter, Some("__r"));
    if rows.pre_image {
        let marker = Ident::new(MARKER_COLUMN).expect("valid marker column");
        b.push(" AND NOT ").qualified("__r", &marker);
    }
    if let Some(set) = &rows.keys_in {
        b.push(" AND EXISTS (SELECT 1 FROM ")
            .table(&set.table)
            .push(" AS __k WHERE ");
        for (i, k) in set.keys.iter().enumerate() {
            if i > 0 {
                b.push(" AND ");
            }
            b.qualified("__k", k).push(" = ").qualified("__r", k);
        }
        b.push(")");
    }
    b.push(") AS ").push(alias);
}

fn dim_expr(d: &dyn Dialect, dim: &Dim, alias: &str) -> String {
    let mut b = SqlBuilder::new(d);
    b.qualified(alias, &dim.column);
    let col = b.text().to_string();
    match dim.period {
        None => col,
        Some(crate::inspect::Period::Day) => format!("CAST({col} AS DATE)"),
        Some(p) => format!("CAST(date_trunc('{}', {col}) AS DATE)", p.unit()),
    }
}

fn dims_select(b: &mut SqlBuilder<'_>, by: &[Dim], alias: &str) {
    for dim in by {
        let e = dim_expr(b.dialect(), dim, alias);
        b.push(&e).push(", ");
    }
}

fn group_order(b: &mut SqlBuilder<'_>, n: usize) {
    if n > 0 {
        let pos: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        // NULL groups last on every engine (Spark sorts them first).
        let order: Vec<String> = pos.iter().map(|p| format!("{p} NULLS LAST")).collect();
        b.push(" GROUP BY ")
            .push(&pos.join(", "))
            .push(" ORDER BY ")
            .push(&order.join(", "));
    }
}

fn limit_groups(b: &mut SqlBuilder<'_>) {
    b.push(&format!(" LIMIT {}", MAX_GROUPS + 1));
}

/// `text(a.k1) || ', ' || text(a.k2)`, NULL shown as `NULL`.
fn key_text(b: &mut SqlBuilder<'_>, keys: &[Ident], alias: &str) {
    let d = b.dialect();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            b.push(" || ', ' || ");
        }
        let mut inner = SqlBuilder::new(d);
        inner.qualified(alias, k);
        b.push(&format!("coalesce({}, 'NULL')", d.text(inner.text())));
    }
}

fn tuple(b: &mut SqlBuilder<'_>, cols: &[Ident], alias: &str) {
    if cols.len() == 1 {
        b.qualified(alias, &cols[0]);
    } else {
        b.push("(").idents(cols, Some(alias)).push(")");
    }
}

fn profile(d: &dyn Dialect, rows: &Rows, by: &[Dim], distinct: &[Ident], nulls: &[Ident]) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    dims_select(&mut b, by, "__t");
    b.push("count(*), ");
    if distinct.is_empty() {
        b.push("CAST(NULL AS BIGINT)");
    } else {
        b.push("count(DISTINCT ");
        tuple(&mut b, distinct, "__t");
        b.push(")");
    }
    for c in nulls {
        b.push(", count(*) - count(").qualified("__t", c).push(")");
    }
    b.push(" FROM ");
    rows_as(&mut b, rows, "__t");
    group_order(&mut b, by.len());
    limit_groups(&mut b);
    b.finish()
}

fn spine(d: &dyn Dialect, rows: &Rows, dim: &Dim, expected: &[Value]) -> Sql {
    let mut b = SqlBuilder::new(d);
    if expected.is_empty() {
        b.push("SELECT NULL, 0 WHERE FALSE");
        return b.finish();
    }
    b.push("WITH __e(v) AS (VALUES ");
    for (i, v) in expected.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push("(");
        select_param(&mut b, v);
        b.push(")");
    }
    let e = dim_expr(d, dim, "__t");
    b.push(") SELECT __e.v, count(__x.v) FROM __e LEFT JOIN (SELECT ")
        .push(&e)
        .push(" AS v FROM ");
    rows_as(&mut b, rows, "__t");
    b.push(") AS __x ON __x.v = __e.v GROUP BY __e.v ORDER BY __e.v");
    b.finish()
}

fn orphans(
    d: &dyn Dialect,
    rows: &Rows,
    columns: &[Ident],
    parent: &TableRef,
    parent_columns: &[Ident],
    sample: usize,
) -> Vec<Sql> {
    let from = |b: &mut SqlBuilder<'_>| {
        b.push(" FROM ");
        rows_as(b, rows, "__t");
        b.push(" WHERE ");
        for c in columns {
            b.qualified("__t", c).push(" IS NOT NULL AND ");
        }
        b.push("NOT EXISTS (SELECT 1 FROM ")
            .table(parent)
            .push(" AS __p WHERE ");
        for (i, (c, p)) in columns.iter().zip(parent_columns).enumerate() {
            if i > 0 {
                b.push(" AND ");
            }
            b.qualified("__p", p).push(" = ").qualified("__t", c);
        }
        b.push(")");
    };
    let mut count = SqlBuilder::new(d);
    count.push("SELECT count(*)");
    from(&mut count);
    let mut s = SqlBuilder::new(d);
    s.push("SELECT DISTINCT ");
    key_text(&mut s, columns, "__t");
    s.push(" AS k");
    from(&mut s);
    s.push(&format!(" ORDER BY k LIMIT {sample}"));
    vec![count.finish(), s.finish()]
}

fn aggregate_expr(b: &mut SqlBuilder<'_>, agg: &Aggregate, alias: &str) {
    match agg {
        Aggregate::Count => {
            b.push("count(*)");
        }
        Aggregate::Sum(c) => {
            let mut inner = SqlBuilder::new(b.dialect());
            inner.push("sum(").qualified(alias, c).push(")");
            let t = b.dialect().text(inner.text());
            b.push(&t);
        }
    }
}

fn metric_values(d: &dyn Dialect, rows: &Rows, metric: &Metric) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    dims_select(&mut b, &metric.by, "__t");
    aggregate_expr(&mut b, &metric.aggregate, "__t");
    b.push(" FROM ");
    rows_as(&mut b, rows, "__t");
    group_order(&mut b, metric.by.len());
    limit_groups(&mut b);
    b.finish()
}

/// A boolean expression: whether `__o.c` and `__n.c` differ beyond the
/// tolerance (null-safe: NULL against a value differs, NULL against NULL
/// does not).
fn differs(b: &mut SqlBuilder<'_>, c: &Compared) {
    let d = b.dialect();
    let side = |alias: &str| {
        let mut s = SqlBuilder::new(d);
        s.qualified(alias, &c.column);
        s.text().to_string()
    };
    let (o, n) = (side("__o"), side("__n"));
    let (lo, ln, tol) = match c.tolerance {
        None => {
            b.push(&format!("({o} IS DISTINCT FROM {n})"));
            return;
        }
        Some(Tolerance::Absolute(t)) => (o.clone(), n.clone(), t),
        Some(Tolerance::Seconds(t)) => (d.epoch_seconds(&o), d.epoch_seconds(&n), t),
    };
    b.push(&format!(
        "(CASE WHEN {o} IS NULL OR {n} IS NULL THEN ({o} IS NULL) <> ({n} IS NULL) ELSE abs({lo} - {ln}) > "
    ));
    select_param(b, &Value::Float(tol));
    b.push(" END)");
}

/// The fast path's `WITH` clause (per-partition counts and hash sums of
/// everything compared, and the partitions that differ), if the diff asks
/// for it.
fn diff_with(c: &mut SqlBuilder<'_>, diff: &Diff, cols: &[Ident]) {
    let Some(p) = &diff.partition else {
        return;
    };
    let d = c.dialect();
    let summary = |c: &mut SqlBuilder<'_>, rows: &Rows, name: &str| {
        let e = dim_expr(d, p, "__s");
        let mut hashed: Vec<String> = Vec::new();
        for col in cols.iter().chain(std::iter::once(&p.column)) {
            let mut q = SqlBuilder::new(d);
            q.qualified("__s", col);
            hashed.push(q.text().to_string());
        }
        c.push(&format!(
            "{name} AS (SELECT {e} AS __bf_p, count(*) AS __bf_n, sum({}) AS __bf_h FROM ",
            d.values_hash(&hashed)
        ));
        rows_as(c, rows, "__s");
        c.push(" GROUP BY 1)");
    };
    c.push("WITH ");
    summary(c, &diff.old, "__bf_po");
    c.push(", ");
    summary(c, &diff.new, "__bf_pn");
    // Partitions on one side only, or whose summaries differ (GROUP BY
    // puts NULL partitions together, where a join would not).
    c.push(", __bf_pd AS (SELECT __bf_p FROM (SELECT * FROM __bf_po UNION ALL SELECT * FROM __bf_pn) AS __bf_u GROUP BY __bf_p HAVING count(*) = 1 OR min(__bf_n) <> max(__bf_n) OR min(__bf_h) <> max(__bf_h)) ");
}

/// ` FROM old AS __o FULL JOIN new AS __n ON keys`, each side reading
/// `cols` and a `__bf_in` marker (restricted to differing partitions on
/// the fast path).
fn diff_from(c: &mut SqlBuilder<'_>, diff: &Diff, cols: &[Ident], marker: bool) {
    let d = c.dialect();
    let side = |b: &mut SqlBuilder<'_>, rows: &Rows, alias: &str| {
        b.push("(SELECT ");
        if marker {
            b.push("1 AS __bf_in, ");
        }
        b.idents(cols, Some("__s"));
        b.push(" FROM ");
        rows_as(b, rows, "__s");
        if let Some(p) = &diff.partition {
            let e = dim_expr(d, p, "__s");
            b.push(&format!(
                " WHERE {e} IN (SELECT __bf_p FROM __bf_pd) OR ({e} IS NULL AND EXISTS (SELECT 1 FROM __bf_pd WHERE __bf_p IS NULL))"
            ));
        }
        b.push(") AS ").push(alias);
    };
    c.push(" FROM ");
    side(c, &diff.old, "__o");
    c.push(" FULL JOIN ");
    side(c, &diff.new, "__n");
    c.push(" ON ");
    for (i, k) in diff.keys.iter().enumerate() {
        if i > 0 {
            c.push(" AND ");
        }
        c.qualified("__o", k).push(" = ").qualified("__n", k);
    }
}

/// A diff without attribution in one pass: one aggregate over the full
/// join gives row counts on each side, counts per kind and per column,
/// and the sampled keys.
fn diff_one_pass(d: &dyn Dialect, diff: &Diff) -> Vec<Sql> {
    let cols = diff_columns(diff);
    // Keys are not null (the grain is checked first), so a side is
    // present where its first key is.
    let present = |alias: &str| {
        let mut q = SqlBuilder::new(d);
        q.qualified(alias, &diff.keys[0]);
        q.text().to_string()
    };
    let (o, n) = (present("__o"), present("__n"));
    // Both sides are present where the first keys are equal (the join is
    // on equal keys). Said so rather than as two IS NOT NULL tests, which
    // Sail 0.7.2 fails to plan beside a sample's aggregate.
    let both = format!("{o} = {n}");
    let mut c = SqlBuilder::new(d);
    diff_with(&mut c, diff, &cols);
    if diff.partition.is_some() {
        // Only differing partitions are joined; the summaries count all.
        c.push("SELECT (SELECT coalesce(sum(__bf_n), 0) FROM __bf_po), (SELECT coalesce(sum(__bf_n), 0) FROM __bf_pn), ");
    } else {
        c.push(&format!("SELECT count({o}), count({n}), "));
    }
    c.push(&format!(
        "count(*) FILTER (WHERE {o} IS NULL), count(*) FILTER (WHERE {n} IS NULL), count(*) FILTER (WHERE {both} AND "
    ));
    any_differs(&mut c, diff);
    c.push(")");
    for col in &diff.columns {
        c.push(", count(*) FILTER (WHERE ")
            .push(&both)
            .push(" AND ");
        differs(&mut c, col);
        c.push(")");
    }
    if diff.sample > 0 {
        let kinds: [(&str, String); 3] = [
            ("__n", format!("{o} IS NULL")),
            ("__o", format!("{n} IS NULL")),
            ("__n", both.clone()),
        ];
        for (i, (alias, filter)) in kinds.into_iter().enumerate() {
            let (prefix, suffix) = first_keys(d, diff, alias);
            c.push(", ").push(&prefix).push(&filter);
            if i == 2 {
                c.push(" AND ");
                any_differs(&mut c, diff);
            }
            c.push(&suffix);
        }
    }
    diff_from(&mut c, diff, &cols, false);
    vec![c.finish()]
}

/// `(c1 differs OR c2 differs …)`, `(FALSE)` with no compared columns.
fn any_differs(c: &mut SqlBuilder<'_>, diff: &Diff) {
    c.push("(");
    if diff.columns.is_empty() {
        c.push("FALSE");
    }
    for (i, col) in diff.columns.iter().enumerate() {
        if i > 0 {
            c.push(" OR ");
        }
        differs(c, col);
    }
    c.push(")");
}

/// The text before and after a filter that aggregates the first
/// `diff.sample` keys (in key order) of the rows where it holds, as text
/// joined by U+001F.
fn first_keys(d: &dyn Dialect, diff: &Diff, alias: &str) -> (String, String) {
    let mut text = SqlBuilder::new(d);
    key_text(&mut text, &diff.keys, alias);
    let order: Vec<String> = diff
        .keys
        .iter()
        .map(|k| {
            let mut q = SqlBuilder::new(d);
            q.qualified(alias, k);
            q.text().to_string()
        })
        .collect();
    // One key: aggregate the typed key and let the list's text cast render
    // it, rather than casting every row's key to text.
    let text = if order.len() == 1 {
        order[0].clone()
    } else {
        text.text().to_string()
    };
    d.first_texts(&text, &order, diff.sample)
}

fn diff(d: &dyn Dialect, diff: &Diff) -> Vec<Sql> {
    if diff.attribute.is_none() {
        return diff_one_pass(d, diff);
    }
    let cols = diff_columns(diff);
    let keys = &diff.keys;
    let diff_table = TableRef::new(Ident::new(DIFF_TABLE).expect("valid diff table name"));

    // 1. The differing rows, kept in the engine.
    let mut c = SqlBuilder::new(d);
    c.push(d.scratch().0).table(&diff_table).push(" AS ");
    diff_with(&mut c, diff, &cols);
    c.push("SELECT CASE WHEN __j.__bf_side = 0 THEN 3 ELSE __j.__bf_side END AS __bf_kind, __j.* FROM (SELECT CASE WHEN __o.__bf_in IS NULL THEN 1 WHEN __n.__bf_in IS NULL THEN 2 ELSE 0 END AS __bf_side");
    for k in keys {
        c.push(", coalesce(")
            .qualified("__n", k)
            .push(", ")
            .qualified("__o", k)
            .push(") AS ")
            .ident(k);
    }
    for (i, col) in diff.columns.iter().enumerate() {
        c.push(", CASE WHEN __o.__bf_in IS NOT NULL AND __n.__bf_in IS NOT NULL AND ");
        differs(&mut c, col);
        c.push(&format!(" THEN 1 ELSE 0 END AS __bf_f{i}"));
    }
    if let Some(m) = &diff.attribute {
        for (i, dim) in m.by.iter().enumerate() {
            let (o, n) = (dim_expr(d, dim, "__o"), dim_expr(d, dim, "__n"));
            c.push(&format!(", {o} AS __bf_od{i}, {n} AS __bf_nd{i}"));
        }
        match &m.aggregate {
            Aggregate::Count => {
                c.push(", CASE WHEN __o.__bf_in IS NULL THEN 0 ELSE 1 END AS __bf_om, CASE WHEN __n.__bf_in IS NULL THEN 0 ELSE 1 END AS __bf_nm");
            }
            Aggregate::Sum(col) => {
                c.push(", ")
                    .qualified("__o", col)
                    .push(" AS __bf_om, ")
                    .qualified("__n", col)
                    .push(" AS __bf_nm");
            }
        }
    }
    diff_from(&mut c, diff, &cols, true);
    c.push(") AS __j WHERE __j.__bf_side <> 0");
    for i in 0..diff.columns.len() {
        c.push(&format!(" OR __j.__bf_f{i} = 1"));
    }

    // 2. Counts per kind and per column.
    let mut k = SqlBuilder::new(d);
    k.push("SELECT __bf_kind, count(*)");
    for i in 0..diff.columns.len() {
        k.push(&format!(", CAST(sum(__bf_f{i}) AS BIGINT)"));
    }
    k.push(" FROM ")
        .table(&diff_table)
        .push(" GROUP BY __bf_kind ORDER BY __bf_kind");

    // 3. A deterministic sample per kind.
    let mut s = SqlBuilder::new(d);
    s.push("SELECT __bf_kind, ");
    key_text(&mut s, keys, "__d");
    s.push(" FROM (SELECT *, row_number() OVER (PARTITION BY __bf_kind ORDER BY ")
        .idents(keys, None)
        .push(") AS __bf_rn FROM ")
        .table(&diff_table)
        .push(") AS __d WHERE __bf_rn <= ")
        .param(Value::Int(i64::try_from(diff.sample).unwrap_or(i64::MAX)))
        .push(" ORDER BY __bf_kind, ")
        .idents(keys, Some("__d"));

    // 4. Rows on each side.
    let mut n = SqlBuilder::new(d);
    n.push("SELECT (SELECT count(*) FROM ");
    rows_as(&mut n, &diff.old, "__a");
    n.push("), (SELECT count(*) FROM ");
    rows_as(&mut n, &diff.new, "__b");
    n.push(")");

    let mut out = vec![c.finish(), k.finish(), s.finish(), n.finish()];

    // 5. The metric's change per group and kind.
    if let Some(m) = &diff.attribute {
        let dims = m.by.len();
        let mut a = SqlBuilder::new(d);
        let g: Vec<String> = (0..dims).map(|i| format!("__bf_g{i}")).collect();
        let part = |a: &mut SqlBuilder<'_>, prefix: &str, measure: &str, skip: Change| {
            a.push("SELECT ");
            for (i, gi) in g.iter().enumerate() {
                a.push(&format!("__bf_{prefix}d{i} AS {gi}, "));
            }
            a.push(&format!("__bf_kind, {measure} AS __bf_v FROM "))
                .table(&diff_table)
                .push(&format!(" WHERE __bf_kind <> {}", skip.code()));
        };
        a.push("SELECT ");
        for gi in &g {
            a.push(gi).push(", ");
        }
        a.push("__bf_kind, ")
            .push(&d.text("sum(__bf_v)"))
            .push(" FROM (");
        // `0 - x`, not `-x`: Sail 0.7.2 gives a negated DECIMAL(18,2)
        // column DECIMAL(38,10) rows under a UNION's DECIMAL(18,2).
        part(&mut a, "o", "(0 - __bf_om)", Change::Added);
        a.push(" UNION ALL ");
        part(&mut a, "n", "__bf_nm", Change::Removed);
        a.push(") AS __c");
        group_order(&mut a, dims + 1);
        limit_groups(&mut a);
        out.push(a.finish());
    }

    let mut drop = SqlBuilder::new(d);
    drop.push(d.scratch().1).table(&diff_table);
    out.push(drop.finish());
    out
}

// ---------------------------------------------------------------------------
// Reading results
// ---------------------------------------------------------------------------

fn count_of(v: &Value) -> Result<u64> {
    match v {
        Value::Null => Ok(0),
        Value::Int(n) => {
            u64::try_from(*n).map_err(|_| Error::engine(format!("negative count {n}")))
        }
        Value::Text(s) => s
            .parse()
            .map_err(|_| Error::engine(format!("not a count: {s}"))),
        Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 => Ok(*f as u64),
        other => Err(Error::engine(format!("not a count: {other:?}"))),
    }
}

fn amount_of(v: &Value) -> Result<Amount> {
    Amount::read(v)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bounded<T>(rows: Vec<T>) -> Result<Vec<T>> {
    if rows.len() > MAX_GROUPS {
        return Err(Error::NotAllowed(format!(
            "more than {MAX_GROUPS} groups; group by something coarser"
        )));
    }
    Ok(rows)
}

fn nth(results: &mut [Vec<Vec<Value>>], i: usize) -> Result<Vec<Vec<Value>>> {
    results
        .get_mut(i)
        .map(std::mem::take)
        .ok_or_else(|| Error::engine(format!("missing result {i}")))
}

fn one_row(rows: Vec<Vec<Value>>) -> Result<Vec<Value>> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::engine("expected one row"))
}

/// Reads the results of the statements [`render`] made for `q` (in
/// order) as its typed answer.
pub fn read_answer(q: &Inspect, mut results: Vec<Vec<Vec<Value>>>) -> Result<Answer> {
    Ok(match q {
        Inspect::Profile { by, nulls, .. } => {
            let dims = by.len();
            let mut groups = Vec::new();
            for mut row in bounded(nth(&mut results, 0)?)? {
                let rest = row.split_off(dims);
                let rows = count_of(&rest[0])?;
                let distinct = match &rest[1] {
                    Value::Null => None,
                    v => Some(count_of(v)?),
                };
                let nulls = rest[2..2 + nulls.len()]
                    .iter()
                    .map(count_of)
                    .collect::<Result<_>>()?;
                groups.push(ProfileGroup {
                    key: row,
                    rows,
                    distinct,
                    nulls,
                });
            }
            Answer::Profile(groups)
        }
        Inspect::Spine { .. } => {
            let rows = nth(&mut results, 0)?;
            let mut out = Vec::new();
            for mut row in rows {
                let n = count_of(&row[1])?;
                out.push((std::mem::replace(&mut row[0], Value::Null), n));
            }
            Answer::Spine(out)
        }
        Inspect::Orphans { .. } => {
            let n = count_of(&one_row(nth(&mut results, 0)?)?[0])?;
            let sample = nth(&mut results, 1)?
                .iter()
                .map(|r| text_of(&r[0]))
                .collect();
            Answer::Orphans { rows: n, sample }
        }
        Inspect::Metric { metric, .. } => {
            let dims = metric.by.len();
            let mut out = Vec::new();
            for mut row in bounded(nth(&mut results, 0)?)? {
                let value = amount_of(&row[dims])?;
                row.truncate(dims);
                out.push(MetricValue { key: row, value });
            }
            Answer::Metric(out)
        }
        Inspect::Diff(diff) => Answer::Diff(read_diff(diff, results)?),
        Inspect::Estimate { .. } => {
            let row = one_row(nth(&mut results, 0)?)?;
            Answer::Estimate(match &row[0] {
                // EXPLAIN (FORMAT JSON): [{"Plan": {"Plan Rows": n, …}}]
                Value::Text(json) if json.trim_start().starts_with('[') => {
                    let plan: serde_json::Value = serde_json::from_str(json)
                        .map_err(|e| Error::engine(format!("unreadable plan: {e}")))?;
                    plan[0]["Plan"]["Plan Rows"]
                        .as_f64()
                        .map(|n| n.round() as u64)
                        .ok_or_else(|| Error::engine("a plan without a row estimate"))?
                }
                v => count_of(v)?,
            })
        }
        Inspect::Dependents { .. } => {
            let mut out = Vec::new();
            for row in nth(&mut results, 0)? {
                let kind = match text_of(&row[2]).as_str() {
                    "m" | "materialized view" => RelationKind::MaterializedView,
                    _ => RelationKind::View,
                };
                let (schema, name) = (Ident::new(text_of(&row[0]))?, Ident::new(text_of(&row[1]))?);
                out.push(Dependent {
                    kind,
                    relation: TableRef::qualified(schema, name),
                    definition: row.get(3).filter(|v| !v.is_null()).map(text_of),
                });
            }
            out.sort();
            Answer::Dependents(out)
        }
        Inspect::Size { table } => {
            let row = nth(&mut results, 0)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::UnknownTable(table.to_string()))?;
            Answer::Size(TableSize {
                rows: count_of(&row[0])?,
                bytes: match &row[1] {
                    Value::Null => None,
                    v => Some(count_of(v)?),
                },
            })
        }
    })
}

/// The separator between sampled keys in a one-pass diff's answer.
const KEY_SEPARATOR: char = '\u{1f}';

fn read_one_pass(diff: &Diff, mut results: Vec<Vec<Vec<Value>>>) -> Result<DiffReport> {
    let row = one_row(nth(&mut results, 0)?)?;
    let n = diff.columns.len();
    let mut r = DiffReport {
        old_rows: count_of(&row[0])?,
        new_rows: count_of(&row[1])?,
        added: count_of(&row[2])?,
        removed: count_of(&row[3])?,
        changed: count_of(&row[4])?,
        ..DiffReport::default()
    };
    r.unchanged = r.new_rows.saturating_sub(r.added + r.changed);
    for (i, c) in diff.columns.iter().enumerate() {
        r.column_changes
            .push((c.column.clone(), count_of(&row[5 + i])?));
    }
    r.samples = Change::ALL
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let keys = match row.get(5 + n + i) {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => text_of(v)
                    .split(KEY_SEPARATOR)
                    .map(str::to_string)
                    .collect(),
            };
            (kind, keys)
        })
        .collect();
    Ok(r)
}

fn read_diff(diff: &Diff, mut results: Vec<Vec<Vec<Value>>>) -> Result<DiffReport> {
    if diff.attribute.is_none() {
        return read_one_pass(diff, results);
    }
    let mut r = DiffReport {
        column_changes: diff.columns.iter().map(|c| (c.column.clone(), 0)).collect(),
        ..DiffReport::default()
    };
    for row in nth(&mut results, 1)? {
        let kind = match &row[0] {
            Value::Int(n) => Change::of_code(*n),
            _ => None,
        }
        .ok_or_else(|| Error::engine(format!("unknown diff kind {:?}", row[0])))?;
        let n = count_of(&row[1])?;
        match kind {
            Change::Added => r.added = n,
            Change::Removed => r.removed = n,
            Change::Changed => r.changed = n,
        }
        for (i, v) in row[2..].iter().enumerate() {
            r.column_changes[i].1 += count_of(v)?;
        }
    }
    let mut samples: BTreeMap<Change, Vec<String>> = BTreeMap::new();
    for row in nth(&mut results, 2)? {
        if let Value::Int(n) = &row[0] {
            if let Some(kind) = Change::of_code(*n) {
                samples.entry(kind).or_default().push(text_of(&row[1]));
            }
        }
    }
    r.samples = Change::ALL
        .into_iter()
        .map(|k| (k, samples.remove(&k).unwrap_or_default()))
        .collect();
    let sides = one_row(nth(&mut results, 3)?)?;
    r.old_rows = count_of(&sides[0])?;
    r.new_rows = count_of(&sides[1])?;
    r.unchanged = r.new_rows.saturating_sub(r.added + r.changed);
    if let Some(m) = &diff.attribute {
        let dims = m.by.len();
        let mut by_key: Vec<Contribution> = Vec::new();
        for mut row in bounded(nth(&mut results, 4)?)? {
            let amount = amount_of(&row[dims + 1])?;
            let kind = match &row[dims] {
                Value::Int(n) => Change::of_code(*n),
                _ => None,
            }
            .ok_or_else(|| Error::engine("unknown diff kind in attribution"))?;
            row.truncate(dims);
            // Rows come ordered by group, so a group's kinds are adjacent.
            let at = match by_key.last() {
                Some(c) if c.key == row => by_key.len() - 1,
                _ => {
                    by_key.push(Contribution {
                        key: row,
                        added: Amount::ZERO,
                        removed: Amount::ZERO,
                        changed: Amount::ZERO,
                    });
                    by_key.len() - 1
                }
            };
            let c = &mut by_key[at];
            match kind {
                Change::Added => c.added = c.added.checked_add(amount)?,
                Change::Removed => c.removed = c.removed.checked_add(amount)?,
                Change::Changed => c.changed = c.changed.checked_add(amount)?,
            }
        }
        r.contributions = by_key;
    }
    Ok(r)
}
