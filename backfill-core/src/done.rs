//! Downstream refresh and the definition of done, on the runner.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::Backfill;
use crate::ledger::RunStatus;
use crate::note::{change_note, ChangeNote};
use crate::refresh::{refresh_order, run_action, Refresh, RefreshReport};
use crate::runner::{validation, Runner};

/// The refresh document: what has actions, and what is done.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RefreshState {
    planned: Vec<String>,
    done: Vec<String>,
}

/// One item of the definition of done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneItem {
    /// Every batch of the scope is written.
    ScopeProcessed,
    /// The run is in the ledger with its code version.
    RunLogged,
    /// Validation passed, or its exceptions are documented.
    Validated,
    /// Every downstream dependent the brief declares is refreshed.
    DownstreamRefreshed,
    /// The change note was produced.
    NoteProduced,
    /// Every kept table has an owner and an expiry.
    AssetsOwned,
}

/// The definition of done, item by item: `None` when an item is done, or
/// what is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneStatus {
    /// Each item with what is missing, if anything.
    pub items: Vec<(DoneItem, Option<String>)>,
}

impl DoneStatus {
    /// Whether every item is done.
    pub fn is_done(&self) -> bool {
        self.items.iter().all(|(_, missing)| missing.is_none())
    }

    /// What is still missing.
    pub fn missing(&self) -> impl Iterator<Item = (DoneItem, &str)> {
        self.items
            .iter()
            .filter_map(|(i, m)| m.as_deref().map(|m| (*i, m)))
    }
}

/// The ledger document a run's change note is kept under.
pub const NOTE_DOCUMENT: &str = "note";
/// The ledger document documented validation exceptions are kept under.
pub const EXCEPTIONS_DOCUMENT: &str = "exceptions";

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Serde(e.to_string()))
}

impl Runner {
    /// Refreshes downstream assets in dependency order (see
    /// [`crate::refresh`]), once the new data is visible. Each refresh is
    /// recorded in the ledger as it finishes; a failed one stops the
    /// refresh, and calling again resumes after the last done.
    pub async fn refresh(&self, job: &Backfill, actions: &[Refresh]) -> Result<RefreshReport> {
        let run = self.ledger().run(&job.run_id).await?;
        let visible = match run.status {
            RunStatus::CutOver => true,
            RunStatus::Completed => !job.brief.strategy.needs_cutover(),
            _ => false,
        };
        if !visible {
            return Err(Error::NotAllowed(format!(
                "refresh of run {} that is {}: downstream would read old data",
                job.run_id,
                run.status.as_str()
            )));
        }
        let order = refresh_order(&job.brief)?;
        for a in actions {
            if !order.contains(&a.name) {
                return Err(Error::InvalidPlan(format!(
                    "refresh of {:?}, which the brief does not declare as a dependency",
                    a.name
                )));
            }
        }
        let mut state: RefreshState = match self
            .ledger()
            .document(&job.run_id, RefreshReport::DOCUMENT)
            .await?
        {
            Some(doc) => serde_json::from_value(doc).map_err(|e| Error::Serde(e.to_string()))?,
            None => RefreshState::default(),
        };
        for a in actions {
            if !state.planned.contains(&a.name) {
                state.planned.push(a.name.clone());
            }
        }
        let mut report = RefreshReport {
            order: order.clone(),
            ..RefreshReport::default()
        };
        for name in &order {
            let Some(action) = actions.iter().find(|a| &a.name == name) else {
                continue;
            };
            if state.done.contains(name) {
                report.already.push(name.clone());
                continue;
            }
            run_action(self.warehouse().as_ref(), name, &action.action).await?;
            state.done.push(name.clone());
            self.ledger()
                .put_document(&job.run_id, RefreshReport::DOCUMENT, &json(&state)?)
                .await?;
            report.refreshed.push(name.clone());
        }
        self.ledger()
            .put_document(&job.run_id, RefreshReport::DOCUMENT, &json(&state)?)
            .await?;
        Ok(report)
    }

