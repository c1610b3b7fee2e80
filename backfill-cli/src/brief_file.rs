//! The brief file: everything a run needs, in YAML or TOML, read strictly.
//!
//! Unknown keys are errors (with the allowed names), every missing field
//! is reported at once, and each finding names its field path and, where
//! it can be found in the text, the line and column.

use std::path::{Path, PathBuf};

use backfill_core::refresh::{Refresh, RefreshAction};
use backfill_core::{
    Backfill, BatchId, Brief, Dependencies, Operations, Plan, Planner, RiskClass, RollbackPlan,
    RunId, Scope, Source, StrategySpec, TableRef, ValidationPlan,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A finding about the brief file or the brief in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileFinding {
    /// The field path in the file (`rollback.retention_days`), or empty
    /// for the file as a whole.
    pub path: String,
    /// The line (from 1), where the field can be found in the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The column (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// Whether it stops the run.
    pub blocking: bool,
}

impl std::fmt::Display for FileFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.blocking { "error" } else { "warning" };
        let at = match (self.line, self.column) {
            (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
            _ => String::new(),
        };
        let path = if self.path.is_empty() {
            "brief".to_string()
        } else {
            self.path.clone()
        };
        write!(f, "{level}: {path}{at}: {}", self.message)
    }
}

/// Where the corrected rows come from: `query: "SELECT …"` or
/// `table: schema.name`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceDoc {
    /// A SELECT statement; `{start}` and `{end}` bind a batch's bounds.
    Query(String),
    /// A table or view.
    Table(TableRef),
}

/// One version of the corrected logic for one period of the scope: a
/// name, a reason, the period (wall clock in the scope's zone) and
/// `query` or `table`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// Its name.
    pub name: String,
    /// Why the period has its own logic.
    pub reason: String,
    /// Inclusive start.
    pub from: jiff::civil::DateTime,
    /// Exclusive end.
    pub until: jiff::civil::DateTime,
    /// A SELECT statement.
    #[serde(default)]
    pub query: Option<String>,
    /// A table or view.
    #[serde(default)]
    pub table: Option<TableRef>,
}

/// One downstream refresh: the declared dependency's name, and SQL or a
/// command (no shell).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshDoc {
    /// The dependency, as `dependencies` declares it.
    pub name: String,
    /// SQL run on the warehouse.
    #[serde(default)]
    pub sql: Option<String>,
    /// A program and its arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// How the runner goes about the run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Workers in this process.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Stage any source once per run, a table too.
    #[serde(default)]
    pub stage_source: bool,
    /// Stage a query source once per run (on by default): every batch
    /// reads the same snapshot, and the query runs once.
    #[serde(default = "yes")]
    pub stage_queries: bool,
    /// The ledger's schema.
    #[serde(default = "ledger_schema")]
    pub ledger_schema: String,
    /// The largest plan accepted.
    #[serde(default)]
    pub max_batches: Option<usize>,
    /// The most batches written in one transaction (1: each on its own).
    #[serde(default)]
    pub max_group: Option<usize>,
    /// The time a commit group aims to take, in milliseconds (0 fixes
    /// every group at `max_group`).
    #[serde(default)]
    pub group_target_ms: Option<u64>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            concurrency: 1,
            stage_source: false,
            stage_queries: true,
            ledger_schema: ledger_schema(),
            max_batches: None,
            max_group: None,
            group_target_ms: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn ledger_schema() -> String {
    backfill_core::ledger::DEFAULT_SCHEMA.to_string()
}

/// The brief file as written. Every field is optional here so that all
/// missing ones are reported together.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    run: Option<RunId>,
    code_version: Option<String>,
    title: Option<String>,
    reason: Option<String>,
    operator: Option<String>,
    reviewer: Option<String>,
    risk: Option<RiskClass>,
    scope: Option<Scope>,
    planner: Option<Planner>,
    source: Option<SourceDoc>,
    strategy: Option<StrategySpec>,
    dependencies: Option<Dependencies>,
    idempotency: Option<String>,
    validation: Option<ValidationPlan>,
    rollback: Option<RollbackPlan>,
    expected_impact: Option<String>,
    operations: Option<Operations>,
    refresh: Option<Vec<RefreshDoc>>,
    rules: Option<Vec<RuleDoc>>,
    run_options: Option<RunSettings>,
    slice: Option<Vec<BatchId>>,
}

