//! A backfill ready to run: the brief, its plan, the source of corrected
//! rows and the run's identity, with the fingerprint resume must match.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::brief::Brief;
use crate::ledger::RunId;
use crate::plan::Plan;
use crate::{Source, TableRef};

/// A backfill ready to run: the brief, its plan, the source of corrected
/// rows and the run's identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    /// The run id (stable across resumes).
    pub run_id: RunId,
    /// The brief.
    pub brief: Brief,
    /// The plan of the brief's scope.
    pub plan: Plan,
    /// The corrected logic.
    pub source: Source,
    /// Version of the code behind the source.
    pub code_version: String,
    /// Parameters worth recording.
    pub parameters: serde_json::Value,
    /// Versions of the corrected logic by period (see [`crate::rules`]);
    /// empty when `source` applies to the whole scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules::Rule>,
}

impl Backfill {
    /// A backfill of `plan` from `source` under `brief`.
    pub fn new(run_id: RunId, brief: Brief, plan: Plan, source: Source) -> Self {
        Backfill {
            run_id,
            brief,
            plan,
            source,
            code_version: String::from("unversioned"),
            parameters: serde_json::Value::Null,
            rules: Vec::new(),
        }
    }

    /// Applies versions of the corrected logic by period: the periods
    /// must cover the scope exactly ([`crate::rules::check`]), and the
    /// plan is cut at every boundary between them, so no batch crosses
    /// one. Each batch then reads its period's source.
    pub fn with_rules(mut self, rules: Vec<crate::rules::Rule>) -> crate::Result<Self> {
        crate::rules::check(&self.plan, &rules)?;
        if let crate::StrategySpec::Merge { .. } = self.brief.strategy {
            return Err(crate::Error::InvalidPlan(
                "rule periods are not supported with a merge by key yet: its key checks read \
                 one source over the whole scope"
                    .into(),
            ));
        }
        let cuts: Vec<_> = rules.iter().skip(1).map(|r| r.from).collect();
        self.plan = self.plan.split_at(&cuts)?;
        self.rules = rules;
        Ok(self)
    }

    /// Every source the job reads: each rule's, or the job's one.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        let one = self.rules.is_empty().then_some(&self.source);
        one.into_iter().chain(self.rules.iter().map(|r| &r.source))
    }

    /// The source `batch` reads: its rule's, or the job's.
    pub fn source_for(&self, batch: &crate::plan::Batch) -> &Source {
        crate::rules::rule_for(&self.plan, &self.rules, batch).map_or(&self.source, |r| &r.source)
    }

    /// A backfill of the brief's own scope, cut by `planner`: the scope
    /// is given once, in the brief, and the run id as text.
    pub fn plan(
        run_id: &str,
        brief: Brief,
        planner: crate::plan::Planner,
        source: Source,
    ) -> crate::Result<Self> {
        let plan = Plan::build(brief.scope.clone(), planner)?;
        Ok(Backfill::new(RunId::new(run_id)?, brief, plan, source))
    }

    /// Records the code version.
    pub fn code_version(mut self, v: impl Into<String>) -> Self {
        self.code_version = v.into();
        self
    }

    /// Records parameters.
    pub fn parameters(mut self, p: serde_json::Value) -> Self {
        self.parameters = p;
        self
    }

    /// SHA-256 (hex) of the plan's fingerprint, the strategy, the source
    /// and the code version: what resume must match.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.plan.fingerprint.as_bytes());
        h.update(serde_json::to_vec(&self.brief.strategy).unwrap_or_default());
        // What rollback can restore is part of what the run is: a run
        // started with pre-images must not be resumed without them.
        h.update(serde_json::to_vec(&self.brief.rollback).unwrap_or_default());
        h.update(serde_json::to_vec(&self.source).unwrap_or_default());
        h.update(self.code_version.as_bytes());
        // Which logic rewrote which period is part of what the run is.
        if !self.rules.is_empty() {
            h.update(serde_json::to_vec(&self.rules).unwrap_or_default());
        }
        crate::plan::hex(&h.finalize())
    }

    /// The parts of what the [`fingerprint`](Backfill::fingerprint)
    /// covers, by name, readable: kept in the ledger when the run starts,
    /// so that a resume with another definition can say what changed.
    /// The names: `plan`, `strategy`, `rollback`, `source`,
    /// `code_version`, and `rules` when the job has rule periods.
    pub fn definition(&self) -> std::collections::BTreeMap<String, String> {
        let json = |v: serde_json::Result<String>| v.unwrap_or_default();
        [
            ("plan", self.plan.fingerprint.clone()),
            (
                "strategy",
                json(serde_json::to_string(&self.brief.strategy)),
            ),
            (
                "rollback",
                json(serde_json::to_string(&self.brief.rollback)),
            ),
            ("source", json(serde_json::to_string(&self.source))),
            ("code_version", self.code_version.clone()),
        ]
        .into_iter()
        .chain(
            (!self.rules.is_empty()).then(|| ("rules", json(serde_json::to_string(&self.rules)))),
        )
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The names of the parts of [`definition`](Backfill::definition) in
    /// which `stored` (a definition recorded earlier) differs from this
    /// job's.
    pub fn changed_since(
        &self,
        stored: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        self.definition()
            .into_iter()
            .filter(|(k, v)| stored.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect()
    }

    /// The target table.
    pub fn target(&self) -> &TableRef {
        &self.brief.scope.target
    }
}