    /// Produces the run's change note (see [`crate::note`]) and keeps it
    /// in the ledger.
    pub async fn change_note(&self, job: &Backfill) -> Result<ChangeNote> {
        let mut note = change_note(self.ledger().as_ref(), job).await?;
        if let Some(doc) = self
            .ledger()
            .document(&job.run_id, RefreshReport::DOCUMENT)
            .await?
        {
            let state: RefreshState =
                serde_json::from_value(doc).map_err(|e| Error::Serde(e.to_string()))?;
            note.refreshed = state.done;
        }
        if let Some(doc) = self
            .ledger()
            .document(&job.run_id, EXCEPTIONS_DOCUMENT)
            .await?
        {
            if let Some(text) = doc.get("text").and_then(|t| t.as_str()) {
                note.exceptions.push(format!("documented: {text}"));
            }
        }
        self.ledger()
            .put_document(&job.run_id, NOTE_DOCUMENT, &json(&note)?)
            .await?;
        Ok(note)
    }

    /// Documents why failed validation is accepted (say a known, explained
    /// difference), so the run can count as done; `by` must not be the
    /// operator.
    pub async fn document_exceptions(&self, job: &Backfill, by: &str, text: &str) -> Result<()> {
        if by.trim().is_empty() || by.trim() == job.brief.operator.trim() || text.trim().is_empty()
        {
            return Err(Error::Approval(
                "exceptions are documented by someone other than the operator, with a reason"
                    .into(),
            ));
        }
        let doc = serde_json::json!({ "by": by, "text": text, "at": self.ledger().now() });
        self.ledger()
            .put_document(&job.run_id, EXCEPTIONS_DOCUMENT, &doc)
            .await
    }

    /// Where the run stands against the definition of done.
    pub async fn done_status(&self, job: &Backfill) -> Result<DoneStatus> {
        let run_id = &job.run_id;
        let run = self.ledger().run(run_id).await?;
        let batches = self.ledger().batches(run_id).await?;
        let mut items = Vec::new();
        let undone = batches.iter().filter(|b| !b.state.is_done()).count();
        items.push((
            DoneItem::ScopeProcessed,
            (undone > 0).then(|| format!("{undone} of {} batches not written", batches.len())),
        ));
        let logged = if !matches!(run.status, RunStatus::Completed | RunStatus::CutOver) {
            Some(format!("the run is {}", run.status.as_str()))
        } else if job.brief.strategy.needs_cutover() && run.status != RunStatus::CutOver {
            Some("not cut over yet".to_string())
        } else if run.code_version.trim().is_empty() {
            Some("no code version recorded".to_string())
        } else {
            None
        };
        items.push((DoneItem::RunLogged, logged));
        let exceptions = self
            .ledger()
            .document(run_id, EXCEPTIONS_DOCUMENT)
            .await?
            .is_some();
        let validated = if validation::scope_checks(job).is_empty() {
            None
        } else {
            match self.validation_report(job).await? {
                None => Some("the end-of-run checks have not run".to_string()),
                Some(r) if r.passed() || exceptions => None,
                Some(_) => Some("blocking checks fail and no exception is documented".into()),
            }
        };
        items.push((DoneItem::Validated, validated));
        // Every dependent the brief declares downstream, whatever actions
        // were given, must have been refreshed.
        let declared = refresh_order(&job.brief)?;
        let done: Vec<String> = match self
            .ledger()
            .document(run_id, RefreshReport::DOCUMENT)
            .await?
        {
            Some(doc) => {
                let s: RefreshState =
                    serde_json::from_value(doc).map_err(|e| Error::Serde(e.to_string()))?;
                s.done
            }
            None => Vec::new(),
        };
        let left: Vec<&String> = declared.iter().filter(|d| !done.contains(d)).collect();
        let refreshed = (!left.is_empty()).then(|| format!("not refreshed yet: {left:?}"));
        items.push((DoneItem::DownstreamRefreshed, refreshed));
        let noted = self
            .ledger()
            .document(run_id, NOTE_DOCUMENT)
            .await?
            .is_some();
        items.push((
            DoneItem::NoteProduced,
            (!noted).then(|| "no change note produced".to_string()),
        ));
        let assets = self.ledger().assets(Some(run_id)).await?;
        let unowned = assets
            .iter()
            .filter(|a| a.owner.trim().is_empty() || a.expires_at <= a.created_at)
            .count();
        items.push((
            DoneItem::AssetsOwned,
            (unowned > 0).then(|| format!("{unowned} kept table(s) without owner or expiry")),
        ));
        Ok(DoneStatus { items })
    }
}
