//! Bounds the cost of failed authentications: an address that fails too often within a window
//! has its further failures answered 429 (and not audited one by one) until the window passes.
//! Its tokens are still checked, so a valid token is never refused because of other requests'
//! failures from the same address (a proxy, a NAT).
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
/// Addresses tracked at most; past this, windows that ended are dropped, and if every window is
/// still live an address not tracked counts as over its budget until some end (memory stays
/// bounded, and filling the table does not open a way around the limit: over the budget,
/// valid tokens still work).
const MAX_TRACKED: usize = 100_000;

/// IPv6 clients usually hold a whole /64, so one /64 is one budget; IPv4-mapped addresses count
/// as their IPv4 address.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// `Some(wait)` if `addr` is over its budget now.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let addr = key(addr);
        let now = Instant::now();
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some((start, count)) = map.get(&addr) else {
            // Untracked because the table is full (see `MAX_TRACKED`): over the budget.
            return (map.len() >= MAX_TRACKED).then_some(WINDOW);
        };
        let elapsed = now.duration_since(*start);
        (elapsed < WINDOW && *count >= MAX_FAILURES).then(|| WINDOW - elapsed)
    }

    /// Records a failed authentication; returns true when this failure used up the budget (the
    /// moment worth logging).
    pub fn failed(&self, addr: IpAddr) -> bool {
        let addr = key(addr);
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                // Every tracked window is live: keep the addresses already being slowed and
                // do not track this one, rather than forgetting them all.
                return false;
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

    #[test]
    fn one_ipv6_slash_64_is_one_budget() {
        let limiter = AuthLimiter::default();
        for i in 0..MAX_FAILURES {
            let addr: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            limiter.failed(addr);
        }
        assert!(
            limiter
                .blocked("2001:db8:1:2::ffff".parse().unwrap())
                .is_some()
        );
        assert!(
            limiter
                .blocked("2001:db8:1:3::1".parse().unwrap())
                .is_none()
        );
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            limiter.failed(mapped);
        }
        assert!(limiter.blocked("192.0.2.9".parse().unwrap()).is_some());
    }
}
