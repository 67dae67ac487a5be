//! Server-side sessions: an opaque random id in the browser's cookie, the API token it was
//! opened with kept here (zeroizing), never sent back. Bounded in number and in time.
//!
//! Per process: on a PostgreSQL database that several instances share, a session opened on one
//! instance is unknown to the others (a load balancer needs sticky sessions for the dashboard).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A session unused for this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at most; signing in past this evicts the least recently used one, so signing
/// in again and again grows nothing.
pub const MAX_SESSIONS: usize = 10_000;

/// Bytes of randomness in a session id (and in a CSRF token).
const ID_BYTES: usize = 32;

/// The cookie's value: 32 random bytes, hex.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionId([u8; ID_BYTES]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionId {
    fn generate() -> SessionId {
        SessionId(coffer_crypto::random_array())
    }

    pub(crate) fn parse(s: &str) -> Option<SessionId> {
        let mut out = [0u8; ID_BYTES];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(SessionId(out))
    }

    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What a request gets from its session: the token to authenticate with again, and the
/// session's CSRF token.
pub(crate) struct Live {
    pub token: Zeroizing<String>,
    pub csrf: String,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live([redacted])")
    }
}

struct Session {
    token: Zeroizing<String>,
    /// Hex of 32 random bytes; every form of the session carries it.
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// How long sessions last and how many are kept.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
    pub max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle: IDLE_TIMEOUT,
            absolute: ABSOLUTE_TIMEOUT,
            max_sessions: MAX_SESSIONS,
        }
    }
}

pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionId, Session>>,
    limits: SessionLimits,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.lock().len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) >= self.limits.idle
            || now.duration_since(s.created) >= self.limits.absolute
    }

    /// Opens a session for `token` (already authenticated), evicting expired sessions and, at
    /// the cap, the least recently used one.
    pub(crate) fn open(&self, token: Zeroizing<String>) -> SessionId {
        let now = Instant::now();
        let id = SessionId::generate();
        let session = Session {
            token,
            csrf: hex::encode(coffer_crypto::random_array::<ID_BYTES>()),
            created: now,
            last_used: now,
        };
        let mut map = self.lock();
        if map.len() >= self.limits.max_sessions {
            map.retain(|_, s| !self.expired(s, now));
        }
        while map.len() >= self.limits.max_sessions.max(1) {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session `id`, touched; `None` (and the session dropped) if it expired.
    pub(crate) fn get(&self, id: &SessionId) -> Option<Live> {
        let now = Instant::now();
        let mut map = self.lock();
        let session = map.get_mut(id)?;
        if self.expired(session, now) {
            map.remove(id);
            return None;
        }
        session.last_used = now;
        Some(Live {
            token: session.token.clone(),
            csrf: session.csrf.clone(),
        })
    }

    pub(crate) fn end(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used() {
        let sessions = Sessions::new(SessionLimits {
            max_sessions: 2,
            ..SessionLimits::default()
        });
        let a = sessions.open(token("a"));
        let b = sessions.open(token("b"));
        assert!(sessions.get(&a).is_some(), "touches a");
        let c = sessions.open(token("c"));
        assert_eq!(sessions.len(), 2);
        assert!(sessions.get(&b).is_none(), "b was the least recently used");
        assert_eq!(sessions.get(&a).unwrap().token.as_str(), "a");
        assert_eq!(sessions.get(&c).unwrap().token.as_str(), "c");
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_redacted() {
        let sessions = Sessions::new(SessionLimits::default());
        let a = sessions.open(token("secret-token"));
        let b = sessions.open(token("secret-token"));
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
        assert_eq!(SessionId::parse(&a.to_hex()), Some(a.clone()));
        assert_eq!(SessionId::parse("zz"), None);
        let (la, lb) = (sessions.get(&a).unwrap(), sessions.get(&b).unwrap());
        assert_ne!(la.csrf, lb.csrf);
        assert_eq!(la.csrf.len(), 64);
        assert!(!format!("{a:?}{la:?}{sessions:?}").contains("secret-token"));
        assert!(!format!("{a:?}").contains(&a.to_hex()));
    }

    #[test]
    fn idle_and_absolute_limits_end_sessions() {
        let idle = Sessions::new(SessionLimits {
            idle: Duration::ZERO,
            ..SessionLimits::default()
        });
        let a = idle.open(token("a"));
        assert!(idle.get(&a).is_none());
        assert_eq!(idle.len(), 0, "dropped once found expired");
        let absolute = Sessions::new(SessionLimits {
            absolute: Duration::ZERO,
            ..SessionLimits::default()
        });
        let b = absolute.open(token("b"));
        assert!(absolute.get(&b).is_none());
    }
}
