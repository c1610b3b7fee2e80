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

/// The emptiness guard: on by default, it fails a batch whose source slice
/// holds no rows (or fewer than `min_ratio` of the rows the target's slice
/// held) before the batch commits, naming the batch and both counts. A
/// source that lost its history, or bounds that bind nothing, would
/// otherwise empty the day and mark it done.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emptiness {
    /// The least share (0..=1) of the target slice's rows the source slice
    /// must hold; 0 refuses only a slice that is empty where the target
    /// had rows.
    #[serde(default)]
    pub min_ratio: f64,
    /// Batches that are expected to come back empty (or shrink), by id.
    #[serde(default)]
    pub expected_empty: Vec<crate::plan::BatchId>,
    /// Turns the guard off (preflight warns).
    #[serde(default)]
    pub off: bool,
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
    /// The emptiness guard, on by default.
    #[serde(default)]
    pub emptiness: Emptiness,
    /// What drift of the target, the sources or the dependents does
    /// (see [`crate::drift`]); unset kinds follow the risk class.
    #[serde(default)]
    pub drift: crate::checks::DriftPolicy,
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

/// A [`Brief`] for the common case, with safe defaults for what the
/// library itself guarantees, so that only what a person must say is left
/// to say: the reason, who runs and who reviews, what will move, who
/// depends on the target, and the checks.
///
/// Defaults: risk [`RiskClass::MetricChangingRepair`]; strategy
/// [`StrategySpec::PartitionOverwrite`]; a pre-image of every batch kept
/// 14 days; a coverage check (every batch done, no expected day empty);
/// the idempotency statement of the strategy and the runner's rerun,
/// pause and recovery procedures. Preflight still refuses the brief while
/// a reason, a person, the expected impact or the dependents are missing.
///
/// ```
/// use backfill_core::{Bounds, Brief, CheckSpec, Scope};
/// use jiff::civil::date;
/// let scope = Scope::on("analytics.revenue", "order_date",
///     Bounds::dates(date(2026, 1, 1), date(2026, 7, 1)), "America/New_York").unwrap();
/// let brief = Brief::builder("Restate H1 net revenue", scope)
///     .reason("Refunds were not joined from January to June.")
///     .people("ada.lovelace", "grace.hopper")
///     .expected_impact("Net revenue drops by about 3%.")
///     .dependent("finance dashboard", "finance-data")
///     .told("finance leadership", "cfo-office")
///     .check(CheckSpec::unique(["order_id"]).unwrap())
///     .build();
/// assert!(brief.preflight().passed());
/// assert!(brief.rollback.keep_pre_image);
/// ```
#[derive(Clone, Debug)]
pub struct BriefBuilder {
    brief: Brief,
}

impl Brief {
    /// Starts a brief titled `title` over `scope`, with safe defaults (see
    /// [`BriefBuilder`]).
    pub fn builder(title: impl Into<String>, scope: Scope) -> BriefBuilder {
        BriefBuilder {
            brief: Brief {
                title: title.into(),
                reason: String::new(),
                operator: String::new(),
                reviewer: String::new(),
                risk: RiskClass::MetricChangingRepair,
                scope,
                dependencies: Dependencies::default(),
                strategy: StrategySpec::PartitionOverwrite,
                idempotency: String::new(),
                validation: ValidationPlan {
                    checks: vec![CheckSpec::Coverage {
                        empty_allowed: 0,
                        blocking: true,
                    }],
                    description: String::new(),
                    emptiness: Emptiness::default(),
                    drift: Default::default(),
                },
                rollback: RollbackPlan {
                    description: "Every batch's pre-image is kept for 14 days; a rollback \
                                  restores the exact prior state of the target."
                        .into(),
                    keep_pre_image: true,
                    retention_days: default_retention(),
                    restore_point: None,
                },
                expected_impact: String::new(),
                operations: Operations {
                    rerun: "Running again continues the recorded plan: finished batches are \
                            skipped and the table does not change."
                        .into(),
                    pause: "A pause or cancel takes effect at the next commit-group \
                            boundary (about half a second); no batch is half-written."
                        .into(),
                    recovery: "Run again after a failure or a crash: the ledger resumes the \
                               stored plan from the first unfinished batch; or roll back."
                        .into(),
                },
            },
        }
    }
}

