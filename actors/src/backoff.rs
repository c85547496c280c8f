//! Restart backoff: exponential delays with jitter inside a restart budget.
//!
//! A pure struct with no clock inside: callers pass `now`, so the supervisor uses the
//! tokio clock and tests drive it with paused time. Jitter comes from a seeded generator,
//! so a test that fixes the seed sees the same delays every run.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// How far a delay may stray from its nominal value, both ways. Jitter spreads the
/// restarts of many sessions that failed together (a network blip) so they do not all
/// reconnect in the same instant.
pub const JITTER: f64 = 0.2;

/// Shape of the restart policy of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first restart.
    pub base: Duration,
    /// No delay is longer than this, jitter included.
    pub max: Duration,
    /// Restarts allowed inside `window`; one more and the instance is `failed`.
    pub budget: u32,
    /// The sliding window the budget counts over.
    pub window: Duration,
}

impl Default for BackoffConfig {
    /// One second doubling up to a minute, at most 5 restarts in 10 minutes: a session
    /// that keeps failing faster than that needs a person, not another retry.
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            budget: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// The restart history of one instance.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// When each restart inside the window was granted, oldest first.
    restarts: VecDeque<Instant>,
    rng: StdRng,
}

impl Backoff {
    /// A backoff whose jitter is seeded from the thread's random generator.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff::with_seed(config, rand::rng().random())
    }

    /// A backoff with deterministic jitter, for tests.
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            restarts: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The delay before the next restart, or `None` when `budget` restarts already
    /// happened inside the window ending at `now` (the instance should be marked failed).
    /// A granted restart counts against the budget.
    pub fn next(&mut self, now: Instant) -> Option<Duration> {
        let jitter = self.rng.random_range(-JITTER..=JITTER);
        self.next_with_jitter(now, jitter)
    }

    /// [`Backoff::next`] with the jitter given: `jitter` is a fraction in
    /// `[-JITTER, JITTER]` (clamped) applied to the nominal delay.
    pub fn next_with_jitter(&mut self, now: Instant, jitter: f64) -> Option<Duration> {
        self.forget_before(now);
        if self.restarts.len() >= self.config.budget as usize {
            return None;
        }
        self.restarts.push_back(now);
        let exponent = (self.restarts.len() - 1).min(31) as u32;
        let nominal = self
            .config
            .base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.config.max);
        let factor = 1.0 + jitter.clamp(-JITTER, JITTER);
        Some(nominal.mul_f64(factor).min(self.config.max))
    }

    /// Restarts granted inside the window ending at `now`.
    pub fn attempts(&mut self, now: Instant) -> u32 {
        self.forget_before(now);
        self.restarts.len() as u32
    }

    /// Forgets every restart: the budget is whole again.
    pub fn reset(&mut self) {
        self.restarts.clear();
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(first) = self.restarts.front() {
            if now.saturating_duration_since(*first) >= self.config.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            budget: 5,
            window: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grows_exponentially_without_jitter() {
        let mut backoff = Backoff::with_seed(config(), 1);
        let delays: Vec<_> = (0..4)
            .map(|_| backoff.next_with_jitter(Instant::now(), 0.0))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(|ms| Some(Duration::from_millis(ms)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn caps_at_max() {
        let mut backoff = Backoff::with_seed(
            BackoffConfig {
                budget: 50,
                ..config()
            },
            1,
        );
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = backoff
                .next_with_jitter(Instant::now(), JITTER)
                .expect("inside the budget");
            assert!(last <= Duration::from_millis(1_000));
        }
        assert_eq!(last, Duration::from_millis(1_000));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_bounds() {
        let mut backoff = Backoff::with_seed(
            BackoffConfig {
                budget: 1,
                ..config()
            },
            7,
        );
        let mut seen = Vec::new();
        for _ in 0..200 {
            let delay = backoff
                .next(Instant::now())
                .expect("budget reset each turn");
            assert!(delay >= Duration::from_millis(80), "{delay:?}");
            assert!(delay <= Duration::from_millis(120), "{delay:?}");
            seen.push(delay);
            backoff.reset();
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 10, "jitter should vary: {seen:?}");
        assert_eq!(
            backoff.next_with_jitter(Instant::now(), 5.0),
            Some(Duration::from_millis(120)),
            "out-of-range jitter is clamped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_delays() {
        let mut a = Backoff::with_seed(config(), 42);
        let mut b = Backoff::with_seed(config(), 42);
        for _ in 0..5 {
            let now = Instant::now();
            assert_eq!(a.next(now), b.next(now));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_exhausts_inside_window() {
        let mut backoff = Backoff::with_seed(config(), 1);
        for _ in 0..5 {
            assert!(backoff.next(Instant::now()).is_some());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(backoff.next(Instant::now()), None);
        assert_eq!(backoff.attempts(Instant::now()), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let mut backoff = Backoff::with_seed(config(), 1);
        for _ in 0..5 {
            assert!(backoff.next(Instant::now()).is_some());
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // Now 50 s after the first restart: still all five inside the window.
        assert_eq!(backoff.next(Instant::now()), None);
        // 60 s after the first restart it leaves the window: one slot frees up.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(backoff.attempts(Instant::now()), 4);
        assert!(backoff.next(Instant::now()).is_some());
        assert_eq!(backoff.next(Instant::now()), None);
        // Long after, everything is forgotten and delays start small again.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(
            backoff.next_with_jitter(Instant::now(), 0.0),
            Some(Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reset_restores_budget_and_base_delay() {
        let mut backoff = Backoff::with_seed(config(), 1);
        for _ in 0..5 {
            backoff.next(Instant::now());
        }
        assert_eq!(backoff.next(Instant::now()), None);
        backoff.reset();
        assert_eq!(
            backoff.next_with_jitter(Instant::now(), 0.0),
            Some(Duration::from_millis(100))
        );
    }
}
