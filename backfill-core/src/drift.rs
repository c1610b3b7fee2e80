//! Drift and freeze: what a run depends on, fingerprinted when it starts
//! and checked again before each batch.
//!
//! A backfill rewrites history from sources and into a table that others
//! may change while it runs: a source retyped or losing rows, the target
//! altered, a dependent view redefined. Each is drift. The run records a
//! baseline when it starts (ledger document [`BASELINE`]): the target's
//! and each source relation's columns and types, each table source's
//! rows in the scope, and the engine's dependents of the target with
//! their definitions. Before each batch it compares the catalog part
//! (columns, types, definitions: catalog lookups); the row counts are
//! compared when each `run` call starts. What the brief's policy says to
//! pause on pauses the run with the reason; the operator accepts it
//! ([`crate::Runner::accept_drift`], recorded with who and why, shown in
//! the change note) or cancels.

use serde::{Deserialize, Serialize};

use crate::ask;
use crate::brief::RiskClass;
pub use crate::checks::{Act, DriftPolicy, Kind};
use crate::error::Result;
use crate::job::Backfill;
use crate::warehouse::Warehouse;
use crate::Source;

/// The ledger document holding a run's baseline fingerprint.
pub const BASELINE: &str = "drift_baseline";
/// The ledger document holding the drift accepted so far, with who and why.
pub const ACCEPTED: &str = "drift_accepted";
/// The ledger document holding drift the policy only warned about.
pub const NOTED: &str = "drift_noted";

/// One relation as fingerprinted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// `target`, `source` or `dependent`.
    pub role: String,
    /// Its name (a source query is named by its description).
    pub name: String,
    /// `name type` of each column, in order.
    pub columns: Vec<String>,
    /// Rows in the scope, for a table source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The definition, for a dependent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// What a run depends on, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The relations, target first.
    pub relations: Vec<Relation>,
}

/// One change against the baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The relation.
    pub relation: String,
    /// What changed.
    pub kind: Kind,
    /// Before.
    pub before: String,
    /// Now.
    pub now: String,
    /// What the policy does about it.
    pub act: Act,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            Kind::Columns => "columns",
            Kind::Rows => "rows in scope",
            Kind::Definition => "definition",
        };
        write!(
            f,
            "{} {what} changed: was {}, now {}",
            self.relation, self.before, self.now
        )
    }
}

/// Drift accepted by the operator: the changes, who, why and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// Who accepted.
    pub by: String,
    /// Why.
    pub why: String,
    /// When.
    pub at: jiff::Timestamp,
    /// What was accepted.
    pub drift: Vec<Drift>,
}

/// Takes the fingerprint of what `job` depends on. With `rows`, each
/// table source's rows in the scope are counted too; `staged` leaves the
/// sources out (the run reads its own snapshot of them).
pub async fn fingerprint(
    w: &dyn Warehouse,
    job: &Backfill,
    rows: bool,
    staged: bool,
) -> Result<Fingerprint> {
    let mut relations = Vec::new();
    let target = job.target();
    relations.push(Relation {
        role: "target".into(),
        name: target.to_string(),
        columns: columns(w.describe(target).await?),
        rows: None,
        definition: None,
    });
    if !staged {
        let scope = job.plan.scope.predicate()?;
        for source in job.sources() {
            let counted = match (source, rows) {
                (Source::Table(t), true) => Some(w.count(t, &scope).await?),
                _ => None,
            };
            relations.push(Relation {
                role: "source".into(),
                name: source.describe(),
                columns: columns(Some(w.describe_source(source).await?)),
                rows: counted,
                definition: None,
            });
        }
    }
    for d in ask::dependents(w, target.clone()).await? {
        relations.push(Relation {
            role: "dependent".into(),
            name: d.relation.to_string(),
            columns: Vec::new(),
            rows: None,
            definition: Some(d.definition.unwrap_or_default()),
        });
    }
    Ok(Fingerprint { relations })
}

fn columns(schema: Option<crate::TableSchema>) -> Vec<String> {
    schema
        .map(|s| {
            s.columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.ty.name()))
                .collect()
        })
        .unwrap_or_default()
}

/// The changes from `baseline` to `now`, each with what `policy` does
/// about it. Row counts are compared only where both sides have them.
pub fn compare(
    baseline: &Fingerprint,
    now: &Fingerprint,
    policy: &DriftPolicy,
    risk: RiskClass,
) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut push = |relation: &str, kind: Kind, before: String, now: String| {
        out.push(Drift {
            relation: relation.to_string(),
            kind,
            before,
            now,
            act: policy.act(kind, risk),
        })
    };
    let shown = |cols: &[String]| {
        if cols.is_empty() {
            "(gone)".to_string()
        } else {
            cols.join(", ")
        }
    };
    for b in &baseline.relations {
        let n = now
            .relations
            .iter()
            .find(|r| r.role == b.role && r.name == b.name);
        match (b.role.as_str(), n) {
            ("dependent", None) => push(
                &b.name,
                Kind::Definition,
                b.definition.clone().unwrap_or_default(),
                "(no longer reads the target, or dropped)".into(),
            ),
            ("dependent", Some(n)) if n.definition != b.definition => push(
                &b.name,
                Kind::Definition,
                b.definition.clone().unwrap_or_default(),
                n.definition.clone().unwrap_or_default(),
            ),
            (_, None) => push(&b.name, Kind::Columns, shown(&b.columns), "(gone)".into()),
            (_, Some(n)) => {
                if n.columns != b.columns {
                    push(&b.name, Kind::Columns, shown(&b.columns), shown(&n.columns));
                }
                if let (Some(x), Some(y)) = (b.rows, n.rows) {
                    if x != y {
                        push(&b.name, Kind::Rows, x.to_string(), y.to_string());
                    }
                }
            }
        }
    }
    for n in now.relations.iter().filter(|n| n.role == "dependent") {
        if !baseline
            .relations
            .iter()
            .any(|b| b.role == n.role && b.name == n.name)
        {
            push(
                &n.name,
                Kind::Definition,
                "(not a dependent)".into(),
                n.definition.clone().unwrap_or_default(),
            );
        }
    }
    out
}

/// `base` with `now`'s catalog part and, where `now` counted them, its
/// row counts: the baseline after an accepted drift.
pub fn rebaseline(base: &Fingerprint, now: Fingerprint) -> Fingerprint {
    let mut now = now;
    for r in &mut now.relations {
        if r.rows.is_none() {
            r.rows = base
                .relations
                .iter()
                .find(|b| b.role == r.role && b.name == r.name)
                .and_then(|b| b.rows);
        }
    }
    now
}
