//! Answering [`Inspect`] questions on a SQL engine: check the tables and
//! columns named (typed errors before anything runs), render the question
//! with the shared renderer, run it, read the answer.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::inspect::{Answer, Dim, Inspect, Rows};
use crate::sql::inspect::{diff_columns, read_answer, render};
use crate::sql::Sql;
use crate::warehouse::{check_columns, Warehouse};
use crate::{Ident, TableRef, Value};

/// Runs read-only statements for inspections.
#[async_trait]
pub trait SqlRead: Send + Sync {
    /// Runs `stmts` in order, in one transaction on one connection (so a
    /// temporary table made by one is seen by the next), and returns each
    /// statement's rows (empty for statements that return none). Values are
    /// decoded by their result type: integers as [`Value::Int`], floats as
    /// [`Value::Float`], exact decimals as [`Value::Text`].
    async fn read(&self, stmts: Vec<Sql>) -> Result<Vec<Vec<Vec<Value>>>>;
}

/// Answers `q` on a SQL engine: checks the tables and columns it names
/// (typed errors before anything runs), renders it in the engine's
/// dialect, runs it through `engine` and reads the result.
pub async fn answer<E: Warehouse + SqlRead>(engine: &E, q: &Inspect) -> Result<Answer> {
    let d = engine
        .dialect()
        .ok_or_else(|| Error::engine("a SQL engine must have a dialect"))?;
    check(engine, q).await?;
    let stmts = render(d, q);
    let results = engine.read(stmts).await?;
    read_answer(q, results)
}

async fn check<W: Warehouse + ?Sized>(w: &W, q: &Inspect) -> Result<()> {
    let need = |rows: &Rows, cols: Vec<&Ident>| {
        let mut cols: Vec<Ident> = cols.into_iter().cloned().collect();
        cols.extend(rows.filter.columns().into_iter().cloned());
        (rows.table.clone(), cols)
    };
    let dims = |by: &[Dim]| -> Vec<Ident> { by.iter().map(|d| d.column.clone()).collect() };
    let mut wanted: Vec<(TableRef, Vec<Ident>)> = Vec::new();
    match q {
        Inspect::Profile {
            rows,
            by,
            distinct,
            nulls,
        } => {
            let d = dims(by);
            wanted.push(need(rows, d.iter().chain(distinct).chain(nulls).collect()));
        }
        Inspect::Spine { rows, dim, .. } => wanted.push(need(rows, vec![&dim.column])),
        Inspect::Orphans {
            rows,
            columns,
            parent,
            parent_columns,
            ..
        } => {
            if columns.len() != parent_columns.len() || columns.is_empty() {
                return Err(Error::InvalidPlan(
                    "a foreign key needs as many parent columns as columns".into(),
                ));
            }
            wanted.push(need(rows, columns.iter().collect()));
            wanted.push((parent.clone(), parent_columns.clone()));
        }
        Inspect::Metric { rows, metric } => {
            let c = metric.columns();
            wanted.push(need(rows, c.iter().collect()));
        }
        Inspect::Diff(diff) => {
            if diff.keys.is_empty() {
                return Err(Error::InvalidPlan("a diff needs a key".into()));
            }
            let c = diff_columns(diff);
            wanted.push(need(&diff.old, c.iter().collect()));
            wanted.push(need(&diff.new, c.iter().collect()));
        }
        Inspect::Size { table } | Inspect::Dependents { table } => {
            wanted.push((table.clone(), Vec::new()))
        }
        Inspect::Estimate { rows } => wanted.push(need(rows, Vec::new())),
    }
    for (table, cols) in wanted {
        let schema = w
            .describe(&table)
            .await?
            .ok_or_else(|| Error::UnknownTable(table.to_string()))?;
        check_columns(&schema, &cols, &table.to_string())?;
    }
    Ok(())
}