impl BriefBuilder {
    /// The business reason, in plain words.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.brief.reason = reason.into();
        self
    }

    /// Who runs it and who reviews it (two people).
    pub fn people(mut self, operator: impl Into<String>, reviewer: impl Into<String>) -> Self {
        self.brief.operator = operator.into();
        self.brief.reviewer = reviewer.into();
        self
    }

    /// The risk class.
    pub fn risk(mut self, risk: RiskClass) -> Self {
        self.brief.risk = risk;
        self
    }

    /// The write pattern.
    pub fn strategy(mut self, strategy: StrategySpec) -> Self {
        self.brief.strategy = strategy;
        self
    }

    /// What is expected to change, for whom.
    pub fn expected_impact(mut self, impact: impl Into<String>) -> Self {
        self.brief.expected_impact = impact.into();
        self
    }

    /// A direct dependent (a model, view, dashboard or job reading the
    /// table) and its owner.
    pub fn dependent(mut self, name: impl Into<String>, owner: impl Into<String>) -> Self {
        self.brief
            .dependencies
            .direct
            .push(Dependency::new(name, owner));
        self
    }

    /// An indirect dependent (a mart, metric, feature or alert further
    /// down) and its owner.
    pub fn downstream(mut self, name: impl Into<String>, owner: impl Into<String>) -> Self {
        self.brief
            .dependencies
            .indirect
            .push(Dependency::new(name, owner));
        self
    }

    /// People or a team to tell, with a contact.
    pub fn told(mut self, name: impl Into<String>, contact: impl Into<String>) -> Self {
        self.brief
            .dependencies
            .human
            .push(Dependency::new(name, contact));
        self
    }

    /// Adds a check to the validation plan.
    pub fn check(mut self, check: CheckSpec) -> Self {
        self.brief.validation.checks.push(check);
        self
    }

    /// How to go back, when it is not the kept pre-images.
    pub fn rollback(mut self, plan: RollbackPlan) -> Self {
        self.brief.rollback = plan;
        self
    }

    /// The brief; [`Brief::preflight`] says whether it may run.
    pub fn build(mut self) -> Brief {
        if self.brief.idempotency.is_empty() {
            self.brief.idempotency = match &self.brief.strategy {
                StrategySpec::PartitionOverwrite => {
                    "Each batch deletes its slice and inserts the corrected slice in one \
                     transaction; repeating a batch gives the same table."
                }
                StrategySpec::Merge { .. } => {
                    "Each batch updates or inserts its keys from the corrected logic; \
                     repeating it gives the same rows."
                }
                StrategySpec::StagingSwap | StrategySpec::ParallelVersion { .. } => {
                    "Batches write a copy beside the target; repeating one rewrites the same \
                     slice of the copy, and readers see it only at cut-over."
                }
            }
            .to_string();
        }
        self.brief
    }
}

impl crate::checks::DriftPolicy {
    /// What to do about `kind` under `risk`. Defaults: columns always
    /// pause (a write would fail or misplace values); rows pause unless
    /// the change is an enrichment; definitions pause a production-critical
    /// rebuild and warn otherwise.
    pub fn act(&self, kind: crate::checks::Kind, risk: RiskClass) -> crate::checks::Act {
        let set = match kind {
            crate::checks::Kind::Columns => self.columns,
            crate::checks::Kind::Rows => self.rows,
            crate::checks::Kind::Definition => self.definitions,
        };
        set.unwrap_or(match kind {
            crate::checks::Kind::Columns => crate::checks::Act::Pause,
            crate::checks::Kind::Rows if risk == RiskClass::Enrichment => crate::checks::Act::Warn,
            crate::checks::Kind::Rows => crate::checks::Act::Pause,
            crate::checks::Kind::Definition if risk == RiskClass::ProductionCriticalRebuild => {
                crate::checks::Act::Pause
            }
            crate::checks::Kind::Definition => crate::checks::Act::Warn,
        })
    }
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
        let e = &self.validation.emptiness;
        if !(0.0..=1.0).contains(&e.min_ratio) {
            f.push(Finding::block(
                "validation.emptiness.min_ratio",
                format!("{} is not a share between 0 and 1", e.min_ratio),
            ));
        }
        if e.off && self.strategy.replaces_rows() {
            f.push(Finding::warn(
                "validation.emptiness",
                "the emptiness guard is off: a source slice that comes back empty will empty its \
                 batch and mark it done",
            ));
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
