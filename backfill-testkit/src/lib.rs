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
#![warn(missing_docs)]

pub mod conformance;
pub mod fake;
pub mod faults;
pub mod fixtures;

pub use fake::FakeWarehouse;
pub use faults::{FaultPoint, Faulty};
pub use fixtures::Seed;
