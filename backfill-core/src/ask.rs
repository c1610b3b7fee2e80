//! Asking a warehouse an [`Inspect`] question and reading its typed
//! answer: one function per kind of question, for checks, notes and your
//! own code.

use crate::error::{Error, Result};
use crate::inspect::*;
use crate::warehouse::Warehouse;
use crate::{Ident, TableRef, Value};

fn wrong(what: &str, got: &Answer) -> Error {
    Error::engine(format!("expected a {what} answer, got {got:?}"))
}

/// Asks for a profile.
pub async fn profile(
    w: &dyn Warehouse,
    rows: Rows,
    by: Vec<Dim>,
    distinct: Vec<Ident>,
    nulls: Vec<Ident>,
) -> Result<Vec<ProfileGroup>> {
    let q = Inspect::Profile {
        rows,
        by,
        distinct,
        nulls,
    };
    match w.inspect(&q).await? {
        Answer::Profile(g) => Ok(g),
        other => Err(wrong("profile", &other)),
    }
}

/// Asks for a spine.
pub async fn spine(
    w: &dyn Warehouse,
    rows: Rows,
    dim: Dim,
    expected: Vec<Value>,
) -> Result<Vec<(Value, u64)>> {
    match w
        .inspect(&Inspect::Spine {
            rows,
            dim,
            expected,
        })
        .await?
    {
        Answer::Spine(s) => Ok(s),
        other => Err(wrong("spine", &other)),
    }
}

/// Asks for a metric's values.
pub async fn metric(w: &dyn Warehouse, rows: Rows, metric: Metric) -> Result<Vec<MetricValue>> {
    match w.inspect(&Inspect::Metric { rows, metric }).await? {
        Answer::Metric(m) => Ok(m),
        other => Err(wrong("metric", &other)),
    }
}

/// Asks for a diff.
pub async fn diff(w: &dyn Warehouse, diff: Diff) -> Result<DiffReport> {
    match w.inspect(&Inspect::Diff(Box::new(diff))).await? {
        Answer::Diff(d) => Ok(d),
        other => Err(wrong("diff", &other)),
    }
}

/// Asks for orphans: `(rows, sample)`.
pub async fn orphans(
    w: &dyn Warehouse,
    rows: Rows,
    columns: Vec<Ident>,
    parent: TableRef,
    parent_columns: Vec<Ident>,
    sample: usize,
) -> Result<(u64, Vec<String>)> {
    let q = Inspect::Orphans {
        rows,
        columns,
        parent,
        parent_columns,
        sample,
    };
    match w.inspect(&q).await? {
        Answer::Orphans { rows, sample } => Ok((rows, sample)),
        other => Err(wrong("orphans", &other)),
    }
}

/// Asks for a table's size.
pub async fn size(w: &dyn Warehouse, table: TableRef) -> Result<TableSize> {
    match w.inspect(&Inspect::Size { table }).await? {
        Answer::Size(s) => Ok(s),
        other => Err(wrong("size", &other)),
    }
}

/// Asks for the engine's own dependents of a table.
pub async fn dependents(w: &dyn Warehouse, table: TableRef) -> Result<Vec<Dependent>> {
    match w.inspect(&Inspect::Dependents { table }).await? {
        Answer::Dependents(d) => Ok(d),
        other => Err(wrong("dependents", &other)),
    }
}

/// Asks for an estimate of how many rows match.
pub async fn estimate(w: &dyn Warehouse, rows: Rows) -> Result<u64> {
    match w.inspect(&Inspect::Estimate { rows }).await? {
        Answer::Estimate(n) => Ok(n),
        other => Err(wrong("estimate", &other)),
    }
}
