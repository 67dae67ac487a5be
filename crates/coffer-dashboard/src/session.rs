//! Server-side sessions: an opaque random id in the browser's cookie, the API token it was
//! opened with kept here (zeroizing), never sent back. Bounded in number and in time.
//!
//! Per process: on a PostgreSQL database that several instances share, a session opened on one
//! instance is unknown to the others (a load balancer needs sticky sessions for the dashboard).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coffer_types::{AccountId, TokenId};
use zeroize::Zeroizing;

/// A session unused for this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at most; past this a sign-in is refused (no one else's session is ended to
/// make room).
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions one API token keeps at most; a sign-in past this ends that token's oldest one.
pub const MAX_SESSIONS_PER_TOKEN: usize = 5;
/// Sessions one account keeps at most (all its tokens); past this a sign-in is refused.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 200;

/// Bytes of randomness in a session id (and in a CSRF token).
const ID_BYTES: usize = 32;

/// The cookie's value: 32 random bytes, hex.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    token_id: TokenId,
    account: AccountId,
    created: Instant,
    last_used: Instant,
    /// Single-use nonces of the forms that mint a token, newest last (see [`Sessions::issue_once`]).
    once: VecDeque<[u8; ONCE_BYTES]>,
}

/// Bytes of a single-use form nonce.
const ONCE_BYTES: usize = 16;
/// Single-use nonces a session keeps; past it the oldest page's form stops working.
const MAX_ONCE: usize = 32;

/// Who a session is opened for: the token (already authenticated) and what it is.
pub(crate) struct Owner {
    pub token: Zeroizing<String>,
    pub token_id: TokenId,
    pub account: AccountId,
}

/// Why a sign-in opened no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The process keeps [`SessionLimits::max_sessions`] already.
    Full,
    /// The token's account keeps [`SessionLimits::per_account`] already.
    AccountFull,
}

/// How long sessions last and how many are kept.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
    /// In all; a sign-in past it is refused.
    pub max_sessions: usize,
    /// Per API token; a sign-in past it ends the token's oldest session.
    pub per_token: usize,
    /// Per account; a sign-in past it is refused.
    pub per_account: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle: IDLE_TIMEOUT,
            absolute: ABSOLUTE_TIMEOUT,
            max_sessions: MAX_SESSIONS,
            per_token: MAX_SESSIONS_PER_TOKEN,
            per_account: MAX_SESSIONS_PER_ACCOUNT,
        }
    }
}

/// The sessions and their indexes, so that opening, finding and ending one costs
/// O(log n) (and at most `per_token` for the token's list), never a scan of all.
#[derive(Default)]
struct Table {
    map: HashMap<SessionId, Session>,
    /// By last use: the idle ones first.
    by_use: BTreeSet<(Instant, SessionId)>,
    /// By sign-in: the oldest first.
    by_age: BTreeSet<(Instant, SessionId)>,
    /// A token's sessions, oldest first (at most `per_token`).
    by_token: HashMap<TokenId, Vec<SessionId>>,
    /// How many sessions each account has.
    by_account: HashMap<AccountId, usize>,
}

impl Table {
    fn insert(&mut self, id: SessionId, s: Session) {
        self.by_use.insert((s.last_used, id.clone()));
        self.by_age.insert((s.created, id.clone()));
        self.by_token
            .entry(s.token_id)
            .or_default()
            .push(id.clone());
        *self.by_account.entry(s.account).or_default() += 1;
        self.map.insert(id, s);
    }

    fn remove(&mut self, id: &SessionId) -> Option<Session> {
        let s = self.map.remove(id)?;
        self.by_use.remove(&(s.last_used, id.clone()));
        self.by_age.remove(&(s.created, id.clone()));
        if let Some(ids) = self.by_token.get_mut(&s.token_id) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_token.remove(&s.token_id);
            }
        }
        if let Some(n) = self.by_account.get_mut(&s.account) {
            *n -= 1;
            if *n == 0 {
                self.by_account.remove(&s.account);
            }
        }
        Some(s)
    }

    fn touch(&mut self, id: &SessionId, now: Instant) {
        if let Some(s) = self.map.get_mut(id) {
            self.by_use.remove(&(s.last_used, id.clone()));
            s.last_used = now;
            self.by_use.insert((now, id.clone()));
        }
    }

    /// Ends the expired sessions: the front of each index, so only what is removed is visited.
    fn purge(&mut self, limits: &SessionLimits, now: Instant) {
        while let Some((used, id)) = self.by_use.first().cloned()
            && now.duration_since(used) >= limits.idle
        {
            self.remove(&id);
        }
        while let Some((created, id)) = self.by_age.first().cloned()
            && now.duration_since(created) >= limits.absolute
        {
            self.remove(&id);
        }
    }
}

