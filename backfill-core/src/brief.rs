//! The written brief, and the preflight that refuses to run an incomplete
//! one.

use serde::{Deserialize, Serialize};

use crate::checks::CheckSpec;
pub use crate::finding::Finding;
use crate::pattern::StrategySpec;
use crate::Scope;

/// How risky the change is; it decides how strict preflight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    /// Adds information; existing metrics do not move.
    Enrichment,
    /// Repairs history, and reported metrics will change.
    MetricChangingRepair,
    /// Changes the shape of the table.
    SchemaMigration,
    /// Rebuilds a table that production depends on.
    ProductionCriticalRebuild,
}

/// Who or what depends on the target.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    /// Models, views, dashboards, tests and jobs reading the table.
    #[serde(default)]
    pub direct: Vec<Dependency>,
    /// Marts, metrics, ML features, audiences and alerts further down.
    #[serde(default)]
    pub indirect: Vec<Dependency>,
    /// People and teams: finance, growth, leadership, clients.
    #[serde(default)]
    pub human: Vec<Dependency>,
}

impl Dependencies {
    /// Every dependency, direct first.
    pub fn all(&self) -> impl Iterator<Item = &Dependency> {
        self.direct.iter().chain(&self.indirect).chain(&self.human)
    }

    /// Whether none is declared.
    pub fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.indirect.is_empty() && self.human.is_empty()
    }
}

/// One dependent, with whom to ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// Its name (a table, a dashboard, a team).
    pub name: String,
    /// Owner or contact.
    pub owner: String,
    /// Names of dependencies this one reads from (for refresh order).
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl Dependency {
    /// A dependency with an owner.
    pub fn new(name: impl Into<String>, owner: impl Into<String>) -> Self {
        Dependency {
            name: name.into(),
            owner: owner.into(),
            depends_on: Vec::new(),
        }
    }
}

/// How the checks prove the new history is right.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationPlan {
    /// The checks, run per batch or at the end.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// In plain words, what "correct" means here.
    #[serde(default)]
    pub description: String,
}

/// How to go back.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPlan {
    /// In plain words, how to undo the change.
    pub description: String,
    /// Keep a pre-image of everything overwritten.
    #[serde(default)]
    pub keep_pre_image: bool,
    /// Days to keep pre-images and old tables.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// A restore point kept outside the library that stands in for
    /// pre-images: a point-in-time-recovery target, a backup id, a
    /// zero-copy clone. With it an in-place strategy may run without
    /// [`keep_pre_image`](Self::keep_pre_image), which saves writing every
    /// overwritten row twice; preflight warns, and `Runner::rollback`
    /// cannot restore by itself and names this restore point instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<String>,
}

fn default_retention() -> u32 {
    14
}

/// The operator rule: a run may not start until rerun, pause and recovery
/// are defined.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operations {
    /// What happens if the run is repeated.
    #[serde(default)]
    pub rerun: String,
    /// How to pause it and what a pause leaves behind.
    #[serde(default)]
    pub pause: String,
    /// How to recover from a failed or interrupted run.
    #[serde(default)]
    pub recovery: String,
}

/// The written brief of a backfill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brief {
    /// A short title.
    pub title: String,
    /// The business reason, in plain words.
    pub reason: String,
    /// Who runs it.
    pub operator: String,
    /// Who reviews and approves it (not the operator).
    pub reviewer: String,
    /// Risk class.
    pub risk: RiskClass,
    /// Exact scope.
    pub scope: Scope,
    /// Who and what depends on the target.
    #[serde(default)]
    pub dependencies: Dependencies,
    /// The write pattern.
    pub strategy: StrategySpec,
    /// Why repeating the run is safe.
    #[serde(default)]
    pub idempotency: String,
    /// How correctness is shown.
    #[serde(default)]
    pub validation: ValidationPlan,
    /// How to go back.
    #[serde(default)]
    pub rollback: RollbackPlan,
    /// What is expected to change, for whom.
    #[serde(default)]
    pub expected_impact: String,
    /// Rerun, pause and recovery.
    #[serde(default)]
    pub operations: Operations,
}

