//! The `DeliveryWorker`: one per instance with pending webhooks. It records every
//! attempt, and a failed job waits in the outbox for its next attempt (`not_before`,
//! growing delays) until it is delivered or given up. What it attempts next depends on
//! the instance's ordering:
//! - `strict` (the default): always the head job, so an instance's webhooks arrive in
//!   the order of its events; a failing one holds back the rest;
//! - `unordered`: the oldest job that is due among the first [`UNORDERED_WINDOW`], so
//!   one failing event does not delay the others.
//!
//! It also keeps the instance's run of failed attempts: when every attempt has failed
//! for longer than the configured time, it reports the endpoint as failing and stops
//! attempting; the queue pauses the instance's delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;

use super::{
    DeadLetter, DeliveryRecord, DeliveryStatus, OUTBOX_RETRY, SettingsEpoch, WebhookConfig,
    WebhookJob, WebhookRequest, headers, retry_delay, target_url,
};
use crate::domain::{EventKind, Instance, WebhookOrdering};
use crate::error::StoreError;

/// How many of the oldest pending jobs an `unordered` worker looks through for one
/// that is due. More failing jobs than this at the head of the queue hold back the rest
/// until their next attempt.
pub const UNORDERED_WINDOW: usize = 256;

pub(super) enum WorkerMsg {
    /// Attempt what is due, if this is the latest wake-up (see [`WorkerState::wake`]).
    Run(u64),
    /// Look again now, replacing any wake-up already scheduled: a job was queued, or
    /// delivery resumed.
    Nudge,
}

/// What a worker tells its queue.
pub(super) enum WorkerReport {
    /// The instance's outbox looked empty.
    Idle,
    /// The instance's delivery is paused: the worker waits for nothing.
    Parked,
    /// Every attempt since this instant failed, for longer than the configured time: the
    /// worker stopped attempting.
    Failing(DateTime<Utc>),
}

pub(super) struct DeliveryWorker {
    pub instance_id: String,
    pub config: WebhookConfig,
    pub epoch: SettingsEpoch,
    pub report: Arc<dyn Fn(WorkerReport) + Send + Sync>,
}

/// A worker's memory between attempts.
#[derive(Default)]
pub(super) struct WorkerState {
    /// The instance as last read from storage, with the [`SettingsEpoch`] read just
    /// before it (None until the first attempt, or while storage has no such instance).
    instance: Option<(u64, Instance)>,
    /// The start of the current run of failed attempts; None while the last attempt
    /// succeeded (or none was made).
    failing_since: Option<DateTime<Utc>>,
    /// Whether `failing_since` was read from the delivery records (once per worker, so
    /// a restart does not forget a run of failures).
    streak_read: bool,
    /// The number of the latest wake-up: a `Run` of an older one was overtaken by a
    /// nudge and is dropped, so a worker never runs two chains of attempts.
    wake: u64,
}

impl Actor for DeliveryWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Run(wake) if wake != state.wake => return Ok(()),
            WorkerMsg::Run(_) => {}
            WorkerMsg::Nudge => state.wake += 1,
        }
        let wake = state.wake;
        match self.attempt_next(state).await {
            Ok(Next::Now) => {
                let _ = myself.cast(WorkerMsg::Run(wake));
            }
            Ok(Next::After(delay)) => {
                myself.send_after(delay, move || WorkerMsg::Run(wake));
            }
            Ok(Next::Report(report)) => (self.report)(report),
            Err(err) => {
                tracing::warn!(instance = %self.instance_id, %err, "webhook outbox unavailable; retrying");
                myself.send_after(OUTBOX_RETRY, move || WorkerMsg::Run(wake));
            }
        }
        Ok(())
    }
}

/// The instance's ordering; the default for an instance that is gone.
fn ordering_of(instance: Option<&Instance>) -> WebhookOrdering {
    instance.map(|i| i.webhook.ordering).unwrap_or_default()
}

enum Next {
    Now,
    After(Duration),
    /// Nothing more to do until the queue says so.
    Report(WorkerReport),
}

impl DeliveryWorker {
    /// The instance's settings and the jobs they make the next candidates, the settings
    /// no older than any of the jobs: a job queued after a change of the settings (the
    /// epoch moved) is only attempted with the instance read after that change.
    async fn settings_and_jobs(
        &self,
        state: &mut WorkerState,
    ) -> Result<(Option<Instance>, Vec<WebhookJob>), StoreError> {
        loop {
            let epoch = self.epoch.current();
            if state
                .instance
                .as_ref()
                .is_none_or(|(read, _)| *read != epoch)
            {
                state.instance = self
                    .config
                    .storage
                    .instance_by_id(&self.instance_id)
                    .await?
                    .map(|instance| (epoch, instance));
            }
            let instance = state.instance.as_ref().map(|(_, i)| i.clone());
            if instance.as_ref().is_some_and(|i| i.webhook.paused) {
                return Ok((instance, Vec::new()));
            }
            let window = match ordering_of(instance.as_ref()) {
                WebhookOrdering::Strict => 1,
                WebhookOrdering::Unordered => UNORDERED_WINDOW,
            };
            let jobs = self
                .config
                .outbox
                .pending(&self.instance_id, window)
                .await?;
            if self.epoch.current() == epoch {
                return Ok((instance, jobs));
            }
        }
    }

