//! Planning with a look at the data: keyset boundaries and key density
//! asked of the warehouse, for the planners that need them.

use crate::error::{Error, Result};
use crate::plan::{key_batch, key_ranges, Plan, Planner};
use crate::scope::{Bounds, Scope};
use crate::warehouse::Warehouse;
use crate::Value;

impl Plan {
    /// Plans `scope`, probing the table through `warehouse` where the
    /// planner needs it (keyset boundaries, density).
    pub async fn build_probed(
        scope: Scope,
        planner: Planner,
        warehouse: &dyn Warehouse,
    ) -> Result<Plan> {
        scope.validate()?;
        let (start, end) = match scope.bounds {
            Bounds::Keys { start, end } => (start, end),
            _ => return Plan::build(scope, planner),
        };
        let (rows_per_batch, min_density) = match planner {
            Planner::Keyset { rows_per_batch } => (rows_per_batch, None),
            Planner::AutoKeys {
                rows_per_batch,
                min_density,
            } => (rows_per_batch, Some(min_density)),
            _ => return Plan::build(scope, planner),
        };
        if rows_per_batch == 0 {
            return Err(Error::InvalidPlan(
                "rows_per_batch must be at least 1".into(),
            ));
        }
        let pred = scope.predicate()?;
        if let Some(min_density) = min_density {
            let rows = warehouse.count(&scope.target, &pred).await?;
            let width = (end as i128 - start as i128) as f64;
            let density = rows as f64 / width;
            if density >= min_density {
                let w = ((rows_per_batch as f64 / density).ceil() as u64).max(1);
                let batches = key_ranges(&scope, w)?;
                return Ok(Plan::assemble(scope, planner, batches));
            }
        }
        let mut cuts: Vec<i64> = warehouse
            .key_boundaries(&scope.target, &scope.batch_column, &pred, rows_per_batch)
            .await?
            .iter()
            // The first boundary is the smallest key: the first batch
            // starts at the scope's start instead, so no batch is empty.
            .skip(1)
            .filter_map(Value::as_i64)
            .filter(|k| *k > start && *k < end)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut edges = vec![start];
        edges.extend(cuts);
        edges.push(end);
        let batches = edges
            .windows(2)
            .enumerate()
            .map(|(i, w)| key_batch(&scope, i as u32, w[0], w[1]))
            .collect();
        Ok(Plan::assemble(scope, planner, batches))
    }
}
