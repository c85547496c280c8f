//! The `DeliveryWorker`: one per instance with pending webhooks. It attempts the head
//! job of its instance's outbox until it is delivered or given up (retrying with
//! growing delays), records every attempt, and only then moves to the next job, so an
//! instance's webhooks arrive in the order of its events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;

use super::{
    DeadLetter, DeliveryRecord, DeliveryStatus, OUTBOX_RETRY, WebhookConfig, WebhookRequest,
    headers, retry_delay, target_url,
};
use crate::domain::{EventKind, Instance};
use crate::error::StoreError;

pub(super) enum WorkerMsg {
    /// Attempt the head job (again).
    Run,
    /// Read the instance from storage again before the next attempt.
    Invalidate,
}

pub(super) struct DeliveryWorker {
    pub instance_id: String,
    pub config: WebhookConfig,
    /// Tells the queue that this instance's outbox looked empty.
    pub on_idle: Arc<dyn Fn() + Send + Sync>,
}

impl Actor for DeliveryWorker {
    type Msg = WorkerMsg;
    /// The instance as last read from storage (None until the first attempt).
    type State = Option<Instance>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<Option<Instance>, ActorProcessingErr> {
        Ok(None)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        cached: &mut Option<Instance>,
    ) -> Result<(), ActorProcessingErr> {
        if let WorkerMsg::Invalidate = msg {
            *cached = None;
            return Ok(());
        }
        match self.attempt_head(cached).await {
            Ok(Next::Now) => {
                let _ = myself.cast(WorkerMsg::Run);
            }
            Ok(Next::After(delay)) => {
                myself.send_after(delay, || WorkerMsg::Run);
            }
            Ok(Next::Idle) => {
                (self.on_idle)();
            }
            Err(err) => {
                tracing::warn!(instance = %self.instance_id, %err, "webhook outbox unavailable; retrying");
                myself.send_after(OUTBOX_RETRY, || WorkerMsg::Run);
            }
        }
        Ok(())
    }
}

enum Next {
    Now,
    After(Duration),
    Idle,
}

impl DeliveryWorker {
    async fn attempt_head(&self, cached: &mut Option<Instance>) -> Result<Next, StoreError> {
        let outbox = &self.config.outbox;
        let Some(mut job) = outbox.head(&self.instance_id).await? else {
            return Ok(Next::Idle);
        };
        let attempt = job.attempts + 1;
        if cached.is_none() {
            *cached = self
                .config
                .storage
                .instance_by_id(&self.instance_id)
                .await?;
        }
        let instance = cached.clone();
        let record = |status, http_status, error: Option<String>, duration_ms| {
            if let Some(observe) = &self.config.on_result {
                observe(status, instance.as_ref());
            }
            DeliveryRecord {
                event_id: job.event_id.clone(),
                event: job.event.clone(),
                attempt,
                status,
                http_status,
                error,
                duration_ms,
                created_at: Utc::now(),
            }
        };
        let url = instance.as_ref().and_then(|i| {
            if job.event == EventKind::WebhookTest.as_str() {
                i.webhook_url.as_deref().filter(|u| !u.is_empty())
            } else {
                target_url(i)
            }
        });
        let (Some(instance), Some(url)) = (instance.as_ref(), url) else {
            // Webhooks were switched off (or the instance deleted) after the job was queued:
            // a dead letter, to retry or replay once they are back on.
            let error = "webhooks are disabled for this instance".to_owned();
            outbox
                .record(
                    &self.instance_id,
                    record(DeliveryStatus::Failed, None, Some(error.clone()), 0),
                )
                .await?;
            outbox
                .bury(DeadLetter {
                    job,
                    http_status: None,
                    error: Some(error),
                    failed_at: Utc::now(),
                })
                .await?;
            return Ok(Next::Now);
        };
        let request = WebhookRequest {
            url: url.to_owned(),
            headers: headers(instance, &job, attempt, Utc::now()),
            body: job.body.clone(),
        };
        let started = Instant::now();
        let result = self.config.transport.post(request).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (http_status, error) = match result {
            Ok(status) if (200..300).contains(&status) => {
                outbox
                    .record(
                        &self.instance_id,
                        record(DeliveryStatus::Delivered, Some(status), None, duration_ms),
                    )
                    .await?;
                outbox.remove(&job).await?;
                return Ok(Next::Now);
            }
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
            ),
            Err(err) => (None, Some(err)),
        };
        job.attempts = attempt;
        if attempt > instance.webhook.max_retries {
            outbox
                .record(
                    &self.instance_id,
                    record(
                        DeliveryStatus::Failed,
                        http_status,
                        error.clone(),
                        duration_ms,
                    ),
                )
                .await?;
            outbox
                .bury(DeadLetter {
                    job,
                    http_status,
                    error,
                    failed_at: Utc::now(),
                })
                .await?;
            return Ok(Next::Now);
        }
        outbox
            .record(
                &self.instance_id,
                record(DeliveryStatus::Retrying, http_status, error, duration_ms),
            )
            .await?;
        outbox.update(&job).await?;
        let jitter = if self.config.jitter {
            rand::rng().random_range(0.8..=1.2)
        } else {
            1.0
        };
        Ok(Next::After(retry_delay(
            instance.webhook.retry_interval_ms,
            attempt,
            jitter,
        )))
    }
}
