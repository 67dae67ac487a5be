//! Slows down token guessing: an address that fails authentication too often within a window is
//! refused (429) until the window passes, without even checking its token.
//!
//! Kept in memory, per process: an attacker spreading guesses over many control-plane
//! instances gets each instance's budget. Tokens carry 256 random bits, so the limiter is about
//! noise and cost, not about making guessing feasible or not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make per window.
pub const MAX_FAILURES: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past this, windows that ended are dropped first, and if every
/// window is live the table is cleared (failing open on memory rather than on every client).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// `Some(wait)` if `addr` is over its budget now.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = map.get(&addr)?;
        let elapsed = now.duration_since(*start);
        (elapsed < WINDOW && *count >= MAX_FAILURES).then(|| WINDOW - elapsed)
    }

    /// Records a failed authentication; returns true when this failure used up the budget (the
    /// moment worth logging).
    pub fn failed(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == MAX_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_budget_and_only_that_address() {
        let limiter = AuthLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 1..=MAX_FAILURES {
            assert!(limiter.blocked(a).is_none());
            assert_eq!(limiter.failed(a), i == MAX_FAILURES);
        }
        let wait = limiter.blocked(a).expect("blocked");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(limiter.blocked(b).is_none());
    }
}
