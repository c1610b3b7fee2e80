//! Downstream refresh, in dependency order.
//!
//! The brief's declared dependencies form a graph through each one's
//! `depends_on` (the names it reads from). [`refresh_order`] sorts it
//! topologically, keeping declaration order among equals; a cycle is a
//! typed [`Error::InvalidPlan`]. [`Runner::refresh`](crate::Runner::refresh)
//! runs the user's actions in that order and records each one in the
//! ledger as it finishes, so a second call resumes after the last done.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::brief::{Brief, Dependency};
use crate::error::{Error, Result};

/// A user's refresh function.
pub type RefreshFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// How one downstream asset is refreshed.
#[derive(Clone)]
pub enum RefreshAction {
    /// SQL run on the warehouse, such as `REFRESH MATERIALIZED VIEW …`.
    Sql(String),
    /// A command run with its arguments (no shell); a non-zero exit fails.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A function of yours (an API call, a job trigger).
    Hook(RefreshFn),
}

impl fmt::Debug for RefreshAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshAction::Sql(s) => write!(f, "Sql({s:?})"),
            RefreshAction::Command { program, args } => write!(f, "Command({program} {args:?})"),
            RefreshAction::Hook(_) => f.write_str("Hook"),
        }
    }
}

/// One downstream asset's refresh: the declared dependency's name and how.
#[derive(Clone, Debug)]
pub struct Refresh {
    /// The dependency's name, as the brief declares it.
    pub name: String,
    /// How.
    pub action: RefreshAction,
}

impl Refresh {
    /// A refresh of `name` by `action`.
    pub fn new(name: impl Into<String>, action: RefreshAction) -> Refresh {
        Refresh {
            name: name.into(),
            action,
        }
    }
}

/// What a refresh did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// The order, every refreshable dependency.
    pub order: Vec<String>,
    /// Refreshed by this call, in order.
    pub refreshed: Vec<String>,
    /// Refreshed by an earlier call (resumed past).
    pub already: Vec<String>,
}

impl RefreshReport {
    /// The ledger document the names refreshed so far are kept under.
    pub const DOCUMENT: &'static str = "refresh";
}

fn downstream(brief: &Brief) -> Vec<&Dependency> {
    let d = &brief.dependencies;
    d.direct.iter().chain(&d.indirect).collect()
}

/// The brief's direct and indirect dependencies in an order where each
/// comes after everything it reads from; dependencies on names outside
/// the graph (the target itself) are ignored. A cycle is an error naming
/// it.
pub fn refresh_order(brief: &Brief) -> Result<Vec<String>> {
    let deps = downstream(brief);
    let known: BTreeSet<&str> = deps.iter().map(|d| d.name.as_str()).collect();
    let mut done: Vec<String> = Vec::new();
    let mut left: Vec<&Dependency> = deps.clone();
    while !left.is_empty() {
        let ready = left.iter().position(|d| {
            d.depends_on
                .iter()
                .all(|p| !known.contains(p.as_str()) || done.contains(p))
        });
        match ready {
            Some(i) => done.push(left.remove(i).name.clone()),
            None => {
                let names: Vec<&str> = left.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::InvalidPlan(format!(
                    "the declared dependencies form a cycle among: {}",
                    names.join(", ")
                )));
            }
        }
    }
    Ok(done)
}

/// Runs one action.
pub(crate) async fn run_action(
    w: &dyn crate::warehouse::Warehouse,
    name: &str,
    action: &RefreshAction,
) -> Result<()> {
    match action {
        RefreshAction::Sql(sql) => w.execute(sql).await,
        RefreshAction::Command { program, args } => {
            let (program, args) = (program.clone(), args.clone());
            // Its output is captured, not mixed into the caller's (a
            // JSON document on stdout, say); a failure quotes its stderr.
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(&program)
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .output()
            })
            .await
            .map_err(|e| Error::engine(format!("refresh of {name}: {e}")))?
            .map_err(|e| Error::engine(format!("refresh of {name}: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err.trim().chars().rev().take(500).collect();
                let tail: String = tail.chars().rev().collect();
                Err(Error::engine(format!(
                    "refresh of {name} exited with {}: {tail}",
                    out.status
                )))
            }
        }
        RefreshAction::Hook(f) => f().await,
    }
}
