//! Checks on one batch just written.

use async_trait::async_trait;

use super::{
    guard::Guard, verdict, BatchCheck, CheckContext, Expectation, Outcome, ScopeCheck,
    ScopeContext, Threshold, Validator,
};
use crate::checks::SAMPLE_LIMIT;
use crate::error::Result;
use crate::inspect::Rows;
use crate::{Ident, Predicate};

fn query_text(
    ctx: &CheckContext<'_>,
    render: impl FnOnce(&dyn crate::sql::Dialect) -> crate::sql::Sql,
    what: &str,
) -> String {
    match ctx.warehouse.dialect() {
        Some(d) => render(d).display(),
        None => format!("in-memory: {what}"),
    }
}

/// Row count of the slice after the write against before.
#[derive(Clone, Debug)]
pub struct RowCountCheck {
    /// The allowed change.
    pub expect: Expectation,
    /// Whether a failure stops the run.
    pub blocking: bool,
}

#[async_trait]
impl Validator for RowCountCheck {
    fn name(&self) -> String {
        "row_count".into()
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    fn guard(&self) -> Option<Guard> {
        self.blocking.then_some(Guard::RowCount {
            expect: self.expect,
        })
    }

    async fn check_batch(&self, ctx: &CheckContext<'_>, b: &BatchCheck<'_>) -> Result<Outcome> {
        let pred: &Predicate = &b.batch.predicate;
        let after = ctx.warehouse.count(ctx.table, pred).await?;
        let before = b.written.rows_before;
        let (ok, threshold) = self.expect.judge(before, after);
        Ok(Outcome {
            check: self.name(),
            batch: Some(b.batch.id.clone()),
            status: verdict(ok, self.blocking),
            blocking: self.blocking,
            observed: after as f64,
            expected: Some(before as f64),
            threshold: Some(threshold),
            detail: format!("{before} rows before, {after} after"),
            sample: Vec::new(),
            query: query_text(
                ctx,
                |d| crate::sql::stmt::count(d, ctx.table, pred),
                "count rows in slice",
            ),
        })
    }
}

/// No null and no duplicate keys in the written slice.
#[derive(Clone, Debug)]
pub struct UniquenessCheck {
    /// The grain.
    pub keys: Vec<Ident>,
    /// Whether a failure stops the run.
    pub blocking: bool,
}

#[async_trait]
impl Validator for UniquenessCheck {
    fn name(&self) -> String {
        crate::warehouse::unique_name(&self.keys)
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    fn guard(&self) -> Option<Guard> {
        self.blocking.then(|| Guard::Unique {
            keys: self.keys.clone(),
        })
    }

    fn guarded_outcome(&self, batch: &crate::BatchId) -> Option<Outcome> {
        if !self.blocking {
            return None;
        }
        Some(Outcome {
            check: self.name(),
            batch: Some(batch.clone()),
            status: verdict(true, self.blocking),
            blocking: self.blocking,
            observed: 0.0,
            expected: Some(0.0),
            threshold: Some(Threshold::Absolute(0.0)),
            detail: "0 duplicate key(s), 0 null key(s), checked in the batch's transaction before \
                     its commit"
                .into(),
            sample: Vec::new(),
            query: "group by key having count(*) > 1 (before commit)".into(),
        })
    }

    async fn check_batch(&self, ctx: &CheckContext<'_>, b: &BatchCheck<'_>) -> Result<Outcome> {
        let r = ctx
            .warehouse
            .key_report(ctx.table, &self.keys, &b.batch.predicate, SAMPLE_LIMIT)
            .await?;
        let bad = r.duplicate_keys + r.null_keys;
        Ok(Outcome {
            check: self.name(),
            batch: Some(b.batch.id.clone()),
            status: verdict(bad == 0, self.blocking),
            blocking: self.blocking,
            observed: bad as f64,
            expected: Some(0.0),
            threshold: Some(Threshold::Absolute(0.0)),
            detail: format!(
                "{} duplicate key(s), {} null key(s) in {} row(s)",
                r.duplicate_keys, r.null_keys, r.rows
            ),
            sample: r.sample,
            query: query_text(
                ctx,
                |d| {
                    crate::sql::stmt::key_report(
                        d,
                        ctx.table,
                        &self.keys,
                        &b.batch.predicate,
                        SAMPLE_LIMIT,
                    )
                    .0
                },
                "group by key having count(*) > 1",
            ),
        })
    }
}

/// A whole-scope check run on one batch's slice: the new rows are the
/// batch's slice of the new data, and the old side (measured as the
/// check's baseline) is the batch's slice of the old rows.
pub struct SliceCheck(pub Box<dyn ScopeCheck>);

fn narrow(rows: &Rows, predicate: &Predicate) -> Rows {
    Rows {
        filter: predicate.clone(),
        ..rows.clone()
    }
}

#[async_trait]
impl Validator for SliceCheck {
    fn name(&self) -> String {
        self.0.name()
    }

    fn blocking(&self) -> bool {
        self.0.blocking()
    }

    async fn check_batch(&self, ctx: &CheckContext<'_>, b: &BatchCheck<'_>) -> Result<Outcome> {
        let pred = &b.batch.predicate;
        let Some((old, new)) = ctx.diff else {
            return Err(crate::Error::NotAllowed(format!(
                "{} per batch needs the batch's old rows: keep a pre-image",
                self.0.name()
            )));
        };
        // Both sides narrowed to the batch (for a merge, to the keys it
        // touched), so before and after measure the same rows.
        let (old, new) = (narrow(old, pred), narrow(new, pred));
        let baseline = self.0.baseline(ctx.warehouse, &old).await?;
        let sctx = ScopeContext {
            warehouse: ctx.warehouse,
            ledger: ctx.ledger,
            run_id: ctx.run_id,
            plan: ctx.plan,
            new: &new,
            diff: Some((&old, &new)),
        };
        let mut o = self.0.check(&sctx, baseline.as_ref()).await?.outcome;
        o.batch = Some(b.batch.id.clone());
        Ok(o)
    }
}
