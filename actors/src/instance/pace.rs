//! [`Pace`]: when the next paced send of an instance may go (`sendRate`). A pure
//! struct: the actor gives it the time and the jitter, so tests drive both.

use chrono::{DateTime, Duration, Utc};

/// How much longer than the even gap a pause may be, as a fraction of it: the gap
/// between two paced sends is `60 s / rate` times 1 to 1 + `JITTER`. Never shorter,
/// so the rate is never exceeded; uneven, so the sends do not tick like a machine.
pub const JITTER: f64 = 0.3;

/// The earliest time the next paced send may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pace {
    next_at: Option<DateTime<Utc>>,
}

impl Pace {
    /// How long until the next send may go at `now`; zero when it may go now.
    pub fn wait(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.next_at
            .and_then(|at| (at - now).to_std().ok())
            .unwrap_or_default()
    }

    /// A send went at `now` under `rate` messages per minute; `jitter` (0 to 1, a
    /// random draw) stretches the gap to the next by up to [`JITTER`] of it.
    pub fn sent(&mut self, now: DateTime<Utc>, rate: u32, jitter: f64) {
        self.next_at = Some(now + gap(rate, jitter));
    }
}

/// The pause after a send at `rate` messages per minute, with `jitter` in 0..=1.
pub fn gap(rate: u32, jitter: f64) -> Duration {
    let even_ms = 60_000.0 / f64::from(rate.max(1));
    let ms = even_ms * (1.0 + JITTER * jitter.clamp(0.0, 1.0));
    Duration::milliseconds(ms.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn the_first_send_goes_at_once() {
        assert_eq!(Pace::default().wait(at(0)), std::time::Duration::ZERO);
    }

    #[test]
    fn the_rate_holds_whatever_the_jitter() {
        // 6 a minute: 10 s apart at least, 13 s at most.
        assert_eq!(gap(6, 0.0), Duration::seconds(10));
        assert_eq!(gap(6, 1.0), Duration::seconds(13));
        assert_eq!(gap(6, 7.0), Duration::seconds(13), "a draw out of range");
        let mut pace = Pace::default();
        pace.sent(at(0), 6, 0.5);
        assert_eq!(pace.wait(at(0)), std::time::Duration::from_millis(11_500));
        assert_eq!(pace.wait(at(11)), std::time::Duration::from_millis(500));
        assert_eq!(pace.wait(at(12)), std::time::Duration::ZERO);
    }

    #[test]
    fn sixty_sends_at_sixty_a_minute_take_a_minute_or_more() {
        let mut pace = Pace::default();
        let mut now = at(0);
        for i in 0..60 {
            now += Duration::from_std(pace.wait(now)).expect("wait");
            pace.sent(now, 60, f64::from(i % 4) / 3.0);
        }
        assert!(now - at(0) >= Duration::seconds(59), "{}", now - at(0));
        assert!(now - at(0) <= Duration::seconds(77), "{}", now - at(0));
    }
}
