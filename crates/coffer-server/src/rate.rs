//! The optional per-service-token rate limit on the runtime API (`--runtime-rate-limit`): a
//! token bucket per service token that refills at the rate and holds a second's worth. Off by
//! default. Applied after the token is authenticated, so only tokens that exist get a bucket;
//! a read over the limit is answered 429 `read_rate_limited` with `Retry-After`, before any
//! secret is looked up.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coffer_types::TokenId;

/// Buckets kept at most; past it, the full ones (tokens that have not read for a second) are
/// dropped, and if none is, the table is emptied (every token starts again with a full bucket).
const MAX_BUCKETS: usize = 100_000;

/// Reads per second one service token may make, on average; it may read up to a second's
/// worth at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeRate {
    pub per_second: NonZeroU32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub(crate) struct ReadLimiter {
    rate: f64,
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

impl ReadLimiter {
    pub(crate) fn new(rate: RuntimeRate) -> ReadLimiter {
        ReadLimiter {
            rate: f64::from(rate.per_second.get()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one read from `token`'s bucket, or says how long until one is there.
    pub(crate) fn take(&self, token: TokenId) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&token) {
            let rate = self.rate;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let b = buckets.entry(token).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_a_seconds_worth_then_waits_and_others_are_apart() {
        let limiter = ReadLimiter::new(RuntimeRate {
            per_second: NonZeroU32::new(5).unwrap(),
        });
        let a = TokenId::from_bytes([1; 16]);
        let b = TokenId::from_bytes([2; 16]);
        for _ in 0..5 {
            assert!(limiter.take(a).is_ok());
        }
        let wait = limiter.take(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(limiter.take(b).is_ok(), "another token has its own bucket");
    }
}
