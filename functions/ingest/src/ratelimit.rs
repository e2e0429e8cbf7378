//! Per-device token buckets: `rate` requests per second with a burst of twice that.

use std::collections::HashMap;
use std::sync::Mutex;

use iotstream_core::Ts;

pub struct RateLimiter {
    /// Requests per second per device; 0 turns limiting off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = per_second as f64;
        RateLimiter {
            rate,
            burst: (rate * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `device` at `now`; false when the bucket is empty.
    pub fn allow(&self, device: &str, now: Ts) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().expect("rate limiter");
        if buckets.len() > 1_000_000 {
            buckets.clear();
        }
        let (tokens, at) = buckets
            .entry(device.to_owned())
            .or_insert((self.burst, now.millis()));
        let elapsed = (now.millis() - *at).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *at = now.millis();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let l = RateLimiter::new(2);
        let t = Ts(0);
        assert!((0..4).all(|_| l.allow("d", t)), "burst of 4");
        assert!(!l.allow("d", t));
        assert!(l.allow("other", t), "buckets are per device");
        assert!(l.allow("d", Ts(500)), "one token back after 0.5 s");
        assert!(!l.allow("d", Ts(500)));
    }

    #[test]
    fn zero_means_unlimited() {
        let l = RateLimiter::new(0);
        assert!((0..10_000).all(|_| l.allow("d", Ts(0))));
    }
}
