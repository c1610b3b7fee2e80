//! How another terminal reaches a DuckDB run.
//!
//! DuckDB lets one process write a database file, and while a run holds
//! it no other process can open it, not even to read. So a DuckDB run
//! keeps two small files beside its database, as gh-ost does with its
//! flag files:
//!
//! - `<db>.control.json`: a steering request (pause, resume, cancel)
//!   that `backfill pause|resume|cancel` writes when the database is
//!   held. The running process looks for it between batches, records it
//!   in the ledger as the operator's steering (with who asked), and
//!   removes it; the runner reads the ledger's steering at every claim,
//!   so the request takes effect at the next commit-group boundary. A request
//!   left when no run holds the file is applied by the next `run`.
//! - `<db>.status.json`: what the running process last saw (counts,
//!   rows, rate, ETA, the last event, its pid), rewritten after every
//!   event; `backfill status` reads it while the database is held, and
//!   says that it does.
//!
//! Files, not a socket: they need no listener, survive the process,
//! work the same from any shell or orchestrator, and leave a trace.
//! Both are written to a temporary name and renamed, so a reader never
//! sees half a file. On PostgreSQL none of this is needed: steering and
//! status live in the ledger, which every process can read.

use std::path::{Path, PathBuf};

use backfill_core::ledger::Steering;
use backfill_core::RunId;
use serde::{Deserialize, Serialize};

/// A steering request left for the process that holds the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The run.
    pub run: RunId,
    /// `pause`, `run` (resume) or `cancel`.
    pub steer: String,
    /// Who asked.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

impl Request {
    /// The steering asked for.
    pub fn steering(&self) -> Option<Steering> {
        Steering::parse(Some(&self.steer)).ok()
    }
}

/// The control file beside a database.
pub fn control_path(db: &Path) -> PathBuf {
    sibling(db, "control.json")
}

/// The status file beside a database.
pub fn status_path(db: &Path) -> PathBuf {
    sibling(db, "status.json")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    db.with_file_name(name)
}

/// Writes `value` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = sibling(path, &format!("tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file, if there is one.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the pending request for `run`, removing the file; a request for
/// another run is left alone.
pub fn take_request(db: &Path, run: &RunId) -> std::io::Result<Option<Request>> {
    let path = control_path(db);
    match read::<Request>(&path)? {
        Some(r) if &r.run == run => {
            std::fs::remove_file(&path)?;
            Ok(Some(r))
        }
        _ => Ok(None),
    }
}
