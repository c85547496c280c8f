//! Abuse limits kept in memory: [`LoginThrottle`] (password guessing, per email and per
//! client address) and [`RateLimiter`] (authenticated calls per user and minute).
//!
//! Both are pure over an injected `now: Instant`, so their rules are tested without
//! waiting, and both are bounded: at most [`MAX_TRACKED`] keys, expired entries pruned
//! first, then the entry closest to expiry evicted. They are per process: servers behind
//! one load balancer each count on their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most keys one limiter tracks. At ~100 bytes an entry this caps each map at a few MB
/// however many emails, addresses or users an attacker sprays.
pub const MAX_TRACKED: usize = 50_000;

/// A client address may fail this many times more often than one email: several users
/// can share an address (NAT, a reverse proxy), and one typo each must not lock them all.
pub const ADDRESS_FAILURE_FACTOR: u32 = 4;

/// The fixed window of [`RateLimiter`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Takes the lock even if a thread panicked while holding it: the maps hold counters
/// only, so a half-done update is harmless.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whole seconds to announce in `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Makes room for one more key: prunes entries `expired` says are over, then, if the map
/// is still full, evicts the one with the smallest `expiry`.
fn make_room<V>(
    map: &mut HashMap<String, V>,
    expired: impl Fn(&V) -> bool,
    expiry: impl Fn(&V) -> Instant,
) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_TRACKED
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| expiry(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

/// The limiters of one server, as configured.
#[derive(Clone)]
pub struct Limits {
    pub login: LoginThrottle,
    pub calls: RateLimiter,
}

impl Limits {
    pub fn new(config: &crate::config::Config) -> Self {
        Limits {
            login: LoginThrottle::new(config.login_max_failures, config.login_lockout),
            calls: RateLimiter::new(config.rate_limit_per_minute),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// The last failure plus the lockout: the entry is forgotten after it.
    expires: Instant,
}

/// Login attempts per email and per client address.
///
/// Every attempt counts as a failure when it starts (so parallel guesses cannot overtake
/// the limit) and is taken back when it succeeds or is not judged (storage down). An email
/// with `max_failures` failures, each less than `lockout` after the previous one, is
/// refused for `lockout` after the last of them, without checking the password; an
/// address gets [`ADDRESS_FAILURE_FACTOR`] times as many. A success forgets the email.
#[derive(Clone)]
pub struct LoginThrottle {
    max_failures: u32,
    lockout: Duration,
    /// A std `Mutex`: held for a few map operations, never across an `.await`.
    failures: Arc<Mutex<HashMap<String, Failures>>>,
}

fn email_key(email: &str) -> String {
    format!("email:{}", email.trim().to_lowercase())
}

fn address_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

impl LoginThrottle {
    /// `max_failures == 0` turns the throttle off.
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        LoginThrottle {
            max_failures,
            lockout,
            failures: Arc::default(),
        }
    }

    fn keys(email: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
        let mut keys = vec![(email_key(email), 1)];
        if let Some(ip) = ip {
            keys.push((address_key(ip), ADDRESS_FAILURE_FACTOR));
        }
        keys
    }

    /// Starts an attempt: counts it as a failure of the email and the address, or refuses
    /// it with how long to wait when either is locked out.
    pub fn begin(&self, email: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let keys = Self::keys(email, ip);
        let mut map = lock(&self.failures);
        let mut wait = None;
        for (key, factor) in &keys {
            if let Some(f) = map.get(key)
                && f.expires > now
                && f.count >= self.max_failures.saturating_mul(*factor)
            {
                let left = f.expires - now;
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        let expires = now + self.lockout;
        for (key, _) in keys {
            if !map.contains_key(&key) {
                make_room(&mut map, |f| f.expires <= now, |f| f.expires);
            }
            let entry = map.entry(key).or_insert(Failures { count: 0, expires });
            if entry.expires <= now {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.expires = expires;
        }
        Ok(())
    }

    /// The attempt succeeded: the email starts afresh; the address gets its count back.
    pub fn succeeded(&self, email: &str, ip: Option<IpAddr>) {
        let mut map = lock(&self.failures);
        map.remove(&email_key(email));
        if let Some(ip) = ip {
            Self::take_back(&mut map, &address_key(ip));
        }
    }

    /// The attempt was not judged (storage unavailable, an internal error): it does not
    /// count.
    pub fn not_judged(&self, email: &str, ip: Option<IpAddr>) {
        let mut map = lock(&self.failures);
        for (key, _) in Self::keys(email, ip) {
            Self::take_back(&mut map, &key);
        }
    }

    fn take_back(map: &mut HashMap<String, Failures>, key: &str) {
        if let Some(f) = map.get_mut(key) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                map.remove(key);
            }
        }
    }

    /// How many emails and addresses are tracked.
    pub fn tracked(&self) -> usize {
        lock(&self.failures).len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    calls: u32,
}

/// Authenticated calls per user: at most `per_minute` in each fixed one-minute window that
/// starts with the user's first call. `per_minute == 0` turns it off.
#[derive(Clone)]
pub struct RateLimiter {
    per_minute: u32,
    /// A std `Mutex`: held for one map operation, never across an `.await`.
    windows: Arc<Mutex<HashMap<String, Window>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Arc::default(),
        }
    }

    /// Counts one call of `user_id`, or refuses it with how long until its window ends.
    pub fn check(&self, user_id: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut map = lock(&self.windows);
        if !map.contains_key(user_id) {
            make_room(
                &mut map,
                |w| now.saturating_duration_since(w.start) >= RATE_WINDOW,
                |w| w.start,
            );
        }
        let window = map.entry(user_id.to_owned()).or_insert(Window {
            start: now,
            calls: 0,
        });
        if now.saturating_duration_since(window.start) >= RATE_WINDOW {
            *window = Window {
                start: now,
                calls: 0,
            };
        }
        if window.calls >= self.per_minute {
            return Err((window.start + RATE_WINDOW).saturating_duration_since(now));
        }
        window.calls += 1;
        Ok(())
    }

    /// How many users are tracked.
    pub fn tracked(&self) -> usize {
        lock(&self.windows).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn locks_an_email_after_max_failures_until_the_lockout_passes() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.begin("A@x.io", None, t0 + Duration::from_secs(i)).is_ok());
        }
        // Case and spaces do not make a new email.
        let wait = t
            .begin(" a@X.io", None, t0 + Duration::from_secs(10))
            .expect_err("locked");
        assert_eq!(wait, Duration::from_secs(52));
        assert!(
            t.begin("a@x.io", None, t0 + Duration::from_secs(62))
                .is_ok()
        );
    }

    #[test]
    fn a_success_forgets_the_email_and_an_unjudged_attempt_does_not_count() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.begin("a@x.io", Some(IP), now).expect("first");
        t.not_judged("a@x.io", Some(IP));
        t.begin("a@x.io", Some(IP), now).expect("second");
        t.succeeded("a@x.io", Some(IP));
        assert_eq!(t.tracked(), 0);
        t.begin("a@x.io", Some(IP), now).expect("third");
        t.begin("a@x.io", Some(IP), now).expect("fourth");
        assert!(t.begin("a@x.io", Some(IP), now).is_err());
    }

    #[test]
    fn an_address_is_locked_across_emails() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..2 * ADDRESS_FAILURE_FACTOR {
            t.begin(&format!("u{i}@x.io"), Some(IP), now)
                .expect("allowed");
        }
        assert!(t.begin("new@x.io", Some(IP), now).is_err());
        assert!(t.begin("new@x.io", None, now).is_ok());
    }

    #[test]
    fn the_login_map_stays_bounded() {
        let t = LoginThrottle::new(5, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            let _ = t.begin(&format!("u{i}@x.io"), None, now);
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
    }

    #[test]
    fn rate_limit_per_user_and_window() {
        let r = RateLimiter::new(2);
        let t0 = Instant::now();
        r.check("u1", t0).expect("1");
        r.check("u1", t0).expect("2");
        let wait = r
            .check("u1", t0 + Duration::from_secs(15))
            .expect_err("limited");
        assert_eq!(wait, Duration::from_secs(45));
        r.check("u2", t0)
            .expect("another user has their own budget");
        r.check("u1", t0 + RATE_WINDOW).expect("a new window");
        assert!(RateLimiter::new(0).check("u1", t0).is_ok());
    }

    #[test]
    fn the_rate_map_stays_bounded() {
        let r = RateLimiter::new(1);
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            let _ = r.check(&format!("u{i}"), now);
        }
        assert_eq!(r.tracked(), MAX_TRACKED);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