/// The top-level keys of a brief file, in the order the README lists.
pub const FIELDS: &[&str] = &[
    "run",
    "code_version",
    "title",
    "reason",
    "operator",
    "reviewer",
    "risk",
    "expected_impact",
    "scope",
    "planner",
    "source",
    "strategy",
    "dependencies",
    "idempotency",
    "validation",
    "rollback",
    "operations",
    "refresh",
    "rules",
    "run_options",
    "slice",
];

/// Fields without which there is no job to check.
const REQUIRED: &[&str] = &[
    "run", "title", "reason", "operator", "reviewer", "risk", "scope", "planner", "strategy",
];

/// A brief file read whole: the job it describes and how to run it.
#[derive(Debug)]
pub struct BriefFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The job: brief, plan, source, run id, code version.
    pub job: Backfill,
    /// How to run it.
    pub settings: RunSettings,
    /// Downstream refreshes, in the brief's words.
    pub refresh: Vec<RefreshDoc>,
    /// The test slice's batches, if the file names them.
    pub slice: Vec<BatchId>,
    /// Non-blocking findings about the file.
    pub warnings: Vec<FileFinding>,
}

impl BriefFile {
    /// The refresh actions the file declares.
    pub fn refresh_actions(&self) -> Vec<Refresh> {
        self.refresh
            .iter()
            .filter_map(|r| {
                let action = match (&r.sql, &r.command) {
                    (Some(sql), _) => RefreshAction::Sql(sql.clone()),
                    (None, Some(cmd)) if !cmd.is_empty() => RefreshAction::Command {
                        program: cmd[0].clone(),
                        args: cmd[1..].to_vec(),
                    },
                    _ => return None,
                };
                Some(Refresh::new(r.name.clone(), action))
            })
            .collect()
    }

    /// The preflight of the brief, with each finding's field path and
    /// place in the file.
    pub fn preflight(&self, text: &str) -> Vec<FileFinding> {
        self.job
            .brief
            .preflight()
            .findings
            .into_iter()
            .map(|f| finding(text, &f.section, f.message, f.blocking))
            .chain(self.warnings.iter().cloned())
            .collect()
    }
}

/// The file's format, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Toml,
}

/// Reads a brief file: its text and what it describes, or every finding
/// that stops it from describing a job.
pub fn load(path: &Path) -> Result<(String, BriefFile), Vec<FileFinding>> {
    let whole = |message: String| vec![finding("", "", message, true)];
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => Format::Yaml,
        Some("toml") => Format::Toml,
        _ => {
            return Err(whole(format!(
                "{}: a brief file ends in .yaml, .yml or .toml",
                path.display()
            )))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole(format!("cannot read {}: {e}", path.display())))?;
    let file = parse(&text, format, path)?;
    Ok((text, file))
}

/// Parses a brief file's text.
fn parse(text: &str, format: Format, path: &Path) -> Result<BriefFile, Vec<FileFinding>> {
    let value = to_json(text, format)?;
    let Some(map) = value.as_object() else {
        return Err(vec![finding(
            text,
            "",
            "the brief file must be a map of fields".into(),
            true,
        )]);
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errors.push(finding(
                text,
                key,
                format!(
                    "unknown field `{key}`, expected one of {}",
                    FIELDS
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                true,
            ));
        }
    }
    for key in REQUIRED {
        if !map.contains_key(*key) {
            errors.push(finding(text, key, "is missing".into(), true));
        }
    }
    match (map.contains_key("source"), map.contains_key("rules")) {
        (false, false) => errors.push(finding(
            text,
            "source",
            "is missing (or give `rules`, a source per period)".into(),
            true,
        )),
        (true, true) => errors.push(finding(
            text,
            "rules",
            "with `rules`, each period names its own source: leave out `source`".into(),
            true,
        )),
        _ => {}
    }
    // Each field on its own, so one bad field does not hide the next.
    let mut doc = Doc::default();
    macro_rules! field {
        ($name:ident) => {
            if let Some(v) = map.get(stringify!($name)) {
                match typed(stringify!($name), v) {
                    Ok(x) => doc.$name = Some(x),
                    Err((at, message)) => errors.push(finding(text, &at, message, true)),
                }
            }
        };
    }
    field!(run);
    field!(code_version);
    field!(title);
    field!(reason);
    field!(operator);
    field!(reviewer);
    field!(risk);
    field!(scope);
    field!(planner);
    field!(source);
    field!(strategy);
    field!(dependencies);
    field!(idempotency);
    field!(validation);
    field!(rollback);
    field!(expected_impact);
    field!(operations);
    field!(refresh);
    field!(rules);
    field!(run_options);
    field!(slice);
    if !errors.is_empty() {
        return Err(errors);
    }
    build(text, doc, path)
}