/// Whether two names are one identity: compared without case or
/// surrounding spaces, wherever the four-eyes rule is checked.
///
/// ```
/// assert!(backfill_core::brief::same_person(" Ada.Lovelace", "ada.lovelace"));
/// ```
pub fn same_person(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Every finding of a preflight, blocking or not.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Preflight {
    /// Findings, in brief order.
    pub findings: Vec<Finding>,
}

impl Preflight {
    /// Whether the run may start.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.blocking)
    }

    /// The blocking findings.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.blocking)
    }

    /// `Ok` when nothing blocks, else [`crate::Error::Preflight`] with every
    /// finding.
    pub fn into_result(self) -> crate::Result<Preflight> {
        if self.passed() {
            Ok(self)
        } else {
            Err(crate::Error::Preflight(self.findings))
        }
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

impl Brief {
    /// Checks the brief and returns every finding, not just the first.
    ///
    /// Blank sections block. So do: operator and reviewer being the same
    /// person, an overwriting strategy without a rollback plan and a kept
    /// pre-image, a missing idempotency statement, a merge without keys, an
    /// invalid scope, and an undefined rerun, pause or recovery procedure.
    pub fn preflight(&self) -> Preflight {
        let mut f = Vec::new();
        for (section, text) in [
            ("title", &self.title),
            ("reason", &self.reason),
            ("operator", &self.operator),
            ("reviewer", &self.reviewer),
            ("expected_impact", &self.expected_impact),
        ] {
            if blank(text) {
                f.push(Finding::block(section, "is blank"));
            }
        }
        if !blank(&self.operator) && same_person(&self.operator, &self.reviewer) {
            f.push(Finding::block(
                "reviewer",
                "must be a different person from the operator",
            ));
        }
        if let Err(e) = self.scope.validate() {
            f.push(Finding::block("scope", e.to_string()));
        }
        if self.dependencies.is_empty() {
            f.push(Finding::block(
                "dependencies",
                "is blank: declare direct, indirect and human dependents (or say none, with an owner)",
            ));
        }
        for d in self.dependencies.all() {
            if blank(&d.name) || blank(&d.owner) {
                f.push(Finding::block(
                    "dependencies",
                    format!("dependency {:?} needs a name and an owner", d.name),
                ));
            }
        }
        if blank(&self.idempotency) {
            f.push(Finding::block(
                "idempotency",
                "is blank: say why repeating a batch gives the same table",
            ));
        }
        if let Err(e) = self.strategy.check() {
            f.push(Finding::block("strategy", e.to_string()));
        }
        if self.validation.checks.is_empty() {
            f.push(Finding::block(
                "validation",
                "is blank: declare at least one check",
            ));
        }
        for check in &self.validation.checks {
            if let CheckSpec::PerBatch { of } = check {
                if !of.can_run_per_batch() {
                    f.push(Finding::block(
                        "validation",
                        format!("{of:?} is a whole-scope check and cannot run per batch"),
                    ));
                }
            }
        }
        if blank(&self.rollback.description) {
            f.push(Finding::block("rollback", "is blank"));
        }
        if self.strategy.overwrites_in_place() && !self.rollback.keep_pre_image {
            match self.rollback.restore_point.as_deref().filter(|r| !blank(r)) {
                Some(point) => f.push(Finding::warn(
                    "rollback",
                    format!(
                        "no pre-image is kept: rolling back means restoring from {point}, outside the library"
                    ),
                )),
                None => f.push(Finding::block(
                    "rollback",
                    "the strategy overwrites in place but no pre-image is kept to roll back to \
                     (keep one, or name an outside restore point)",
                )),
            }
        }
        if self.rollback.retention_days == 0 {
            f.push(Finding::block(
                "rollback",
                "retention of 0 days leaves nothing to roll back to",
            ));
        }
        for (section, text) in [
            ("operations.rerun", &self.operations.rerun),
            ("operations.pause", &self.operations.pause),
            ("operations.recovery", &self.operations.recovery),
        ] {
            if blank(text) {
                f.push(Finding::block(
                    section,
                    "is not defined; a run cannot start without it",
                ));
            }
        }
        if self.scope.expected_rows.is_none() {
            f.push(Finding::warn(
                "scope",
                "no expected row count; estimates will rely on the engine",
            ));
        }
        if self.risk == RiskClass::ProductionCriticalRebuild && self.dependencies.human.is_empty() {
            f.push(Finding::block(
                "dependencies.human",
                "a production-critical rebuild must name the people to tell",
            ));
        }
        Preflight { findings: f }
    }
}
