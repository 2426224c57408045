//! Per-source response-rate limiting for UDP (see [`RateLimitConfig`]): a token bucket per
//! IPv4 address or IPv6 /64, with time passed in so it is tested without sleeping.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// What to do with one response to a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Within budget: answer.
    Allow,
    /// Over budget, slip turn: answer with a minimal `TC=1` reply.
    Slip,
    /// Over budget: send nothing.
    Drop,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

/// Token buckets keyed by source prefix.
#[derive(Debug)]
pub struct ResponseRateLimiter {
    cfg: RateLimitConfig,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
    overflow_limited: u32,
}

/// How often idle sources are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl ResponseRateLimiter {
    /// A limiter with no history.
    pub fn new(cfg: RateLimitConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            last_sweep: None,
            overflow_limited: 0,
        }
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Charge one response to `src` at time `now`.
    pub fn check(&mut self, src: IpAddr, now: Instant) -> RateDecision {
        if self.cfg.responses_per_second == 0 {
            return RateDecision::Allow;
        }
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if due {
            self.sweep(now);
        }
        let key = source_key(src);
        let rate = f64::from(self.cfg.responses_per_second);
        let burst = f64::from(self.cfg.burst);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cfg.max_sources {
            self.sweep(now);
            if self.buckets.len() >= self.cfg.max_sources {
                self.overflow_limited = self.overflow_limited.wrapping_add(1);
                return self.limited(self.overflow_limited);
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
            limited: 0,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision::Allow
        } else {
            bucket.limited = bucket.limited.wrapping_add(1);
            let n = bucket.limited;
            self.limited(n)
        }
    }

    fn limited(&self, n: u32) -> RateDecision {
        if self.cfg.slip > 0 && n.is_multiple_of(self.cfg.slip) {
            RateDecision::Slip
        } else {
            RateDecision::Drop
        }
    }

    /// Forget sources whose bucket has refilled (they are indistinguishable from new ones).
    fn sweep(&mut self, now: Instant) {
        let rate = f64::from(self.cfg.responses_per_second);
        let burst = f64::from(self.cfg.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        self.last_sweep = Some(now);
    }
}

/// IPv4 (also when mapped into IPv6): the address. IPv6: its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, slip: u32) -> ResponseRateLimiter {
        ResponseRateLimiter::new(RateLimitConfig {
            responses_per_second: rate,
            burst,
            slip,
            max_sources: 4,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_limited_then_refills() {
        let mut l = limiter(10, 3, 0);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.check(a, t0), RateDecision::Allow);
        }
        assert_eq!(l.check(a, t0), RateDecision::Drop);
        // Another source is unaffected.
        assert_eq!(l.check(ip("192.0.2.2"), t0), RateDecision::Allow);
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(a, t1), RateDecision::Allow);
        assert_eq!(l.check(a, t1), RateDecision::Drop);
    }

    #[test]
    fn slip_answers_every_nth_limited_query() {
        let mut l = limiter(1, 1, 2);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(l.check(a, t), RateDecision::Allow);
        let got: Vec<RateDecision> = (0..4).map(|_| l.check(a, t)).collect();
        assert_eq!(
            got,
            vec![
                RateDecision::Drop,
                RateDecision::Slip,
                RateDecision::Drop,
                RateDecision::Slip
            ]
        );
        let mut always_tc = limiter(1, 1, 1);
        always_tc.check(a, t);
        assert_eq!(always_tc.check(a, t), RateDecision::Slip);
    }

    #[test]
    fn ipv6_sources_share_a_64() {
        let mut l = limiter(1, 1, 0);
        let t = Instant::now();
        assert_eq!(l.check(ip("2001:db8:1:2::1"), t), RateDecision::Allow);
        assert_eq!(l.check(ip("2001:db8:1:2::ffff"), t), RateDecision::Drop);
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t), RateDecision::Allow);
        // A mapped IPv4 address counts as that IPv4 address.
        assert_eq!(l.check(ip("::ffff:192.0.2.9"), t), RateDecision::Allow);
        assert_eq!(l.check(ip("192.0.2.9"), t), RateDecision::Drop);
    }

    #[test]
    fn table_is_bounded_and_idle_sources_are_forgotten() {
        let mut l = limiter(10, 2, 0);
        let t0 = Instant::now();
        for i in 1..=4 {
            assert_eq!(
                l.check(ip(&format!("192.0.2.{i}")), t0),
                RateDecision::Allow
            );
        }
        assert_eq!(l.tracked(), 4);
        // Full: a fifth source is treated as limited.
        assert_eq!(l.check(ip("192.0.2.5"), t0), RateDecision::Drop);
        // Once the others have refilled they are forgotten and the newcomer fits.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check(ip("192.0.2.5"), t1), RateDecision::Allow);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn disabled_allows_everything() {
        let mut l = limiter(0, 0, 0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(ip("192.0.2.1"), t), RateDecision::Allow);
        }
        assert_eq!(l.tracked(), 0);
    }
}