/// Deserializes one field, with the path of the first error inside it.
fn typed<T: DeserializeOwned>(name: &str, v: &serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." || inner.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{inner}")
        };
        (at, e.into_inner().to_string())
    })
}

/// The job from a complete document; checks that need more than one
/// field (the scope, the plan, the source) report here.
fn build(text: &str, doc: Doc, path: &Path) -> Result<BriefFile, Vec<FileFinding>> {
    let mut errors = Vec::new();
    let scope = doc.scope.expect("required");
    if let Err(e) = scope.validate() {
        errors.push(finding(text, "scope", e.to_string(), true));
    }
    let mut rules = Vec::new();
    for (i, r) in doc.rules.unwrap_or_default().into_iter().enumerate() {
        let source = match (r.query, r.table) {
            (Some(q), None) => Source::Query(q),
            (None, Some(t)) => Source::Table(t),
            _ => {
                errors.push(finding(
                    text,
                    &format!("rules.{i}"),
                    format!("rule {:?} needs exactly one of `query` or `table`", r.name),
                    true,
                ));
                continue;
            }
        };
        rules.push(backfill_core::rules::Rule {
            name: r.name,
            reason: r.reason,
            from: r.from,
            until: r.until,
            source,
        });
    }
    let source = match doc.source {
        Some(SourceDoc::Query(q)) => Source::Query(q),
        Some(SourceDoc::Table(t)) => Source::Table(t),
        // With rules, each batch reads its period's source.
        None => rules
            .first()
            .map_or_else(|| Source::Query(String::new()), |r| r.source.clone()),
    };
    if rules.is_empty() {
        if let Err(e) = source.check() {
            errors.push(finding(text, "source.query", e.to_string(), true));
        }
    }
    let refresh = doc.refresh.unwrap_or_default();
    for (i, r) in refresh.iter().enumerate() {
        let set = usize::from(r.sql.is_some()) + usize::from(r.command.is_some());
        if set != 1 || r.command.as_ref().is_some_and(|c| c.is_empty()) {
            errors.push(finding(
                text,
                &format!("refresh.{i}"),
                format!(
                    "refresh of {:?} needs exactly one of `sql` or `command` (a program and its arguments)",
                    r.name
                ),
                true,
            ));
        }
    }
    let plan = if errors.is_empty() {
        match Plan::build(scope.clone(), doc.planner.expect("required")) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(finding(text, "planner", e.to_string(), true));
                None
            }
        }
    } else {
        None
    };
    let settings = doc.run_options.unwrap_or_default();
    if settings.concurrency == 0 {
        errors.push(finding(
            text,
            "run_options.concurrency",
            "must be at least 1".into(),
            true,
        ));
    }
    if let Err(e) = backfill_core::Ident::new(settings.ledger_schema.clone()) {
        errors.push(finding(
            text,
            "run_options.ledger_schema",
            e.to_string(),
            true,
        ));
    }
    let slice = doc.slice.unwrap_or_default();
    if let Some(plan) = &plan {
        for (i, b) in slice.iter().enumerate() {
            if plan.batch(b).is_none() {
                errors.push(finding(
                    text,
                    &format!("slice.{i}"),
                    format!("batch {b} is not in the plan"),
                    true,
                ));
            }
        }
    }
    let (Some(plan), true) = (plan, errors.is_empty()) else {
        return Err(errors);
    };
    let brief = Brief {
        title: doc.title.unwrap_or_default(),
        reason: doc.reason.unwrap_or_default(),
        operator: doc.operator.unwrap_or_default(),
        reviewer: doc.reviewer.unwrap_or_default(),
        risk: doc.risk.expect("required"),
        scope,
        dependencies: doc.dependencies.unwrap_or_default(),
        strategy: doc.strategy.expect("required"),
        idempotency: doc.idempotency.unwrap_or_default(),
        validation: doc.validation.unwrap_or_default(),
        rollback: doc.rollback.unwrap_or_default(),
        expected_impact: doc.expected_impact.unwrap_or_default(),
        operations: doc.operations.unwrap_or_default(),
    };
    let mut warnings = Vec::new();
    let code_version = match doc.code_version {
        Some(v) => v,
        None => {
            warnings.push(finding(
                text,
                "code_version",
                "is not set: the ledger will record the run as `unversioned`".into(),
                false,
            ));
            "unversioned".to_string()
        }
    };
    let mut job =
        Backfill::new(doc.run.expect("required"), brief, plan, source).code_version(code_version);
    if !rules.is_empty() {
        job = job
            .with_rules(rules)
            .map_err(|e| vec![finding(text, "rules", e.to_string(), true)])?;
    }
    Ok(BriefFile {
        path: path.to_path_buf(),
        job,
        settings,
        refresh,
        slice,
        warnings,
    })
}

