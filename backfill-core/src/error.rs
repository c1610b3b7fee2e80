//! The one error type of `backfill-core`.

use crate::finding::Finding;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a backfill, named by meaning.
///
/// Errors that are worth retrying (a lost connection, a lock timeout, a
/// serialization failure) report [`Error::is_transient`] as `true`; the
/// runner retries those with backoff and fails the batch on anything else.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// An identifier failed validation (empty, too long, or characters that
    /// could break out of quoting).
    #[error("invalid identifier {ident:?}: {reason}")]
    InvalidIdentifier {
        /// The rejected text.
        ident: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A scope is malformed: empty or inverted range, unknown time zone,
    /// zero-width window, a local time that does not exist.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    /// A plan could not be built from a scope and planner settings.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// A source query cannot be used as written (a placeholder inside
    /// quotes, nothing but comments).
    #[error("invalid source: {0}")]
    InvalidSource(String),
    /// A database that must exist does not (a mistyped path would
    /// otherwise create an empty database and fail later with "unknown
    /// table").
    #[error("no database at {0}: create it first, or check the path")]
    DatabaseMissing(String),
    /// Preflight found blocking problems; every finding is listed.
    #[error("preflight refused the brief: {}", summarize(.0))]
    Preflight(Vec<Finding>),
    /// A table named by the brief or the source does not exist.
    #[error("unknown table {0}")]
    UnknownTable(String),
    /// A column named by the brief does not exist in the table.
    #[error("unknown column {column} in {table}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },
    /// Source and target do not have compatible columns.
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// The scope's bounds are of a kind the batch column does not hold
    /// (calendar dates on an instant column, say): compared anyway, the
    /// engine would convert them in its own session's zone or by its own
    /// casts, and the batches would cover other rows than the scope says.
    #[error(
        "the scope bounds its batch column {column} with {bounds}, but the column holds \
         {column_type}: {hint}. Nothing was written"
    )]
    ScopeColumnMismatch {
        /// The batch column.
        column: String,
        /// What the column holds (a [`ColumnType`] name).
        ///
        /// [`ColumnType`]: crate::ColumnType
        column_type: String,
        /// What the scope's bounds are.
        bounds: String,
        /// The bounds to use instead.
        hint: String,
    },
    /// Rows of the target changed after the run copied it (staging,
    /// parallel version): a cut-over would drop them into the kept old
    /// table or hide them behind the moved view. Nothing was cut over.
    #[error(
        "{target} changed after run {run} copied it: {rows_then} row(s) then, {rows_now} now \
         (checksum {hash_then} then, {hash_now} now). A cut-over would lose what was written \
         since. Nothing was cut over: pause the writers and roll this run back, then run it \
         again"
    )]
    TargetChangedSinceCopy {
        /// The run.
        run: String,
        /// The target.
        target: String,
        /// Rows when the copy was taken.
        rows_then: u64,
        /// Rows now.
        rows_now: u64,
        /// Checksum when the copy was taken.
        hash_then: String,
        /// Checksum now.
        hash_now: String,
    },
    /// A source column's type is not one the target's column holds, nor a
    /// safe widening into it (see `ColumnType::widens_to`); nothing was
    /// written.
    #[error(
        "source column {column} is {source_type} but {target}.{column} is {target_type}, and \
         {source_type} does not widen safely into {target_type}: the engine would cast it \
         silently or fail mid-run. Cast it in the source query (CAST({column} AS ...)); \
         nothing was written"
    )]
    ColumnTypeMismatch {
        /// The target table.
        target: String,
        /// The column.
        column: String,
        /// The source column's type (a [`ColumnType`] name).
        ///
        /// [`ColumnType`]: crate::ColumnType
        source_type: String,
        /// The target column's type (a [`ColumnType`] name).
        ///
        /// [`ColumnType`]: crate::ColumnType
        target_type: String,
    },
    /// The source yielded rows outside the batch's bounds; nothing was written.
    #[error(
        "batch {batch}: source yielded {rows} row(s) outside the batch bounds; nothing was written"
    )]
    OutOfBounds {
        /// The batch.
        batch: String,
        /// How many rows fell outside.
        rows: u64,
    },
    /// A merge source has null keys; nothing was written.
    #[error("batch {batch}: {rows} source row(s) have a null key; nothing was written")]
    NullKeys {
        /// The batch.
        batch: String,
        /// How many rows have a null key.
        rows: u64,
    },
    /// A merge source has duplicate keys; nothing was written.
    #[error(
        "batch {batch}: {groups} duplicate source key(s), e.g. {sample:?}; nothing was written"
    )]
    DuplicateKeys {
        /// The batch.
        batch: String,
        /// How many keys occur more than once.
        groups: u64,
        /// A few of the duplicate keys, rendered as text.
        sample: Vec<String>,
    },
    /// A merge's keys are not unique (or are null) in the target: the
    /// merge would update every row with such a key, inside the scope or
    /// not. Refused before any write.
    #[error(
        "merge keys ({}) are not unique in the target {target}: {duplicates} key(s) occur more \
         than once (e.g. {sample:?}) and {nulls} row(s) have a null key; a merge would update \
         every row with such a key, inside the scope or not. Nothing was written",
        keys.join(", ")
    )]
    TargetKeysNotUnique {
        /// The target.
        target: String,
        /// The merge keys.
        keys: Vec<String>,
        /// Keys that occur more than once.
        duplicates: u64,
        /// Rows with a null key.
        nulls: u64,
        /// A few of the duplicate keys, rendered as text.
        sample: Vec<String>,
    },
    /// A batch's source slice holds NaN or infinity in a float column:
    /// written, it would break every sum over the live table. Nothing was
    /// written.
    #[error(
        "batch {batch}: {rows} source row(s) hold NaN or infinity in column {column}; nothing \
         was written. Correct the source (NULL, or a finite value) and resume"
    )]
    NonFinite {
        /// The batch.
        batch: String,
        /// The float column.
        column: String,
        /// How many rows hold a non-finite value in it.
        rows: u64,
    },
    /// Another run holds the target.
    #[error(
        "target {target} is locked by run {holder}: resume that run to finish it, or roll it \
         back; either frees the target"
    )]
    TargetLocked {
        /// The target table.
        target: String,
        /// The run holding the lock.
        holder: String,
    },
    /// A run with this id exists with a different definition.
    #[error(
        "run {run} was started with a different definition ({}); a resume must be the same \
         run. Resume it as it was started, or roll it back and start a new run id with the \
         new definition (fingerprints: stored {stored}, given {given})",
        if changed.is_empty() { "what changed is not recorded".to_string() } else { format!("changed: {}", changed.join(", ")) }
    )]
    FingerprintMismatch {
        /// The run.
        run: String,
        /// The stored fingerprint.
        stored: String,
        /// The fingerprint of the plan given now.
        given: String,
        /// The parts of the definition that differ (`plan`, `strategy`,
        /// `rollback`, `source`, `code_version`), where the ledger
        /// recorded them.
        changed: Vec<String>,
    },
    /// No run with this id exists in the ledger.
    #[error("no run {0} in the ledger")]
    RunNotFound(String),
    /// The worker's lease on a batch was taken over; its write was refused.
    #[error("lease on batch {batch} was lost (fencing token {token} is stale)")]
    LeaseLost {
        /// The batch.
        batch: String,
        /// The stale token.
        token: u64,
    },
    /// A batch was claimed as often as the run allows and is given up as
    /// failed, with its history in the ledger.
    #[error("batch {batch} was given up after {attempts} attempt(s); its transitions say why; release it to try again")]
    AttemptsExhausted {
        /// The batch.
        batch: String,
        /// Its attempts.
        attempts: u32,
    },
    /// A batch state transition that the state machine does not allow.
    #[error("batch {batch}: transition {from} -> {to} is not allowed")]
    InvalidTransition {
        /// The batch.
        batch: String,
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
    },
    /// A blocking validation failed; the run stopped.
    #[error("validation {check} failed: {detail}")]
    ValidationFailed {
        /// The check's name.
        check: String,
        /// What was observed.
        detail: String,
    },
    /// A blocking check of a batch's slice failed inside the batch's
    /// transaction, before its commit: the write was rolled back, so
    /// nothing of the batch was written. The runner reports it as a
    /// failed check and stops with [`Error::ValidationFailed`].
    #[error(
        "check {check} failed before the batch's commit ({detail}); nothing of the batch was \
         written"
    )]
    GuardFailed {
        /// The check's name.
        check: String,
        /// What was measured.
        observed: f64,
        /// What was expected.
        expected: Option<f64>,
        /// What was observed, in words.
        detail: String,
        /// Offending keys, for a uniqueness check.
        sample: Vec<String>,
    },
    /// A table already holds the name of a working table a run would
    /// make, and the run did not make it: it is not adopted (the run would
    /// write into it, and cleanup would drop it). Nothing was written.
    #[error(
        "run {run} would make its {kind} table {table}, but a table of that name exists and is \
         not the run's: rename or drop that table, or use another run id. Nothing was written"
    )]
    NameTaken {
        /// The run.
        run: String,
        /// The working table's kind.
        kind: String,
        /// The table.
        table: String,
    },
    /// A merge source repeats keys across the scope (a key on two days):
    /// each batch would upsert it again, the last one silently winning.
    /// Refused before the first write.
    #[error(
        "the source repeats {duplicates} key(s) of ({}) across the scope, for example {}: each \
         batch would upsert them again and the last would win. Keep one row per key in the \
         source; nothing was written",
        keys.join(", "),
        sample.join("; ")
    )]
    SourceKeysNotUnique {
        /// The key columns.
        keys: Vec<String>,
        /// How many keys repeat.
        duplicates: u64,
        /// Some of them.
        sample: Vec<String>,
    },
    /// A merge batch's source holds keys whose target rows lie outside the
    /// run's scope: the merge would rewrite rows the backfill does not
    /// own. Nothing of the batch was written.
    #[error(
        "batch {batch}: {rows} source key(s) match target rows outside the scope (for example \
         {}); a merge would rewrite them. Widen the scope or drop those keys from the source; \
         nothing was written",
        sample.join(", ")
    )]
    KeysOutsideScope {
        /// The batch.
        batch: String,
        /// How many target rows outside the scope match.
        rows: u64,
        /// Some of their keys.
        sample: Vec<String>,
    },
    /// The ledger disagrees with its own history: a batch's state is not
    /// the one its last recorded transition reached, so the ledger was
    /// edited by hand. Nothing was written.
    #[error(
        "the ledger of run {run} was edited: batch {batch} is {state}, but its history ends in \
         {history}. Put the state back as its history says, or roll the run back and start a \
         new one; nothing was written"
    )]
    LedgerInconsistent {
        /// The run.
        run: String,
        /// The batch.
        batch: String,
        /// Its state in the ledger.
        state: String,
        /// The state its last transition reached.
        history: String,
    },
    /// The plan has more batches than the runner allows
    /// (`RunOptions::max_batches`); nothing was recorded or taken.
    #[error(
        "the plan has {batches} batches, more than the {max} this runner allows: choose a \
         coarser grain or wider ranges, or raise RunOptions::max_batches on purpose; nothing \
         was recorded"
    )]
    PlanTooLarge {
        /// Batches in the plan.
        batches: usize,
        /// The limit.
        max: usize,
    },
    /// A working table a run made (a pre-image, key log, stage or
    /// version) is gone, so the run cannot go on without losing what its
    /// rollback or cut-over needs. Roll the run back as far as its
    /// remaining tables allow, or start a new run.
    #[error(
        "run {run} cannot go on: its {kind} table {table} is gone ({why}); recreating it empty \
         would lose what its rollback or cut-over needs. Roll the run back, or, where it cannot \
         be, release its target (`Ledger::unlock_target`) and start a new run id"
    )]
    AssetMissing {
        /// The run.
        run: String,
        /// The kind of table.
        kind: String,
        /// The table.
        table: String,
        /// Why it counts as gone.
        why: String,
    },
    /// A metric amount is not a finite number within 38 significant
    /// digits (NaN, infinity, or a sum that outgrew the range), so an
    /// exact reconciliation cannot be made.
    #[error("amount out of range: {0} (an exact amount holds 38 significant digits and no NaN or infinity)")]
    AmountOutOfRange(String),
    /// The run was cancelled through its control handle.
    #[error("run cancelled")]
    Cancelled,
    /// A load signal reported a critical condition.
    #[error("load critical: {0}")]
    LoadCritical(String),
    /// Cut-over or another guarded step is not allowed in the current state.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// Cut-over needs a reviewer's approval of the current validation
    /// report, or an approval was refused.
    #[error("approval: {0}")]
    Approval(String),
    /// The engine cannot do this safely, so it is refused before anything
    /// is written (for example a write that needs a transaction, on an
    /// engine without transactions).
    #[error("not supported here: {0}")]
    Unsupported(String),
    /// A fault injected by a test harness.
    #[error("injected fault at {0}")]
    InjectedFault(String),
    /// The engine reported an error.
    #[error("engine error{}: {message}", if *.transient { " (transient)" } else { "" })]
    Engine {
        /// The engine's message.
        message: String,
        /// Whether retrying may succeed.
        transient: bool,
        /// The engine's code for it, where it gives one: a SQLSTATE on
        /// PostgreSQL, the error type on DuckDB (`Catalog`,
        /// `TransactionContext`, …).
        code: Option<String>,
        /// The driver's error, for [`std::error::Error::source`].
        #[source]
        cause: Option<Cause>,
    },
    /// (De)serialization failed.
    #[error("serialization: {0}")]
    Serde(String),
}

/// The driver error behind an [`Error::Engine`], shared so the error
/// stays cheap to clone; two causes are equal when they print alike.
#[derive(Clone)]
pub struct Cause(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

fn summarize(findings: &[Finding]) -> String {
    findings
        .iter()
        .filter(|f| f.blocking)
        .map(|f| format!("{}: {}", f.section, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Whether retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Engine {
                transient: true,
                ..
            }
        )
    }

    /// A permanent engine error.
    pub fn engine(message: impl Into<String>) -> Self {
        Error::Engine {
            message: message.into(),
            transient: false,
            code: None,
            cause: None,
        }
    }

    /// A transient engine error, worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::Engine {
            message: message.into(),
            transient: true,
            code: None,
            cause: None,
        }
    }

    /// An error a driver reported, with the engine's code for it and the
    /// driver's error as its [`std::error::Error::source`].
    pub fn from_driver(
        message: impl Into<String>,
        transient: bool,
        code: Option<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Engine {
            message: message.into(),
            transient,
            code,
            cause: Some(Cause(std::sync::Arc::new(cause))),
        }
    }

    /// The engine's code for an engine error (a SQLSTATE on PostgreSQL,
    /// the error type on DuckDB), where it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Engine { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serde(e.to_string())
    }
}