pub(crate) struct Sessions {
    table: Mutex<Table>,
    limits: SessionLimits,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            table: Mutex::new(Table::default()),
            limits,
        }
    }

    pub(crate) fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) >= self.limits.idle
            || now.duration_since(s.created) >= self.limits.absolute
    }

    /// Opens a session for `owner`: expired sessions end first; at the token's cap its oldest
    /// session ends; at the account's or the process's cap the sign-in is refused, so no one
    /// ends another token's sessions by signing in.
    pub(crate) fn open(&self, owner: Owner) -> Result<SessionId, Refused> {
        let id = SessionId::generate();
        let csrf = hex::encode(coffer_crypto::random_array::<ID_BYTES>());
        let mut table = self.lock();
        let now = Instant::now();
        table.purge(&self.limits, now);
        let own = table.by_token.get(&owner.token_id).map_or(0, Vec::len);
        // The token's own oldest sessions make room first (they count in every cap).
        let evict = (own + 1).saturating_sub(self.limits.per_token.max(1));
        let room = |cap: usize, used: usize| used - evict.min(used) < cap;
        let account = table.by_account.get(&owner.account).copied().unwrap_or(0);
        if !room(self.limits.per_account, account) {
            return Err(Refused::AccountFull);
        }
        if !room(self.limits.max_sessions, table.map.len()) {
            return Err(Refused::Full);
        }
        let oldest: Vec<SessionId> = table
            .by_token
            .get(&owner.token_id)
            .map(|ids| ids.iter().take(evict).cloned().collect())
            .unwrap_or_default();
        for old in &oldest {
            table.remove(old);
        }
        table.insert(
            id.clone(),
            Session {
                token: owner.token,
                csrf,
                token_id: owner.token_id,
                account: owner.account,
                created: now,
                last_used: now,
                once: VecDeque::new(),
            },
        );
        Ok(id)
    }

    /// The live session `id`, touched; `None` (and the session dropped) if it expired.
    pub(crate) fn get(&self, id: &SessionId) -> Option<Live> {
        let now = Instant::now();
        let mut table = self.lock();
        let session = table.map.get(id)?;
        if self.expired(session, now) {
            table.remove(id);
            return None;
        }
        let live = Live {
            token: session.token.clone(),
            csrf: session.csrf.clone(),
        };
        table.touch(id, now);
        Some(live)
    }

    /// A new single-use nonce for a form of session `id` that mints a token (an API token, a
    /// service token, an account's first token): the form carries it, and [`Sessions::redeem_once`]
    /// accepts it once, so a reload, the back button or a second click does not mint another
    /// token whose value is never seen. `None` if the session is gone.
    pub(crate) fn issue_once(&self, id: &SessionId) -> Option<String> {
        let nonce = coffer_crypto::random_array::<ONCE_BYTES>();
        let mut table = self.lock();
        let once = &mut table.map.get_mut(id)?.once;
        if once.len() >= MAX_ONCE {
            once.pop_front();
        }
        once.push_back(nonce);
        Some(hex::encode(nonce))
    }

    /// Whether `nonce` is one [`Sessions::issue_once`] gave session `id` and was not redeemed
    /// yet; it is used up either way.
    pub(crate) fn redeem_once(&self, id: &SessionId, nonce: Option<&str>) -> bool {
        let Some(nonce) =
            nonce.and_then(|n| <[u8; ONCE_BYTES]>::try_from(hex::decode(n).ok()?).ok())
        else {
            return false;
        };
        let mut table = self.lock();
        let Some(session) = table.map.get_mut(id) else {
            return false;
        };
        // Compared in constant time, though a nonce guards against replays, not guesses.
        let at = session
            .once
            .iter()
            .position(|n| aws_lc_rs::constant_time::verify_slices_are_equal(n, &nonce).is_ok());
        at.and_then(|i| session.once.remove(i)).is_some()
    }

    /// Whether `presented` is the API token session `id` was opened with (compared in constant
    /// time): what an act that hands out the instance's keys asks for again, so that a stolen
    /// cookie alone cannot do it.
    pub(crate) fn token_is(&self, id: &SessionId, presented: &str) -> bool {
        let table = self.lock();
        table.map.get(id).is_some_and(|s| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                s.token.as_bytes(),
                presented.as_bytes(),
            )
            .is_ok()
        })
    }

    pub(crate) fn end(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(token: &str, token_id: u8, account: u8) -> Owner {
        Owner {
            token: Zeroizing::new(token.to_owned()),
            token_id: TokenId::from_bytes([token_id; 16]),
            account: AccountId::from_bytes([account; 16]),
        }
    }

    fn limits(max: usize, per_token: usize, per_account: usize) -> Sessions {
        Sessions::new(SessionLimits {
            max_sessions: max,
            per_token,
            per_account,
            ..SessionLimits::default()
        })
    }

    #[test]
    fn a_token_past_its_cap_ends_its_own_oldest_session() {
        let sessions = limits(100, 2, 100);
        let other = sessions.open(owner("o", 9, 1)).unwrap();
        let a = sessions.open(owner("a", 1, 1)).unwrap();
        let b = sessions.open(owner("a", 1, 1)).unwrap();
        assert!(
            sessions.get(&a).is_some(),
            "touching does not save the oldest"
        );
        let c = sessions.open(owner("a", 1, 1)).unwrap();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(&a).is_none(), "a was the token's oldest");
        assert!(sessions.get(&b).is_some() && sessions.get(&c).is_some());
        assert_eq!(sessions.get(&other).unwrap().token.as_str(), "o");
    }

    #[test]
    fn full_caps_refuse_instead_of_ending_others_sessions() {
        let sessions = limits(3, 5, 2);
        let a = sessions.open(owner("a", 1, 1)).unwrap();
        let b = sessions.open(owner("b", 2, 1)).unwrap();
        assert_eq!(
            sessions.open(owner("c", 3, 1)),
            Err(Refused::AccountFull),
            "the account's cap"
        );
        let d = sessions.open(owner("d", 4, 2)).unwrap();
        assert_eq!(sessions.open(owner("e", 5, 3)), Err(Refused::Full));
        for id in [&a, &b, &d] {
            assert!(sessions.get(id).is_some(), "no one was evicted");
        }
        // A token at a full cap still signs in again, ending its own oldest session.
        let one = limits(3, 1, 3);
        let x = one.open(owner("x", 1, 1)).unwrap();
        one.open(owner("y", 2, 1)).unwrap();
        one.open(owner("z", 3, 1)).unwrap();
        let x2 = one.open(owner("x", 1, 1)).unwrap();
        assert!(one.get(&x).is_none() && one.get(&x2).is_some());
        assert_eq!(one.len(), 3);
        // Ending sessions makes room again.
        sessions.end(&d);
        sessions.open(owner("e", 5, 3)).unwrap();
    }

    #[test]
    fn expired_sessions_make_room() {
        let sessions = Sessions::new(SessionLimits {
            max_sessions: 1,
            idle: Duration::from_millis(50),
            ..SessionLimits::default()
        });
        sessions.open(owner("a", 1, 1)).unwrap();
        assert_eq!(sessions.open(owner("b", 2, 2)), Err(Refused::Full));
        std::thread::sleep(Duration::from_millis(60));
        sessions.open(owner("b", 2, 2)).unwrap();
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn a_form_nonce_is_good_once_in_its_own_session_and_the_oldest_go() {
        let sessions = Sessions::new(SessionLimits::default());
        let a = sessions.open(owner("t", 1, 1)).unwrap();
        let b = sessions.open(owner("t", 2, 1)).unwrap();
        let n = sessions.issue_once(&a).unwrap();
        assert_eq!(n.len(), 2 * ONCE_BYTES);
        assert!(!sessions.redeem_once(&b, Some(&n)), "another session's");
        assert!(sessions.redeem_once(&a, Some(&n)));
        assert!(!sessions.redeem_once(&a, Some(&n)), "used up");
        assert!(!sessions.redeem_once(&a, Some("zz")) && !sessions.redeem_once(&a, None));
        let first = sessions.issue_once(&a).unwrap();
        let rest: Vec<String> = (0..MAX_ONCE)
            .map(|_| sessions.issue_once(&a).unwrap())
            .collect();
        assert!(
            !sessions.redeem_once(&a, Some(&first)),
            "the oldest past the cap"
        );
        assert!(rest.iter().all(|n| sessions.redeem_once(&a, Some(n))));
        sessions.end(&a);
        assert_eq!(sessions.issue_once(&a), None, "no session, no nonce");
        let c = sessions.open(owner("the-token", 3, 1)).unwrap();
        assert!(sessions.token_is(&c, "the-token"));
        assert!(
            !sessions.token_is(&c, "the-toke")
                && !sessions.token_is(&c, "")
                && !sessions.token_is(&b, "the-token")
        );
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_redacted() {
        let sessions = Sessions::new(SessionLimits::default());
        let a = sessions.open(owner("secret-token", 1, 1)).unwrap();
        let b = sessions.open(owner("secret-token", 1, 1)).unwrap();
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
        let a = idle.open(owner("a", 1, 1)).unwrap();
        assert!(idle.get(&a).is_none());
        assert_eq!(idle.len(), 0, "dropped once found expired");
        let absolute = Sessions::new(SessionLimits {
            absolute: Duration::ZERO,
            ..SessionLimits::default()
        });
        let b = absolute.open(owner("b", 1, 1)).unwrap();
        assert!(absolute.get(&b).is_none());
    }
}
