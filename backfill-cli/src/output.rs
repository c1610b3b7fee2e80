//! What a command prints: words for people, or one JSON document with a
//! versioned schema for programs.

use std::io::Write;

use serde::Serialize;
use serde_json::{json, Value};

use crate::exit::Exit;

/// The JSON schema's name and version. Every JSON document and event
/// line carries it; fields are only added within a version.
pub const SCHEMA: &str = "backfill.cli/1";

/// Words or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Words for people.
    Text,
    /// One JSON document (and, for `run`, JSON lines of events).
    Json,
}

/// What a command produced: its exit, its data, and its words.
#[derive(Debug)]
pub struct Report {
    /// How it ended.
    pub exit: Exit,
    /// The result, for JSON.
    pub data: Value,
    /// The result, for people.
    pub text: String,
}

impl Report {
    /// A report whose data serializes from `data`.
    pub fn new(exit: Exit, data: impl Serialize, text: impl Into<String>) -> Report {
        Report {
            exit,
            data: serde_json::to_value(data).unwrap_or(Value::Null),
            text: text.into(),
        }
    }
}

/// Prints a command's report and returns its exit.
pub fn emit(format: Format, command: &str, report: Report) -> Exit {
    match format {
        Format::Json => {
            let doc = json!({
                "schema": SCHEMA,
                "command": command,
                "exit": {"code": report.exit.code(), "name": report.exit.name()},
                "result": report.data,
            });
            println!("{doc}");
        }
        Format::Text => {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", report.text);
            if !report.text.ends_with('\n') && !report.text.is_empty() {
                let _ = writeln!(out);
            }
        }
    }
    report.exit
}

/// One JSON line for a run event.
pub fn event_line(event: &impl Serialize) -> String {
    json!({"schema": SCHEMA, "event": event}).to_string()
}

/// A number with thousands separators.
pub fn int(n: u64) -> String {
    backfill_core::validate::report::grouped(backfill_core::Amount::from(
        i64::try_from(n).unwrap_or(i64::MAX),
    ))
}
