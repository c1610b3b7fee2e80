//! Change notes for the people who read the numbers.
//!
//! Before the run, an [`Announcement`]: what changes, why, when, which
//! dashboards and exports may move, and who to ask. After it, a
//! [`ChangeNote`]: what changed and for which period, row counts, metric
//! deltas with their explanation, whether validation passed, the rollback
//! handle and when it expires, and the run id, code version and
//! parameters. Both render as Markdown to paste into a channel and
//! serialize as JSON for tools; numbers carry thousands separators, signs
//! and percentages.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::blast::{declared, Affected};
use crate::error::Result;
use crate::ledger::{AssetKind, Ledger, RunStatus};
use crate::runner::{Backfill, SliceEstimate};
use crate::scope::{Bounds, Scope};
use crate::validate::report::{grouped, signed, signed_or};
use crate::validate::{Status, ValidationReport};

/// The before-run announcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The run.
    pub run_id: String,
    /// The brief's title.
    pub title: String,
    /// Why.
    pub reason: String,
    /// The table and period that change.
    pub scope: String,
    /// What is expected to move, in the brief's words.
    pub expected_impact: String,
    /// Everything affected, grouped by kind.
    pub affected: Vec<Affected>,
    /// Who runs it.
    pub operator: String,
    /// Who reviews it.
    pub reviewer: String,
    /// Batches planned.
    pub batches: usize,
    /// Estimated runtime in seconds, from a test slice.
    pub estimated_seconds: Option<f64>,
    /// Estimated rows, from a test slice or the brief.
    pub estimated_rows: Option<u64>,
    /// How to undo it.
    pub rollback: String,
    /// Rows the batches will replace, per the engine's statistics before
    /// the run: (total, smallest batch, largest batch).
    #[serde(default)]
    pub engine_estimate: Option<(u64, u64, u64)>,
    /// When it runs, in words ("Tuesday 02:00-04:00 UTC").
    #[serde(default)]
    pub when: Option<String>,
}

/// The scope in words: table, column, period and zone.
pub fn scope_text(scope: &Scope) -> String {
    let what = match &scope.bounds {
        // Whole days read as an inclusive range of dates.
        Bounds::Time { start, end, .. }
            if start.time() == jiff::civil::Time::midnight()
                && end.time() == jiff::civil::Time::midnight() =>
        {
            let last = end.date().yesterday().unwrap_or(end.date());
            format!("{} {} through {last}", scope.batch_column, start.date())
        }
        Bounds::Time { start, end, .. } => format!(
            "{} from {} up to {}",
            scope.batch_column,
            start.strftime("%Y-%m-%d %H:%M"),
            end.strftime("%Y-%m-%d %H:%M")
        ),
        Bounds::Partitions { values } => {
            format!("{} in {} partition(s)", scope.batch_column, values.len())
        }
        Bounds::Keys { start, end } => {
            format!("{} from {start} up to {end}", scope.batch_column)
        }
        Bounds::All => "every row".to_string(),
    };
    format!("{}, {what} ({})", scope.target, scope.time_zone)
}

/// The announcement for `job`, with a test slice's estimate if one ran.
pub fn announcement(job: &Backfill, estimate: Option<&SliceEstimate>) -> Announcement {
    let b = &job.brief;
    Announcement {
        run_id: job.run_id.to_string(),
        title: b.title.clone(),
        reason: b.reason.clone(),
        scope: scope_text(&b.scope),
        expected_impact: b.expected_impact.clone(),
        affected: declared(b),
        operator: b.operator.clone(),
        reviewer: b.reviewer.clone(),
        batches: job.plan.batches.len(),
        estimated_seconds: estimate.map(|e| e.estimated_total.as_secs_f64()),
        estimated_rows: estimate.map(|e| e.estimated_rows).or(b.scope.expected_rows),
        rollback: b.rollback.description.clone(),
        engine_estimate: None,
        when: None,
    }
}

