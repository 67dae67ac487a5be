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
/// as their IPv4 address. The listener groups connections the same way.
pub(crate) fn key(addr: IpAddr) -> IpAddr {
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

#[derive(Debug)]
pub struct AuthLimiter {
    table: Mutex<Table>,
    capacity: usize,
}

#[derive(Debug)]
struct Table {
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// When windows that ended were last dropped (while the table was full).
    pruned: Instant,
}

impl Default for AuthLimiter {
    fn default() -> AuthLimiter {
        AuthLimiter::with_capacity(MAX_TRACKED)
    }
}

impl Table {
    /// Drops the windows that ended, at most once a second: the table is full only under a
    /// flood from many addresses, when a scan per request would cost more than it saves.
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.pruned) >= PRUNE_EVERY {
            self.pruned = now;
            self.failures
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
    }
}

/// How often a full table drops its ended windows at most.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

impl AuthLimiter {
    fn with_capacity(capacity: usize) -> AuthLimiter {
        AuthLimiter {
            table: Mutex::new(Table {
                failures: HashMap::new(),
                pruned: Instant::now(),
            }),
            capacity,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait)` if `addr` is over its budget now.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let addr = key(addr);
        let now = Instant::now();
        let mut table = self.table();
        if let Some((start, count)) = table.failures.get(&addr) {
            let elapsed = now.duration_since(*start);
            return (elapsed < WINDOW && *count >= MAX_FAILURES).then(|| WINDOW - elapsed);
        }
        if table.failures.len() < self.capacity {
            return None;
        }
        // Untracked because the table is full (see `MAX_TRACKED`): over the budget, unless
        // windows that ended make room.
        table.prune(now);
        (table.failures.len() >= self.capacity).then_some(WINDOW)
    }

    /// Records a failed authentication; returns true when this failure used up the budget (the
    /// moment worth logging).
    pub fn failed(&self, addr: IpAddr) -> bool {
        let addr = key(addr);
        let now = Instant::now();
        let mut table = self.table();
        if table.failures.len() >= self.capacity && !table.failures.contains_key(&addr) {
            table.prune(now);
            if table.failures.len() >= self.capacity {
                // Every tracked window is live: keep the addresses already being slowed and
                // do not track this one (it counts as over the budget meanwhile).
                return false;
            }
        }
        let entry = table.failures.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == MAX_FAILURES
    }

    /// Ages every window by `by` (tests: the passing of time without waiting for it).
    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut table = self.table();
        for (start, _) in table.failures.values_mut() {
            *start -= by;
        }
        table.pruned -= by;
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
    fn a_full_table_counts_new_addresses_over_the_budget_until_windows_end() {
        let limiter = AuthLimiter::with_capacity(3);
        let addr = |i: u8| -> IpAddr { format!("192.0.2.{i}").parse().unwrap() };
        for i in 1..=3 {
            limiter.failed(addr(i));
            assert!(
                limiter.blocked(addr(i)).is_none(),
                "one failure is within budget"
            );
        }
        // Full: an address it cannot track counts as over the budget (never as unlimited).
        assert!(limiter.blocked(addr(4)).is_some());
        assert!(!limiter.failed(addr(4)));
        assert!(limiter.blocked(addr(4)).is_some());
        // Once the windows have ended, the table makes room again.
        limiter.age(WINDOW + PRUNE_EVERY);
        assert!(limiter.blocked(addr(4)).is_none());
        limiter.failed(addr(4));
        assert!(limiter.blocked(addr(5)).is_none(), "room for more");
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
