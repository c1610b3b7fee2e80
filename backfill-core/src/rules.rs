//! Business rules by period: history rewritten with the rules of its own
//! time, not today's.
//!
//! A backfill may map periods of its scope to versions of the corrected
//! logic, each a source with a name and a reason (the refund rule before a
//! policy change, and after it). The periods cover the scope exactly, with
//! no gap and no overlap; the plan never lets a batch cross a boundary (a
//! batch that would is split there); each batch reads its own period's
//! source; the rules are part of the run's fingerprint and are kept in the
//! ledger, with the batches each one wrote.

use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{Batch, BatchId, Plan};
use crate::scope::Bounds;
use crate::Source;

/// The ledger document the rule periods of a run, and the batches each
/// wrote, are kept under.
pub const RULES_DOCUMENT: &str = "rules";

/// One version of the corrected logic, for one period of the scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, as people know it ("refund rule 2025").
    pub name: String,
    /// Why this period has its own logic.
    pub reason: String,
    /// Inclusive start, wall clock in the scope's zone.
    pub from: DateTime,
    /// Exclusive end, wall clock in the scope's zone.
    pub until: DateTime,
    /// The corrected logic for the period.
    pub source: Source,
}

/// A rule as recorded for a run: its period and the batches it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePeriod {
    /// The rule's name.
    pub name: String,
    /// Why it applies.
    pub reason: String,
    /// Inclusive start, wall clock.
    pub from: DateTime,
    /// Exclusive end, wall clock.
    pub until: DateTime,
    /// The batches of the plan in the period.
    pub batches: Vec<BatchId>,
}

/// Checks that `rules` cover the plan's time scope exactly, in order,
/// each named, explained and with a usable source.
pub fn check(plan: &Plan, rules: &[Rule]) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidPlan(m));
    let Bounds::Time { start, end, .. } = plan.scope.bounds else {
        return bad("rule periods need a scope bounded in time".into());
    };
    if !matches!(plan.planner, crate::Planner::Windows { .. }) {
        return bad("rule periods need a plan of time windows".into());
    }
    let mut at = start;
    for (i, r) in rules.iter().enumerate() {
        if r.name.trim().is_empty() || r.reason.trim().is_empty() {
            return bad(format!("rule {} needs a name and a reason", i + 1));
        }
        if rules[..i].iter().any(|o| o.name == r.name) {
            return bad(format!("two rules are named {:?}", r.name));
        }
        if r.from >= r.until {
            return bad(format!(
                "rule {:?} runs from {} until {}: an empty or inverted period",
                r.name, r.from, r.until
            ));
        }
        if r.from != at {
            let what = if r.from > at { "a gap" } else { "an overlap" };
            return bad(format!(
                "{what} before rule {:?}: the previous period ends at {at}, it starts at {}; \
                 the periods must cover the scope {start} .. {end} one after another",
                r.name, r.from
            ));
        }
        r.source
            .check()
            .map_err(|e| Error::InvalidPlan(format!("rule {:?}: {e}", r.name)))?;
        at = r.until;
    }
    if at != end {
        return bad(format!(
            "the rule periods end at {at}, the scope at {end}: every period of the scope needs \
             a rule, and none may reach outside it"
        ));
    }
    Ok(())
}

/// The rule whose period holds `batch` (the plan is split at every rule
/// boundary, so one holds it whole).
pub fn rule_for<'a>(plan: &Plan, rules: &'a [Rule], batch: &Batch) -> Option<&'a Rule> {
    let start = batch.start.as_ref()?;
    rules.iter().find(|r| {
        let lo = crate::plan::bound_value(&plan.scope, r.from);
        let hi = crate::plan::bound_value(&plan.scope, r.until);
        match (lo, hi) {
            (Ok(lo), Ok(hi)) => {
                start.compare(&lo).is_some_and(|o| o.is_ge())
                    && start.compare(&hi).is_some_and(|o| o.is_lt())
            }
            _ => false,
        }
    })
}

/// The periods with the batches each holds, as recorded in the ledger.
pub fn periods(plan: &Plan, rules: &[Rule]) -> Vec<RulePeriod> {
    rules
        .iter()
        .map(|r| RulePeriod {
            name: r.name.clone(),
            reason: r.reason.clone(),
            from: r.from,
            until: r.until,
            batches: plan
                .batches
                .iter()
                .filter(|b| rule_for(plan, rules, b).is_some_and(|x| x.name == r.name))
                .map(|b| b.id.clone())
                .collect(),
        })
        .collect()
}