/// The document as JSON, or the syntax error with its place.
fn to_json(text: &str, format: Format) -> Result<serde_json::Value, Vec<FileFinding>> {
    let syntax = |message: String, line: Option<usize>, column: Option<usize>| {
        vec![FileFinding {
            path: String::new(),
            line,
            column,
            message,
            blocking: true,
        }]
    };
    match format {
        Format::Yaml => {
            let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
                let at = e.location();
                syntax(
                    format!("not valid YAML: {e}"),
                    at.as_ref().map(|l| l.line()),
                    at.as_ref().map(|l| l.column()),
                )
            })?;
            serde_json::to_value(v).map_err(|e| syntax(format!("not a brief: {e}"), None, None))
        }
        Format::Toml => {
            let v: toml::Value = toml::from_str(text).map_err(|e| {
                let (line, column) = match e.span() {
                    Some(span) => line_column(text, span.start),
                    None => (None, None),
                };
                syntax(format!("not valid TOML: {}", e.message()), line, column)
            })?;
            Ok(toml_json(v))
        }
    }
}

/// TOML as JSON, with dates and times as the text they were written as.
fn toml_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_json).collect()),
        toml::Value::Table(t) => J::Object(t.into_iter().map(|(k, v)| (k, toml_json(v))).collect()),
    }
}

fn line_column(text: &str, offset: usize) -> (Option<usize>, Option<usize>) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (Some(line), Some(column))
}

/// A finding at `path`, placed in the text where the path's keys can be
/// found: each key is looked for after the previous one, as `key:`,
/// `key =` or a `[table]` header.
fn finding(text: &str, path: &str, message: String, blocking: bool) -> FileFinding {
    let (line, column) = locate(text, path);
    FileFinding {
        path: path.to_string(),
        line,
        column,
        message,
        blocking,
    }
}

fn locate(text: &str, path: &str) -> (Option<usize>, Option<usize>) {
    let keys: Vec<&str> = path
        .split('.')
        .filter(|k| !k.is_empty() && k.parse::<usize>().is_err())
        .collect();
    if keys.is_empty() {
        return (None, None);
    }
    let mut from = 0;
    let mut found = None;
    for key in keys {
        let hit = text[from..].match_indices(key).find(|(i, _)| {
            let at = from + i;
            let before = text[..at].chars().next_back();
            let after = text[at + key.len()..].trim_start_matches([' ', '\t', '"', '\'']);
            let starts_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            starts_word
                && (after.starts_with(':') || after.starts_with('=') || after.starts_with(']'))
        });
        match hit {
            Some((i, _)) => {
                from += i;
                found = Some(from);
                from += key.len();
            }
            None => break,
        }
    }
    match found {
        Some(at) => line_column(text, at),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_nested_keys_in_order() {
        let yaml = "title: x\nrollback:\n  description: y\n  retention_day: 3\n";
        assert_eq!(locate(yaml, "rollback.retention_day"), (Some(4), Some(3)));
        let toml = "title = 'x'\n[rollback]\nretention_day = 3\n";
        assert_eq!(locate(toml, "rollback.retention_day"), (Some(3), Some(1)));
        assert_eq!(locate(toml, "nowhere"), (None, None));
    }
}
