//! The blast radius: everything a backfill can move, declared in the brief
//! and discovered in the engine.
//!
//! The brief declares direct dependents (models, views, dashboards, jobs),
//! indirect ones (marts, metrics, ML features, audiences, alerts) and
//! people, each with an owner. The engine adds its own dependents of the
//! target (views and materialized views); any the brief did not declare is
//! a preflight warning, and an error for a production-critical rebuild.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ask;
use crate::brief::{Brief, Dependency, Finding, RiskClass};
use crate::error::Result;
use crate::inspect::Dependent;
use crate::warehouse::Warehouse;

/// Who or what is affected, with whom to ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    /// `direct`, `indirect` or `human`.
    pub kind: String,
    /// The dependency.
    pub name: String,
    /// Its owner or contact.
    pub owner: String,
}

/// Everything the brief declares as affected, grouped by kind in order.
pub fn declared(brief: &Brief) -> Vec<Affected> {
    let group = |kind: &str, deps: &[Dependency]| -> Vec<Affected> {
        deps.iter()
            .map(|d| Affected {
                kind: kind.to_string(),
                name: d.name.clone(),
                owner: d.owner.clone(),
            })
            .collect()
    };
    let d = &brief.dependencies;
    let mut out = group("direct", &d.direct);
    out.extend(group("indirect", &d.indirect));
    out.extend(group("human", &d.human));
    out
}

/// The blast radius of a brief's target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    /// The target.
    pub target: String,
    /// What the brief declares.
    pub declared: Vec<Affected>,
    /// The engine's own dependents of the target.
    pub discovered: Vec<Dependent>,
    /// Discovered dependents the brief does not name.
    pub undeclared: Vec<Dependent>,
}

impl BlastRadius {
    /// Preflight findings: undeclared dependents warn, and block a
    /// production-critical rebuild.
    pub fn findings(&self, risk: RiskClass) -> Vec<Finding> {
        if self.undeclared.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = self
            .undeclared
            .iter()
            .map(|d| format!("{} {}", d.kind.as_str(), d.relation))
            .collect();
        let message = format!(
            "the engine shows dependents the brief does not declare: {}",
            names.join(", ")
        );
        vec![if risk == RiskClass::ProductionCriticalRebuild {
            Finding::block("dependencies", message)
        } else {
            Finding::warn("dependencies", message)
        }]
    }
}

/// Whether a dependency named `name` is `d` (by its qualified or bare name).
fn names(name: &str, d: &Dependent) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == d.relation.to_string().to_ascii_lowercase() || n == d.relation.name.as_str()
}

/// The brief's declared dependencies and the engine's dependents of its
/// target, with those the brief misses.
pub async fn blast_radius(w: &dyn Warehouse, brief: &Brief) -> Result<BlastRadius> {
    let target = &brief.scope.target;
    let discovered = ask::dependents(w, target.clone()).await?;
    let declared = declared(brief);
    let undeclared = discovered
        .iter()
        .filter(|d| !declared.iter().any(|a| names(&a.name, d)))
        .cloned()
        .collect();
    Ok(BlastRadius {
        target: target.to_string(),
        declared,
        discovered,
        undeclared,
    })
}

impl fmt::Display for BlastRadius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "blast radius of {}:", self.target)?;
        for kind in ["direct", "indirect", "human"] {
            let list: Vec<String> = self
                .declared
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| format!("{} ({})", a.name, a.owner))
                .collect();
            if !list.is_empty() {
                writeln!(f, "  {kind}: {}", list.join(", "))?;
            }
        }
        for d in &self.discovered {
            let mark = if self.undeclared.contains(d) {
                "  NOT DECLARED"
            } else {
                ""
            };
            writeln!(f, "  engine: {} {}{mark}", d.kind.as_str(), d.relation)?;
        }
        Ok(())
    }
}
