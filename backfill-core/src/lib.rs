//! # backfill-core
//!
//! The model of a safe backfill, with no engine code: a written
//! [`Brief`] that preflight checks, an exact [`Scope`] in a named time
//! zone, [`Planner`]s that cut it into stable batches, typed
//! [`Predicate`]s, the shared SQL renderer ([`sql`]), the four write
//! strategies ([`strategy`]), the [`Ledger`], the [`Runner`], and the
//! validator model ([`validate`]).
//!
//! The runbook shape: brief → preflight → plan → run → report.
//!
//! ```no_run
//! # async fn demo(warehouse: std::sync::Arc<dyn backfill_core::Warehouse>, brief: backfill_core::Brief)
//! #     -> backfill_core::Result<()> {
//! use std::sync::Arc;
//! use backfill_core::{Backfill, Grain, MemoryLedger, Plan, Planner, RunId, Runner, Source};
//!
//! brief.preflight().into_result()?;                       // refuse a blank brief
//! let plan = Plan::build(brief.scope.clone(), Planner::Windows { grain: Grain::Day })?;
//! let job = Backfill::new(RunId::new("refunds_fix")?, brief, plan,
//!     Source::query("SELECT * FROM corrected_revenue"));
//! let runner = Runner::new(warehouse, Arc::new(MemoryLedger::new()));
//! let report = runner.run(&job).await?;                    // resumable, batch by batch
//! println!("{report}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod amount;
pub mod ask;
pub mod blast;
pub mod brief;
pub mod checks;
pub mod cleanup;
pub mod done;
pub mod engine;
pub mod error;
pub mod finding;
pub mod ident;
pub mod inspect;
pub mod job;
pub mod ledger;
pub mod note;
pub mod pattern;
pub mod plan;
pub mod predicate;
pub mod probe;
pub mod refresh;
pub mod report;
pub mod runner;
pub mod scope;
pub mod source;
pub mod sql;
pub mod strategy;
pub mod validate;
pub mod value;
pub mod warehouse;

pub use amount::Amount;
pub use brief::{
    Brief, Dependencies, Dependency, Finding, Operations, Preflight, RiskClass, RollbackPlan,
    ValidationPlan,
};
pub use error::{Error, Result};
pub use ident::{Ident, TableRef};
pub use ledger::{BatchState, Ledger, MemoryLedger, RunId, RunStatus};
pub use plan::{Batch, BatchId, Grain, Plan, Planner};
pub use predicate::Predicate;
pub use report::RunReport;
pub use runner::{
    Backfill, Event, Load, LoadSignal, Reading, RunControl, RunOptions, Runner, SliceEstimate,
};
pub use scope::{Bounds, Scope, TimeColumn};
pub use source::Source;
pub use strategy::StrategySpec;
pub use validate::{CheckSpec, Expectation, Outcome, Status, ValidationReport};
pub use value::{Column, ColumnType, TableSchema, Value};
pub use warehouse::Warehouse;

pub use jiff;

#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
