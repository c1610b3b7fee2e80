//! PostgreSQL adapter for backfill (in progress).
#![warn(missing_docs)]
