//! The runner's view of its ledger: every call retried on a transient
//! error, with the same backoff as batch writes, so a dropped connection
//! or a serialization failure on a ledger call does not fail the run.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::RetryPolicy;
use crate::error::Result;
use crate::ledger::{
    Asset, BatchRecord, BatchState, BatchUpdate, Claim, Lease, Ledger, Liveness, RunId, RunRecord,
    RunStart, RunStatus, Steering, Transition, TxMark,
};
use crate::plan::{Batch, BatchId};
use crate::TableRef;

/// A ledger whose calls are retried on transient errors.
pub(crate) struct Retrying {
    pub(crate) inner: Arc<dyn Ledger>,
    pub(crate) policy: RetryPolicy,
}

impl Retrying {
    async fn retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt < self.policy.max_attempts => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "transient error on ledger {what}; retrying");
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Ledger for Retrying {
    async fn lock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        self.retry("lock", || self.inner.lock_target(target, run))
            .await
    }

    async fn unlock_target(&self, target: &TableRef, run: &RunId) -> Result<()> {
        self.retry("unlock", || self.inner.unlock_target(target, run))
            .await
    }

    async fn begin_run(&self, run: &RunRecord, batches: &[Batch]) -> Result<RunStart> {
        self.retry("begin", || self.inner.begin_run(run, batches))
            .await
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRecord> {
        self.retry("read", || self.inner.run(run_id)).await
    }

    async fn runs_on(&self, target: &TableRef) -> Result<Vec<RunRecord>> {
        self.retry("read", || self.inner.runs_on(target)).await
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<()> {
        self.retry("status", || self.inner.set_run_status(run_id, status, note))
            .await
    }

    async fn claim(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
    ) -> Result<Option<Claim>> {
        self.retry("claim", || self.inner.claim(run_id, worker, lease, only))
            .await
    }

    async fn claim_many(
        &self,
        run_id: &RunId,
        worker: &str,
        lease: Duration,
        only: Option<&[BatchId]>,
        n: usize,
    ) -> Result<Vec<Claim>> {
        self.retry("claim", || {
            self.inner.claim_many(run_id, worker, lease, only, n)
        })
        .await
    }

    async fn steer(&self, run_id: &RunId, to: Steering, who: &str) -> Result<()> {
        self.retry("steer", || self.inner.steer(run_id, to, who))
            .await
    }

    async fn steering(&self, run_id: &RunId) -> Result<Steering> {
        self.retry("steering", || self.inner.steering(run_id)).await
    }

    async fn renew(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: u64,
        lease: Duration,
    ) -> Result<()> {
        // A heartbeat is tried again at the next beat.
        self.inner.renew(run_id, batch_id, token, lease).await
    }

    async fn release(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        who: &str,
        why: &str,
    ) -> Result<()> {
        self.retry("release", || self.inner.release(run_id, batch_id, who, why))
            .await
    }

    async fn liveness(&self, lease: &Lease) -> Result<Liveness> {
        self.retry("liveness", || self.inner.liveness(lease)).await
    }

    fn instance(&self) -> &str {
        self.inner.instance()
    }

    async fn transition(
        &self,
        run_id: &RunId,
        batch_id: &BatchId,
        token: Option<u64>,
        to: BatchState,
        update: BatchUpdate,
    ) -> Result<()> {
        self.retry("transition", || {
            self.inner
                .transition(run_id, batch_id, token, to, update.clone())
        })
        .await
    }

    async fn batches(&self, run_id: &RunId) -> Result<Vec<BatchRecord>> {
        self.retry("batches", || self.inner.batches(run_id)).await
    }

    async fn transitions(&self, run_id: &RunId) -> Result<Vec<Transition>> {
        self.retry("transitions", || self.inner.transitions(run_id))
            .await
    }

    async fn record_asset(&self, asset: &Asset) -> Result<()> {
        self.retry("asset", || self.inner.record_asset(asset)).await
    }

    async fn assets(&self, run_id: Option<&RunId>) -> Result<Vec<Asset>> {
        self.retry("assets", || self.inner.assets(run_id)).await
    }

    async fn asset_dropped(&self, run_id: &RunId, table: &TableRef, at: Timestamp) -> Result<()> {
        self.retry("asset", || self.inner.asset_dropped(run_id, table, at))
            .await
    }

    async fn put_document(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        self.retry("document", || self.inner.put_document(run_id, name, body))
            .await
    }

    async fn put_document_if_absent(
        &self,
        run_id: &RunId,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<bool> {
        self.retry("document", || {
            self.inner.put_document_if_absent(run_id, name, body)
        })
        .await
    }

    async fn document(&self, run_id: &RunId, name: &str) -> Result<Option<serde_json::Value>> {
        self.retry("document", || self.inner.document(run_id, name))
            .await
    }

    fn tx_mark(&self, run_id: &RunId, batch_id: &BatchId, token: u64) -> Option<TxMark> {
        self.inner.tx_mark(run_id, batch_id, token)
    }

    fn now(&self) -> Timestamp {
        self.inner.now()
    }
}