/// The rows each batch of `job` will replace in its target, from the
/// engine's statistics ([`crate::inspect::Inspect::Estimate`]), before
/// anything runs.
pub async fn batch_estimates(
    w: &dyn crate::warehouse::Warehouse,
    job: &Backfill,
) -> Result<Vec<(crate::plan::BatchId, u64)>> {
    let mut out = Vec::with_capacity(job.plan.batches.len());
    for b in &job.plan.batches {
        let rows = crate::inspect::Rows::slice(job.target().clone(), b.predicate.clone());
        out.push((b.id.clone(), crate::ask::estimate(w, rows).await?));
    }
    Ok(out)
}

fn count(n: u64) -> String {
    grouped(Amount::from(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

fn affected_md(out: &mut String, affected: &[Affected]) {
    for kind in ["direct", "indirect", "human"] {
        let list: Vec<String> = affected
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| format!("{} ({})", a.name, a.owner))
            .collect();
        if !list.is_empty() {
            out.push_str(&format!("- **{kind}:** {}\n", list.join(", ")));
        }
    }
}

impl Announcement {
    /// Says when the run happens.
    pub fn scheduled(mut self, when: impl Into<String>) -> Self {
        self.when = Some(when.into());
        self
    }

    /// Adds the engine's per-batch estimates (see [`batch_estimates`]).
    pub fn with_engine_estimate(mut self, per_batch: &[(crate::plan::BatchId, u64)]) -> Self {
        let counts = per_batch.iter().map(|(_, n)| *n);
        self.engine_estimate = Some((
            counts.clone().sum(),
            counts.clone().min().unwrap_or(0),
            counts.max().unwrap_or(0),
        ));
        self
    }

    /// Markdown to paste into a channel.
    pub fn markdown(&self) -> String {
        let mut s = format!("### Planned backfill: {}\n\n", self.title);
        s.push_str(&format!("**What changes:** {}\n\n", self.scope));
        s.push_str(&format!("**Why:** {}\n\n", self.reason));
        s.push_str(&format!("**What may move:** {}\n\n", self.expected_impact));
        if let Some(when) = &self.when {
            s.push_str(&format!("**When:** {when}\n\n"));
        }
        s.push_str("**Affected:**\n");
        affected_md(&mut s, &self.affected);
        let mut when = format!("{} batches", count(self.batches as u64));
        if let Some(secs) = self.estimated_seconds {
            when.push_str(&format!(", about {}", duration(secs)));
        }
        if let Some(rows) = self.estimated_rows {
            when.push_str(&format!(", about {} rows", count(rows)));
        }
        if let Some((total, lo, hi)) = self.engine_estimate {
            when.push_str(&format!(
                "; the engine estimates {} rows in scope now, {} to {} a batch",
                count(total),
                count(lo),
                count(hi)
            ));
        }
        s.push_str(&format!("\n**Size:** {when}\n\n"));
        s.push_str(&format!("**Rollback:** {}\n\n", self.rollback));
        s.push_str(&format!(
            "Questions: {} (operator) or {} (reviewer). Run `{}`.\n",
            self.operator, self.reviewer, self.run_id
        ));
        s
    }
}

/// One metric group's change, for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    /// The metric.
    pub metric: String,
    /// The group (`2026-01-01`, `all`).
    pub group: String,
    /// Before.
    pub before: Amount,
    /// After.
    pub after: Amount,
    /// After minus before, as a percentage of before, to hundredths
    /// (`None` from zero).
    pub percent: Option<f64>,
    /// The delta's parts: added, removed and changed rows, and what no row
    /// change explains.
    pub explained: [Amount; 4],
}

/// The after-run summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeNote {
    /// The run.
    pub run_id: String,
    /// The brief's title.
    pub title: String,
    /// The table and period affected.
    pub scope: String,
    /// The run's status.
    pub status: RunStatus,
    /// Batches done of planned.
    pub batches: (usize, usize),
    /// Rows in the written slices before, and rows written.
    pub rows: (u64, u64),
    /// Metric deltas with their explanation.
    pub metrics: Vec<MetricChange>,
    /// Whether no blocking check failed (`None`: no end-of-run checks).
    pub validation_passed: Option<bool>,
    /// Checks that warned or failed, each with its detail.
    pub exceptions: Vec<String>,
    /// Downstream assets refreshed.
    pub refreshed: Vec<String>,
    /// Tables kept to roll back to, with their expiry.
    pub rollback: Vec<(String, String)>,
    /// The code version.
    pub code_version: String,
    /// The parameters.
    pub parameters: serde_json::Value,
    /// Who is affected.
    pub affected: Vec<Affected>,
    /// Which logic rewrote which period, when the run has rule periods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules::RulePeriod>,
    /// Drift of what the run depends on that the operator accepted, with
    /// who and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_accepted: Vec<crate::drift::Acceptance>,
    /// Drift the brief's policy only warned about (the run went on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_noted: Vec<crate::drift::Drift>,
}

