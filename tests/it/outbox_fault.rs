//! A webhook outbox that refuses to queue while a test says so, or holds a delivery
//! worker before it reads its jobs: the real (sled) outbox of the server, wrapped through
//! the server's `wrap_outbox` seam.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use wagate_actors::domain::Page;
use wagate_actors::error::StoreError;
use wagate_actors::webhook_queue::{Backlog, DeadLetter, DeliveryRecord, Outbox, WebhookJob};

/// The switch shared by the test and every outbox it wraps (one per server boot).
#[derive(Clone, Default)]
pub struct OutboxFault {
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    hold: Arc<tokio::sync::watch::Sender<Hold>>,
}

/// Where a hold of the pending jobs' reading is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Hold {
    #[default]
    Off,
    /// The next reading will wait.
    Armed,
    /// A reading waits for the release.
    Holding,
    Released,
}

impl OutboxFault {
    /// A switch that starts refusing.
    pub fn refusing() -> OutboxFault {
        let fault = OutboxFault::default();
        fault.refuse();
        fault
    }

    /// From now on, queueing an event (a job or a cursor move) fails as a storage error.
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// From now on the outbox works again.
    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Writes refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// The next reading of an instance's pending jobs (a delivery worker about to pick
    /// the job it attempts) waits until [`Self::release`]; the readings after it do not.
    pub fn hold_pending(&self) {
        self.hold.send_replace(Hold::Armed);
    }

    /// Returns once a reading waits (panics after 20 s).
    pub async fn held(&self) {
        let mut state = self.hold.subscribe();
        tokio::time::timeout(
            Duration::from_secs(20),
            state.wait_for(|h| *h == Hold::Holding),
        )
        .await
        .expect("a delivery worker reads its pending jobs")
        .expect("the hold is kept");
    }

    /// The held reading goes on.
    pub fn release(&self) {
        self.hold.send_replace(Hold::Released);
    }

    /// The seam: wraps a server's outbox.
    pub fn wrapper(&self) -> wagate::app::OutboxWrapper {
        let fault = self.clone();
        Arc::new(move |inner| {
            Arc::new(Faulty {
                inner,
                fault: fault.clone(),
            })
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.refusing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "webhook outbox: refusing writes (test fault)".into(),
            ));
        }
        Ok(())
    }
}

struct Faulty {
    inner: Arc<dyn Outbox>,
    fault: OutboxFault,
}

#[async_trait]
impl Outbox for Faulty {
    async fn push_many(
        &self,
        jobs: Vec<WebhookJob>,
        cursors: Vec<(String, String)>,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        self.fault.check()?;
        self.inner.push_many(jobs, cursors).await
    }

    async fn cursor(&self, instance_id: &str) -> Result<Option<String>, StoreError> {
        self.inner.cursor(instance_id).await
    }

    async fn head(&self, instance_id: &str) -> Result<Option<WebhookJob>, StoreError> {
        self.inner.head(instance_id).await
    }

    async fn pending(
        &self,
        instance_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        let held = self.fault.hold.send_if_modified(|h| {
            let armed = *h == Hold::Armed;
            if armed {
                *h = Hold::Holding;
            }
            armed
        });
        if held {
            let mut state = self.fault.hold.subscribe();
            // Fails only when the switch is gone, with the test: go on then.
            let _ = state.wait_for(|h| *h == Hold::Released).await;
        }
        self.inner.pending(instance_id, limit).await
    }

    async fn update(&self, job: &WebhookJob) -> Result<(), StoreError> {
        self.inner.update(job).await
    }

    async fn remove(&self, job: &WebhookJob) -> Result<(), StoreError> {
        self.inner.remove(job).await
    }

    async fn bury(&self, dead: DeadLetter) -> Result<(), StoreError> {
        self.inner.bury(dead).await
    }

    async fn dead_letters(&self, instance_id: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(instance_id).await
    }

    async fn revive(
        &self,
        instance_id: &str,
        event_id: &str,
    ) -> Result<Option<WebhookJob>, StoreError> {
        self.inner.revive(instance_id, event_id).await
    }

    async fn requeue(&self, job: WebhookJob) -> Result<WebhookJob, StoreError> {
        self.fault.check()?;
        self.inner.requeue(job).await
    }

    async fn pending_instances(&self) -> Result<Vec<String>, StoreError> {
        self.inner.pending_instances().await
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        self.inner.depth().await
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        self.inner.backlog().await
    }

    async fn record(&self, instance_id: &str, record: DeliveryRecord) -> Result<(), StoreError> {
        self.inner.record(instance_id, record).await
    }

    async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        self.inner.deliveries(instance_id, limit, skip).await
    }

    async fn purge(&self, instance_id: &str) -> Result<(), StoreError> {
        self.inner.purge(instance_id).await
    }

    async fn adopt(&self, instance_id: &str) -> Result<(), StoreError> {
        self.inner.adopt(instance_id).await
    }
}