    async fn attempt_next(&self, state: &mut WorkerState) -> Result<Next, StoreError> {
        let outbox = &self.config.outbox;
        let (instance, jobs) = self.settings_and_jobs(state).await?;
        if instance.as_ref().is_some_and(|i| i.webhook.paused) {
            return Ok(Next::Report(WorkerReport::Parked));
        }
        let ordering = ordering_of(instance.as_ref());
        if jobs.is_empty() {
            return Ok(Next::Report(WorkerReport::Idle));
        }
        let now = Utc::now();
        let Some(mut job) = jobs
            .iter()
            .find(|j| j.not_before.is_none_or(|t| t <= now))
            .cloned()
        else {
            let next = jobs
                .iter()
                .filter_map(|j| j.not_before)
                .min()
                .unwrap_or(now);
            return Ok(Next::After((next - now).to_std().unwrap_or_default()));
        };
        let attempt = job.attempts + 1;
        let record = |status, http_status, error: Option<String>, duration_ms| {
            let record = DeliveryRecord {
                event_id: job.event_id.clone(),
                event: job.event.clone(),
                attempt,
                status,
                http_status,
                error,
                duration_ms,
                created_at: Utc::now(),
            };
            if let Some(observe) = &self.config.on_result {
                observe(&record, instance.as_ref());
            }
            record
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
                state.failing_since = None;
                state.streak_read = true;
                return Ok(Next::Now);
            }
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
            ),
            Err(err) => (None, Some(err)),
        };
        job.attempts = attempt;
        let failing_since = self.failing_since(state, instance).await?;
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
            return Ok(self.pause_due(failing_since).unwrap_or(Next::Now));
        }
        outbox
            .record(
                &self.instance_id,
                record(DeliveryStatus::Retrying, http_status, error, duration_ms),
            )
            .await?;
        let jitter = if self.config.jitter {
            rand::rng().random_range(0.8..=1.2)
        } else {
            1.0
        };
        let delay = retry_delay(instance.webhook.retry_interval_ms, attempt, jitter);
        job.not_before = Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        outbox.update(&job).await?;
        if let Some(pause) = self.pause_due(failing_since) {
            return Ok(pause);
        }
        Ok(match ordering {
            WebhookOrdering::Strict => Next::After(delay),
            // Later jobs go on meanwhile; the pick above waits for this one's turn.
            WebhookOrdering::Unordered => Next::Now,
        })
    }

    /// The start of the run of failed attempts the attempt just failed belongs to. The
    /// first time, it is read back from the delivery records (newest first, down to the
    /// last delivered one or the last resume), so a run survives a restart.
    async fn failing_since(
        &self,
        state: &mut WorkerState,
        instance: &Instance,
    ) -> Result<DateTime<Utc>, StoreError> {
        if !state.streak_read {
            state.streak_read = true;
            state.failing_since = self.streak_from_records(instance).await?;
        }
        Ok(*state.failing_since.get_or_insert_with(Utc::now))
    }

    async fn streak_from_records(
        &self,
        instance: &Instance,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        const PAGE: u32 = 100;
        let resumed = instance.webhook.resumed_at;
        let mut since = None;
        let mut skip = 0;
        loop {
            let page = self
                .config
                .outbox
                .deliveries(&self.instance_id, PAGE, skip)
                .await?;
            for record in &page.items {
                let before_resume = resumed.is_some_and(|r| record.created_at <= r);
                if record.status == DeliveryStatus::Delivered || before_resume {
                    return Ok(since);
                }
                since = Some(record.created_at);
            }
            skip += u64::from(PAGE);
            if page.items.len() < PAGE as usize || skip >= page.total {
                return Ok(since);
            }
        }
    }

    /// Stop and report the endpoint as failing once its run of failures is long enough.
    fn pause_due(&self, failing_since: DateTime<Utc>) -> Option<Next> {
        let after = self.config.auto_pause_after?;
        let failing_for = (Utc::now() - failing_since).to_std().unwrap_or_default();
        (failing_for >= after).then_some(Next::Report(WorkerReport::Failing(failing_since)))
    }
}