/// The change note for `job`, from the ledger (run, batches, assets) and
/// the latest validation report kept there.
pub async fn change_note(ledger: &dyn Ledger, job: &Backfill) -> Result<ChangeNote> {
    let run = ledger.run(&job.run_id).await?;
    let batches = ledger.batches(&job.run_id).await?;
    let done = batches.iter().filter(|b| b.state.is_done()).count();
    let rows = batches
        .iter()
        .fold((0, 0), |(b, w), r| (b + r.rows_before, w + r.rows_written));
    let report: Option<ValidationReport> = ledger
        .document(&job.run_id, ValidationReport::DOCUMENT)
        .await?
        .and_then(|d| serde_json::from_value(d).ok());
    let mut metrics = Vec::new();
    let mut exceptions = Vec::new();
    if let Some(r) = &report {
        for (metric, _, groups) in r.reconciliations() {
            for g in groups {
                let percent = if g.before.is_zero() {
                    None
                } else {
                    // Hundredths of a percent: what people read, and what
                    // survives a JSON round trip exactly.
                    let p = g.delta()?.to_f64() * 100.0 / g.before.abs().to_f64();
                    Some((p * 100.0).round() / 100.0)
                };
                let group = if g.key.is_empty() {
                    "all".to_string()
                } else {
                    g.key
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" / ")
                };
                metrics.push(MetricChange {
                    metric: metric.to_string(),
                    group,
                    before: g.before,
                    after: g.after,
                    percent,
                    explained: [g.added, g.removed, g.changed, g.unexplained()?],
                });
            }
        }
        for o in r.outcomes().filter(|o| o.status != Status::Pass) {
            exceptions.push(format!("{:?} {}: {}", o.status, o.check, o.detail));
        }
    }
    let rollback = ledger
        .assets(Some(&job.run_id))
        .await?
        .into_iter()
        .filter(|a| {
            a.dropped_at.is_none() && matches!(a.kind, AssetKind::PreImage | AssetKind::KeptOld)
        })
        .map(|a| {
            let until = a.expires_at.strftime("%Y-%m-%d %H:%M UTC").to_string();
            (a.table.to_string(), until)
        })
        .collect();
    let drift_noted = match ledger.document(&job.run_id, crate::drift::NOTED).await? {
        Some(v) => serde_json::from_value(v).map_err(|e| crate::Error::Serde(e.to_string()))?,
        None => Vec::new(),
    };
    let drift_accepted = match ledger.document(&job.run_id, crate::drift::ACCEPTED).await? {
        Some(v) => serde_json::from_value(v).map_err(|e| crate::Error::Serde(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(ChangeNote {
        run_id: job.run_id.to_string(),
        title: job.brief.title.clone(),
        scope: scope_text(&job.brief.scope),
        status: run.status,
        batches: (done, batches.len()),
        rows,
        metrics,
        validation_passed: report.as_ref().map(ValidationReport::passed),
        exceptions,
        refreshed: Vec::new(),
        rollback,
        code_version: run.code_version,
        parameters: run.parameters,
        affected: declared(&job.brief),
        rules: crate::rules::periods(&job.plan, &job.rules),
        drift_accepted,
        drift_noted,
    })
}

fn percent(p: Option<f64>) -> String {
    match p {
        Some(p) if p > 0.0 => format!("+{p:.2}%"),
        Some(p) => format!("{p:.2}%"),
        None => "new".into(),
    }
}

impl ChangeNote {
    /// Markdown to paste into a channel.
    pub fn markdown(&self) -> String {
        let mut s = format!("### Backfill done: {}\n\n", self.title);
        s.push_str(&format!(
            "**What changed:** {} ({}, {} of {} batches)\n\n",
            self.scope,
            self.status.as_str(),
            count(self.batches.0 as u64),
            count(self.batches.1 as u64)
        ));
        s.push_str(&format!(
            "**Rows:** {} rewritten ({} before)\n\n",
            count(self.rows.1),
            count(self.rows.0)
        ));
        if !self.drift_accepted.is_empty() {
            s.push_str("**Drift accepted during the run:**\n");
            for a in &self.drift_accepted {
                let what: Vec<String> = a.drift.iter().map(|d| d.to_string()).collect();
                s.push_str(&format!(
                    "- by {} at {}: {} ({})\n",
                    a.by,
                    a.at,
                    a.why,
                    what.join("; ")
                ));
            }
            s.push('\n');
        }
        if !self.drift_noted.is_empty() {
            s.push_str("**Drift noted (the run went on):**\n");
            for d in &self.drift_noted {
                s.push_str(&format!("- {d}\n"));
            }
            s.push('\n');
        }
        if !self.rules.is_empty() {
            s.push_str("**Rules by period:**\n");
            for r in &self.rules {
                s.push_str(&format!(
                    "- {} .. {}: {} ({} batches): {}\n",
                    r.from,
                    r.until,
                    r.name,
                    r.batches.len(),
                    r.reason
                ));
            }
            s.push('\n');
        }
        if !self.metrics.is_empty() {
            s.push_str("| metric | group | before | after | change | added | removed | changed | unexplained |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
            for m in &self.metrics {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
                    m.metric,
                    m.group,
                    grouped(m.before),
                    grouped(m.after),
                    signed_or(m.after.checked_sub(m.before)),
                    percent(m.percent),
                    signed(m.explained[0]),
                    signed(m.explained[1]),
                    signed(m.explained[2]),
                    signed(m.explained[3]),
                ));
            }
            s.push('\n');
        }
        s.push_str(&match self.validation_passed {
            Some(true) if self.exceptions.is_empty() => "**Validation:** passed.\n\n".to_string(),
            Some(true) => "**Validation:** passed, with exceptions:\n".to_string(),
            Some(false) => "**Validation:** FAILED:\n".to_string(),
            None => "**Validation:** per-batch checks only.\n\n".to_string(),
        });
        if !self.exceptions.is_empty() {
            for e in &self.exceptions {
                s.push_str(&format!("- {e}\n"));
            }
            s.push('\n');
        }
        if self.refreshed.is_empty() {
            s.push_str("**Downstream:** no refresh recorded; owners below may need to refresh.\n");
        } else {
            s.push_str(&format!(
                "**Downstream refreshed:** {}\n",
                self.refreshed.join(", ")
            ));
        }
        affected_md(&mut s, &self.affected);
        s.push('\n');
        if self.rollback.is_empty() {
            s.push_str("**Rollback:** nothing kept.\n\n");
        } else {
            let kept: Vec<String> = self
                .rollback
                .iter()
                .map(|(t, until)| format!("`{t}` until {until}"))
                .collect();
            s.push_str(&format!("**Rollback:** {}\n\n", kept.join(", ")));
        }
        s.push_str(&format!(
            "Run `{}`, code {}, parameters `{}`.\n",
            self.run_id, self.code_version, self.parameters
        ));
        s
    }
}
