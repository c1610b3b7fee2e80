//! # backfill-core
//!
//! The model of a safe backfill and everything the engines share: a
//! written [`Brief`] that preflight checks, an exact [`Scope`] in a named
//! time zone, [`Planner`]s that cut it into stable batches, typed
//! [`Predicate`]s, the shared SQL renderer ([`sql`]) and SQL engine
//! ([`engine`]: one ledger and one batch-write protocol for every SQL
//! adapter), the four write strategies ([`strategy`]), the [`Ledger`], the
//! [`Runner`], validation ([`validate`]), and what comes after the data
//! (approval, refresh, notes, cleanup, done).
//!
//! ## Layers
//!
//! Modules depend only on modules of their own layer or below; there is no
//! import cycle (`python3 scripts/modcycles.py backfill-core/src` checks).
//!
//! | layer | modules | what they hold |
//! |---|---|---|
//! | model | [`ident`], [`value`], [`amount`], [`error`], [`finding`], [`predicate`], [`scope`], [`source`], [`plan`], [`pattern`], [`checks`], [`inspect`], [`brief`], [`job`] | what a backfill *is*: names, values, bounds, batches, the brief and its declared pattern and checks, the questions one may ask of data |
//! | seams | [`ledger`], [`sql`], [`warehouse`], [`ask`], [`probe`], [`engine`] | what an engine and a ledger must do, the SQL renderer and dialects, and the shared SQL engine over a small executor |
//! | run | [`strategy`], [`validate`], [`blast`], [`cleanup`], [`report`], [`runner`] | how a run goes: write patterns, checks, blast radius, leftovers, reports, the runner |
//! | after the data | [`note`], [`refresh`], [`done`] | change notes, downstream refresh, the definition of done |
//!
//! A new SQL engine implements [`engine::Executor`] and [`engine::Conn`],
//! and a [`sql::Dialect`]; [`engine::SqlWarehouse`] and
//! [`engine::SqlLedger`] then give it the whole runbook.
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
pub mod drift;
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
pub mod rules;
pub mod runner;
pub mod scope;
pub mod source;
pub mod sql;
pub mod strategy;
mod strict;
pub mod validate;
pub mod value;
pub mod warehouse;

pub use amount::Amount;
pub use brief::{
    Brief, BriefBuilder, Dependencies, Dependency, Emptiness, Finding, Operations, Preflight,
    RiskClass, RollbackPlan, ValidationPlan,
};
pub use checks::{CheckSpec, Expectation};
pub use error::{Error, Result};
pub use ident::{Ident, TableRef};
pub use job::Backfill;
pub use ledger::{BatchState, Ledger, MemoryLedger, RunId, RunStatus};
pub use pattern::StrategySpec;
pub use plan::{Batch, BatchId, Grain, Plan, Planner};
pub use predicate::Predicate;
pub use report::{RunReport, SliceEstimate};
pub use runner::{Event, Load, LoadSignal, Reading, RunControl, RunOptions, Runner};
pub use scope::{Bounds, Scope, TimeColumn};
pub use source::Source;
pub use validate::{Outcome, Status, ValidationReport};
pub use value::{Column, ColumnType, TableSchema, Value};
pub use warehouse::Warehouse;

pub use jiff;

#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
