//! Usage counters, the periods limits count over, and the clock of the gateway.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use super::instance::{LimitPeriod, Limits};

/// The time of the gateway: the system clock in production, a settable one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The counters of the statistics API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub media_sent: u64,
    pub media_received: u64,
    pub total_media_size: u64,
    pub api_calls: u64,
    pub webhook_sent: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
        self.media_sent += o.media_sent;
        self.media_received += o.media_received;
        self.total_media_size += o.total_media_size;
        self.api_calls += o.api_calls;
        self.webhook_sent += o.webhook_sent;
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// One daily bucket: a day, the user, and the instance ("" for calls naming none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub day: NaiveDate,
    pub user_id: String,
    pub instance_id: String,
}

/// Which buckets to read; None means any.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<String>,
    pub instance_id: Option<String>,
    /// First day included.
    pub from: Option<NaiveDate>,
}

impl UsageFilter {
    pub fn matches(&self, k: &UsageKey) -> bool {
        self.user_id.as_ref().is_none_or(|u| *u == k.user_id)
            && self
                .instance_id
                .as_ref()
                .is_none_or(|i| *i == k.instance_id)
            && self.from.is_none_or(|f| k.day >= f)
    }
}

/// The first day of the limit period containing `day`.
pub fn period_start(period: LimitPeriod, day: NaiveDate) -> NaiveDate {
    match period {
        LimitPeriod::Day => day,
        LimitPeriod::Month => day.with_day(1).unwrap_or(day),
    }
}

/// When the limit period containing `now` ends.
pub fn period_end(period: LimitPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now.date_naive();
    let next = match period {
        LimitPeriod::Day => day.succ_opt(),
        LimitPeriod::Month => {
            let (y, m) = if day.month() == 12 {
                (day.year() + 1, 1)
            } else {
                (day.year(), day.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
        }
    };
    next.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |t| t.and_utc())
}

/// Which limits `usage` has reached (`maxMessagesSent` at the limit: the next send would
/// exceed it; `maxApiCalls` beyond it: the current call is already counted).
pub fn exceeded(limits: &Limits, usage: &Usage) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits
        .max_messages_sent
        .is_some_and(|max| usage.messages_sent >= max)
    {
        out.push("maxMessagesSent");
    }
    if limits
        .max_api_calls
        .is_some_and(|max| usage.api_calls > max)
    {
        out.push("maxApiCalls");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let d = NaiveDate::from_ymd_opt(2024, 12, 17).expect("date");
        assert_eq!(period_start(LimitPeriod::Day, d), d);
        assert_eq!(
            period_start(LimitPeriod::Month, d),
            NaiveDate::from_ymd_opt(2024, 12, 1).expect("date")
        );
        let now = d.and_hms_opt(15, 0, 0).expect("time").and_utc();
        assert_eq!(
            period_end(LimitPeriod::Month, now).date_naive(),
            NaiveDate::from_ymd_opt(2025, 1, 1).expect("date")
        );
        assert_eq!(
            period_end(LimitPeriod::Day, now).date_naive(),
            NaiveDate::from_ymd_opt(2024, 12, 18).expect("date")
        );
    }

    #[test]
    fn exceeded_limits() {
        let limits = Limits {
            max_messages_sent: Some(2),
            max_api_calls: Some(3),
            period: LimitPeriod::Day,
        };
        let mut u = Usage {
            messages_sent: 1,
            api_calls: 3,
            ..Usage::default()
        };
        assert!(exceeded(&limits, &u).is_empty());
        u.messages_sent = 2;
        u.api_calls = 4;
        assert_eq!(exceeded(&limits, &u), ["maxMessagesSent", "maxApiCalls"]);
    }
}
