//! The exit codes, one per thing an orchestrator must tell apart.

use backfill_core::Error;
use serde::Serialize;

/// How a command ended. The numbers are part of the CLI's contract
/// (`backfill --help` and the README list them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// 0: it did what was asked, completely.
    Success,
    /// 1: it failed (an engine error, a failed batch, anything else).
    Failure,
    /// 2: the command line or the brief file is wrong; nothing was
    /// written.
    BadInput,
    /// 3: the run is not finished: paused, cancelled, still running in
    /// another process, or not done. Never success.
    Incomplete,
    /// 4: a blocking check failed.
    CheckFailed,
    /// 5: refused: the target is locked by another run, approval is
    /// missing or refused, the run was begun with another definition,
    /// or the step is not allowed in the run's state.
    Refused,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::BadInput => 2,
            Exit::Incomplete => 3,
            Exit::CheckFailed => 4,
            Exit::Refused => 5,
        }
    }

    /// Its name in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::BadInput => "bad_input",
            Exit::Incomplete => "incomplete",
            Exit::CheckFailed => "check_failed",
            Exit::Refused => "refused",
        }
    }

    /// How an error ends a command.
    pub fn of(e: &Error) -> Exit {
        match e {
            Error::InvalidIdentifier { .. }
            | Error::InvalidScope(_)
            | Error::InvalidPlan(_)
            | Error::InvalidSource(_)
            | Error::Preflight(_)
            | Error::PlanTooLarge { .. }
            | Error::DatabaseMissing(_)
            | Error::RunNotFound(_) => Exit::BadInput,
            Error::ValidationFailed { .. } | Error::GuardFailed { .. } => Exit::CheckFailed,
            Error::TargetLocked { .. }
            | Error::FingerprintMismatch { .. }
            | Error::Approval(_)
            | Error::NotAllowed(_)
            | Error::Unsupported(_) => Exit::Refused,
            Error::Cancelled => Exit::Incomplete,
            _ => Exit::Failure,
        }
    }
}

/// The table of exit codes, for `--help`.
pub const TABLE: &str = "Exit codes:
  0  success: done what was asked, completely
  1  failure: an engine error, a failed batch
  2  bad usage or brief file; nothing was written
  3  incomplete: paused, cancelled, running elsewhere, or not done
  4  a blocking check failed
  5  refused: target locked by another run, approval missing or refused,
     the run was begun with another definition, the step is not allowed now,
     or the engine cannot do it safely";
