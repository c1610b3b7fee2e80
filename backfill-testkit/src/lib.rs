//! # backfill-testkit
//!
//! Test your backfill code without a database, and prove an adapter
//! behaves like every other:
//!
//! - [`FakeWarehouse`]: an in-memory warehouse implementing the same
//!   adapter trait as the real engines, snapshots and all four write
//!   strategies included;
//! - [`Faulty`]: wraps any warehouse and fails or "crashes" at named
//!   points ([`FaultPoint`]), or slows writes down;
//! - [`conformance`]: the shared suite every adapter runs, through
//!   [`conformance_tests!`];
//! - [`fixtures`]: a realistic orders/refunds dataset and the [`Seed`]
//!   trait that loads data into any engine.
//!
//! ## The runbook, on the fake
//!
//! Brief → preflight → plan → test slice → run → report → rollback, with
//! no database:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use backfill_core::jiff::civil::date;
//! use backfill_core::{Backfill, Bounds, Grain, MemoryLedger, Plan, Planner, Predicate, RunId,
//!     Runner, Scope, Source, StrategySpec, Warehouse};
//! use backfill_testkit::{conformance, FakeWarehouse, Seed};
//!
//! let fake = FakeWarehouse::new();
//! let env = conformance::fake_env_on(fake.clone());
//! conformance::seed_table(&env, "facts", &conformance::original_rows()).await;
//! let fixed = conformance::seed_table(&env, "facts_fix", &conformance::source_rows()).await;
//!
//! let scope = Scope::new(env.table("facts"), "day",
//!     Bounds::dates(date(2026, 3, 3), date(2026, 3, 8)), "Europe/Berlin").unwrap();
//! let mut brief = conformance::brief(scope.clone(), StrategySpec::PartitionOverwrite);
//! brief.operations.pause.clear();
//! assert!(!brief.preflight().passed());              // a blank section blocks the run
//! brief.operations.pause = "Pause between days with the control handle.".into();
//! brief.preflight().into_result().unwrap();
//!
//! let plan = Plan::build(scope, Planner::Windows { grain: Grain::Day }).unwrap();
//! let job = Backfill::new(RunId::new("fix_amounts").unwrap(), brief, plan, Source::Table(fixed));
//! let runner = Runner::new(Arc::new(fake.clone()), Arc::new(MemoryLedger::new()));
//! let estimate = runner.test_slice(&job, &[job.plan.batches[0].id.clone()]).await.unwrap();
//! assert_eq!(estimate.plan_batches, 5);
//! let report = runner.run(&job).await.unwrap();     // continues after the slice
//! assert_eq!((report.batches_done, report.batches_this_run), (5, 4));
//! assert!(runner.run(&job).await.unwrap().nothing_to_do());
//! runner.rollback(&job).await.unwrap();              // the exact prior state
//! # });
//! ```
#![warn(missing_docs)]

pub mod conformance;
pub mod crash;
pub mod fake;
pub mod faults;
pub mod fixtures;
pub mod scratch;

pub use fake::FakeWarehouse;
pub use faults::{FaultPoint, Faulty};
pub use fixtures::Seed;
