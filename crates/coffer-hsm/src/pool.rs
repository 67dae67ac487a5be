//! The session pool: up to `max` sessions with the token, logged in once, so that concurrent
//! KEK calls do not queue on one session; and the reconnection to a token that went away.
//!
//! States. *Connected*: sessions are opened on demand up to `max` and handed out one per call
//! (a PKCS#11 session runs one operation at a time). *Broken*: a call failed and the health
//! probe (`provider.rs`) found the token gone; every idle session is closed at once and each
//! checked-out one when it comes back, and calls fail fast (the caller answers 503). The first
//! call after `backoff` with no session checked out reconnects: it finalizes and initialises
//! the module again, finds the token, logs in and checks that the key under the label is still
//! the same KEK. Only one thread reconnects; the others keep failing fast meanwhile rather than
//! queueing behind a token that may take long to answer.
//!
//! Keys. The pool holds every key object of the KEK that is in use (its versions, see
//! [`KeyObject`]) and finds each again on a reconnect, checking its id: a call names the key it
//! needs by id. Versions are added (generated in the token) and removed (before the object is
//! destroyed) while the pool runs. Accounts' own KEKs in the same token share the pool (one
//! module per process) but are *detachable*: one that is gone from the token (or whose object
//! now holds another key) is set aside as *lost*, on a reconnect or when a call finds it so on
//! a logged-in session, and fails its account alone. A lost key is looked for again at every
//! reconnect and at its account's next call, so one that comes back serves again without a
//! restart.
//!
//! Which removals clear a lost key: [`Pool::add_detachable_key`] (the key is used again, found
//! anew), [`Pool::remove_detachable`] (an account stops using its key) and
//! [`Pool::remove_key`] (a key destroyed or forgotten) drop its `lost` entry; a reconnect and
//! [`Pool::restore`] move it back into use when its object is found again. Nothing else
//! touches `lost`, so a refused request never ends another account's recovery.
//!
//! Handles are valid only in the connection they were found in: a reconnect finalizes the
//! module, after which the same number may name another object. So whatever finds a handle
//! on a session of [`Pool::with_ro_session_at`] (or `_rw_`) gets the connection's
//! [`Generation`], and [`Pool::add_key`], [`Pool::add_detachable_key`] and [`Pool::restore`]
//! refuse a handle of another generation.
//!
//! Why no session may be checked out while reconnecting: `C_Finalize` invalidates every session
//! handle and the module reuses handle numbers afterwards, so a stale session closed after the
//! reconnect could close a new one. Sessions of an old connection are therefore always dropped
//! (and closed) before the `out` count that gates the reconnect goes down.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use coffer_crypto::KekId;

use crate::error::short;
use crate::token::{self, Holder, KeyObject};
use crate::{HsmError, Pin, Pkcs11Uri};

/// Which connection a handle was found in: see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generation(u64);

/// [`Pool::remove_detachable`] was asked to remove a key of the instance KEK: refused, the
/// key stays in use.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InstanceKey;

/// A detachable key set aside because its object was missing or another key.
struct LostKey {
    object: KeyObject,
    /// No call looks for it before this.
    next_look: Instant,
}

pub(crate) struct Pool {
    module: Pkcs11,
    uri: Pkcs11Uri,
    pin: Pin,
    max: usize,
    backoff: Duration,
    state: Mutex<State>,
    /// Signalled when a session is returned or the pool breaks.
    changed: Condvar,
}

struct State {
    /// Bumped when the connection breaks; sessions carry the generation they were opened in.
    generation: u64,
    /// The token's slot in the current connection; `None` while broken.
    live: Option<Slot>,
    /// The key objects in use, each with its handle in the current connection (stale while
    /// broken: a reconnect finds each again and fails if one is gone or another key).
    keys: Vec<(KeyObject, ObjectHandle)>,
    /// The keys among `keys` that may go missing without the pool failing (accounts' own
    /// KEKs): a reconnect that does not find one drops it, and only its calls fail.
    detachable: Vec<KekId>,
    /// Detachable keys set aside because their object was missing or another key: not in
    /// `keys`, looked for again at each reconnect and at their next call, at most once per
    /// `backoff` (the instant: no call looks before it), so that an account's stream of
    /// failing requests does not become a stream of searches in the token.
    lost: Vec<LostKey>,
    idle: Vec<Session>,
    /// Sessions of the current generation, idle or checked out.
    open: usize,
    /// Sessions checked out, of any generation.
    out: usize,
    /// Why the pool is broken, while it is.
    broken: Option<String>,
    reconnecting: bool,
    /// No reconnect before this.
    next_attempt: Instant,
    /// The token refused our PIN while reconnecting: never log in with it again. Each refused
    /// login counts towards the token's lockout, and the PIN cannot change without a restart,
    /// so retrying could only lock the user PIN (say, after an administrator changed it).
    pin_refused: bool,
    /// Most sessions ever open at once (for tests and benchmarks).
    high_water: usize,
    /// Successful reconnects (for tests: a pool rebuilt or not).
    reconnects: u64,
}

impl State {
    /// Uses the lost key `object` again with `handle`; `false` if it is not lost (removed or
    /// restored meanwhile).
    fn restore(&mut self, object: &KeyObject, handle: ObjectHandle) -> bool {
        let Some(at) = self.lost.iter().position(|l| l.object == *object) else {
            return false;
        };
        let LostKey { object, .. } = self.lost.remove(at);
        back_in_token(&object);
        self.detachable.push(object.kek_id.clone());
        self.keys.push((object, handle));
        true
    }

    fn is_lost(&self, id: &KekId) -> bool {
        self.lost.iter().any(|l| l.object.kek_id == *id)
    }

    /// Whether a handle found in `generation` is valid now.
    fn current(&self, generation: Generation) -> bool {
        self.broken.is_none() && self.generation == generation.0
    }
}

fn back_in_token(object: &KeyObject) {
    tracing::info!(object = %object.describe(), kek = %object.kek_id, "an account's key object is back in the token; that account's values open again");
}

fn stale_handle(object: &KeyObject) -> HsmError {
    HsmError::Unavailable(format!(
        "the token reconnected while the key object {} was being looked up; try again",
        object.describe()
    ))
}

/// A session lent to one call. Must go back through [`Pool::give_back`].
pub(crate) struct Lease {
    pub session: Session,
    pub key: ObjectHandle,
    generation: u64,
}

impl Pool {
    /// Loads nothing itself: `module` is loaded and initialised, `session` is logged in to the
    /// token in `slot`, and `keys` were found through it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        module: Pkcs11,
        uri: Pkcs11Uri,
        pin: Pin,
        slot: Slot,
        session: Session,
        keys: Vec<(KeyObject, ObjectHandle)>,
        max: usize,
        backoff: Duration,
    ) -> Pool {
        let state = State {
            generation: 0,
            live: Some(slot),
            keys,
            detachable: Vec::new(),
            lost: Vec::new(),
            idle: vec![session],
            open: 1,
            out: 0,
            broken: None,
            reconnecting: false,
            next_attempt: Instant::now(),
            pin_refused: false,
            high_water: 1,
            reconnects: 0,
        };
        Pool {
            module,
            uri,
            pin,
            max: max.max(1),
            backoff,
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// The key objects in use.
    pub(crate) fn keys(&self) -> Vec<KeyObject> {
        self.lock().keys.iter().map(|(k, _)| k.clone()).collect()
    }

    /// The key objects in use that are not detachable: the instance KEK's versions.
    pub(crate) fn instance_keys(&self) -> Vec<KeyObject> {
        let st = self.lock();
        st.keys
            .iter()
            .filter(|(k, _)| !st.detachable.contains(&k.kek_id))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether the key `id` is in use.
    pub(crate) fn has(&self, id: &KekId) -> bool {
        self.lock().keys.iter().any(|(k, _)| k.kek_id == *id)
    }

    /// Whether `id` is a detachable key, in use or lost.
    pub(crate) fn is_detachable(&self, id: &KekId) -> bool {
        let st = self.lock();
        st.detachable.contains(id) || st.is_lost(id)
    }

    /// The object of the lost key `id`, if it is lost.
    pub(crate) fn lost(&self, id: &KekId) -> Option<KeyObject> {
        self.lock()
            .lost
            .iter()
            .find(|l| l.object.kek_id == *id)
            .map(|l| l.object.clone())
    }

    /// The object of the lost key `id` if a call may look for it now; the next may look only
    /// after `backoff`.
    pub(crate) fn lost_due(&self, id: &KekId) -> Option<KeyObject> {
        let mut st = self.lock();
        let now = Instant::now();
        let lost = st
            .lost
            .iter_mut()
            .find(|l| l.object.kek_id == *id && now >= l.next_look)?;
        lost.next_look = now + self.backoff;
        Some(lost.object.clone())
    }

    /// Sets the detachable key `id` aside as lost (see `State::lost`).
    pub(crate) fn detach(&self, id: &KekId) {
        let mut st = self.lock();
        if !st.detachable.contains(id) {
            return;
        }
        st.detachable.retain(|d| d != id);
        if let Some(at) = st.keys.iter().position(|(k, _)| k.kek_id == *id) {
            let (object, _) = st.keys.remove(at);
            let next_look = Instant::now() + self.backoff;
            st.lost.push(LostKey { object, next_look });
        }
    }

    /// Uses the lost key `object` again, with `handle` found in connection `generation`.
    /// Nothing happens if it was removed (or restored) meanwhile, or if the token reconnected
    /// since (the handle may name another object now; a reconnect looks for lost keys itself).
    pub(crate) fn restore(
        &self,
        object: &KeyObject,
        handle: ObjectHandle,
        generation: Generation,
    ) -> bool {
        let mut st = self.lock();
        st.current(generation) && st.restore(object, handle)
    }

    pub(crate) fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is a few field writes with no call that can panic in
        // between, so a poisoned lock holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session for one call: an idle one, a new one while fewer than `max` are open, or the
    /// next one returned. Fails at once while the token is unavailable.
    pub(crate) fn take(&self, id: &KekId) -> Result<Lease, String> {
        self.take_or(id, true)
    }

    /// [`Pool::take`], failing instead of waiting when every session is busy.
    #[cfg(feature = "test-support")]
    pub(crate) fn take_now(&self, id: &KekId) -> Result<Lease, String> {
        self.take_or(id, false)
    }

    fn take_or(&self, id: &KekId, wait: bool) -> Result<Lease, String> {
        let mut st = self.lock();
        loop {
            if st.broken.is_some() {
                st = self.try_reconnect(st)?;
                continue;
            }
            let Some(slot) = st.live else {
                // Invariant: `live` is `None` only while `broken` is set.
                return Err("the token connection is not established".into());
            };
            let Some(key) = st
                .keys
                .iter()
                .find(|(k, _)| k.kek_id == *id)
                .map(|(_, h)| *h)
            else {
                return Err(format!(
                    "KEK {id} is not one of the token's key objects in use"
                ));
            };
            if let Some(session) = st.idle.pop() {
                st.out += 1;
                return Ok(Lease {
                    session,
                    key,
                    generation: st.generation,
                });
            }
            if st.open < self.max {
                st.open += 1;
                st.out += 1;
                st.high_water = st.high_water.max(st.open);
                let generation = st.generation;
                drop(st);
                // Sessions opened after the login share it (PKCS#11 login is per application
                // and token), so a new session needs no login of its own.
                return match self.module.open_ro_session(slot) {
                    Ok(session) => Ok(Lease {
                        session,
                        key,
                        generation,
                    }),
                    Err(e) => {
                        let reason = format!("cannot open a session: {}", short(&e));
                        let mut st = self.lock();
                        st.out -= 1;
                        if st.generation == generation {
                            st.open -= 1;
                        }
                        self.mark_broken(&mut st, reason.clone());
                        Err(reason)
                    }
                };
            }
            if !wait {
                return Err(format!("all {} sessions are busy", self.max));
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Returns a lease. `healthy: false` (the token failed during the call) breaks the pool.
    pub(crate) fn give_back(&self, lease: Lease, healthy: Result<(), String>) {
        let mut st = self.lock();
        let current = lease.generation == st.generation;
        match healthy {
            Ok(()) if current && st.broken.is_none() => st.idle.push(lease.session),
            result => {
                // Closed before `out` goes down: see the module comment.
                drop(lease.session);
                if current {
                    st.open -= 1;
                }
                if let Err(reason) = result {
                    self.mark_broken(&mut st, reason);
                }
            }
        }
        st.out -= 1;
        drop(st);
        self.changed.notify_all();
    }

    fn mark_broken(&self, st: &mut State, reason: String) {
        if st.broken.is_none() {
            tracing::error!(
                token = %self.uri.token_description(),
                reason = %reason,
                "the PKCS#11 token is unavailable; calls that need the KEK fail until it is back"
            );
            st.generation += 1;
            st.live = None;
            st.open = 0;
            st.idle.clear();
            st.broken = Some(reason);
        }
        self.changed.notify_all();
    }

    /// While broken: reconnects if this thread may (nothing checked out, nobody else at it,
    /// backoff over), else fails fast with why the token is unavailable.
    fn try_reconnect<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, String> {
        let reason = st.broken.clone().unwrap_or_default();
        if st.pin_refused || st.reconnecting || st.out > 0 || Instant::now() < st.next_attempt {
            return Err(reason);
        }
        st.reconnecting = true;
        let wanted: Vec<(KeyObject, bool)> = st
            .keys
            .iter()
            .map(|(k, _)| (k.clone(), st.detachable.contains(&k.kek_id)))
            .collect();
        let lost_before: Vec<KeyObject> = st.lost.iter().map(|l| l.object.clone()).collect();
        drop(st);
        let result = token::reinitialize(&self.module, &self.uri).and_then(|()| {
            let (slot, session) = token::open_session(&self.module, &self.uri, &self.pin, false)?;
            let token = self.uri.token_description();
            let mut keys = Vec::with_capacity(wanted.len());
            let mut lost = Vec::new();
            for (k, detachable) in wanted {
                let holder = if detachable {
                    Holder::Account
                } else {
                    Holder::Instance
                };
                match token::load(&session, &k, &token, holder) {
                    Ok(h) => keys.push((k, h)),
                    // An account's key that is gone (or replaced) fails that account alone,
                    // on this freshly logged-in session, so its absence is the token's word.
                    Err(e @ (HsmError::KeyNotFound(_) | HsmError::WrongKey(_))) if detachable => {
                        tracing::error!(object = %k.describe(), kek = %k.kek_id, error = %e, "an account's key object is no longer usable in the token; that account's values cannot be opened until it is back (it is looked for again at each reconnect and at the account's next call)");
                        lost.push(k.kek_id);
                    }
                    Err(e) => return Err(e),
                }
            }
            // Lost keys that are back. One still missing stays lost; any other failure of
            // its lookup is left to its next call.
            let mut back = Vec::new();
            for k in lost_before {
                if let Ok(h) = token::load(&session, &k, &token, Holder::Account) {
                    back.push((k, h));
                }
            }
            Ok((slot, session, keys, lost, back))
        });
        let mut st = self.lock();
        st.reconnecting = false;
        match result {
            Ok((slot, session, keys, lost, back)) => {
                tracing::info!(
                    token = %self.uri.token_description(),
                    "the PKCS#11 token is back; logged in again"
                );
                st.generation += 1;
                st.reconnects += 1;
                st.live = Some(slot);
                // Keys added or removed while reconnecting are kept as they now are.
                for (object, handle) in keys {
                    if let Some(entry) = st.keys.iter_mut().find(|(k, _)| *k == object) {
                        entry.1 = handle;
                    }
                }
                let now_lost: Vec<KeyObject> = st
                    .keys
                    .iter()
                    .filter(|(k, _)| lost.contains(&k.kek_id) && st.detachable.contains(&k.kek_id))
                    .map(|(k, _)| k.clone())
                    .collect();
                st.keys.retain(|(k, _)| !lost.contains(&k.kek_id));
                st.detachable.retain(|id| !lost.contains(id));
                let next_look = Instant::now() + self.backoff;
                st.lost.extend(
                    now_lost
                        .into_iter()
                        .map(|object| LostKey { object, next_look }),
                );
                for (object, handle) in back {
                    st.restore(&object, handle);
                }
                st.idle.push(session);
                st.open = 1;
                st.broken = None;
                Ok(st)
            }
            Err(HsmError::Pin(why)) => {
                let reason = format!(
                    "reconnecting failed: {why}; no further login is tried with this PIN (each \
                     refusal brings the token closer to locking it): restart the server with \
                     the right PIN"
                );
                tracing::error!(reason = %reason, "the PKCS#11 token refused the PIN");
                st.pin_refused = true;
                st.broken = Some(reason.clone());
                Err(reason)
            }
            Err(e) => {
                st.next_attempt = Instant::now() + self.backoff;
                let reason = reconnect_failure(&e);
                tracing::warn!(reason = %reason, "could not reconnect to the PKCS#11 token");
                st.broken = Some(reason.clone());
                Err(reason)
            }
        }
    }

    /// Runs `op` on a new read-write session (to create or destroy objects), counted as checked
    /// out so that no reconnect invalidates it meanwhile. Fails while the token is unavailable.
    pub(crate) fn with_rw_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        self.with_session(true, op).map(|(value, _)| value)
    }

    /// [`Pool::with_rw_session`] on a read-only session: to find objects, even in a
    /// write-protected token.
    pub(crate) fn with_ro_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        self.with_session(false, op).map(|(value, _)| value)
    }

    /// [`Pool::with_rw_session`], also returning the connection's generation: for a handle
    /// to add to the pool.
    pub(crate) fn with_rw_session_at<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<(T, Generation), HsmError> {
        self.with_session(true, op)
    }

    /// [`Pool::with_ro_session`], also returning the connection's generation.
    pub(crate) fn with_ro_session_at<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<(T, Generation), HsmError> {
        self.with_session(false, op)
    }

    fn with_session<T>(
        &self,
        rw: bool,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<(T, Generation), HsmError> {
        let mut st = self.lock();
        if st.broken.is_some() {
            st = self.try_reconnect(st).map_err(HsmError::Unavailable)?;
        }
        let Some(slot) = st.live else {
            return Err(HsmError::Unavailable(
                "the token connection is not established".into(),
            ));
        };
        let generation = Generation(st.generation);
        st.out += 1;
        drop(st);
        let opened = if rw {
            self.module.open_rw_session(slot)
        } else {
            self.module.open_ro_session(slot)
        };
        let result = opened
            .map_err(|e| match e {
                cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::TokenWriteProtected,
                    _,
                ) => HsmError::ReadOnly(format!(
                    "{} is write-protected: no key object can be created or destroyed in it",
                    self.uri.token_description()
                )),
                e => HsmError::Unavailable(format!(
                    "cannot open a session with {}: {}",
                    self.uri.token_description(),
                    short(&e)
                )),
            })
            .and_then(|session| op(&session));
        // The session is closed (dropped above) before `out` goes down.
        let mut st = self.lock();
        st.out -= 1;
        drop(st);
        self.changed.notify_all();
        result.map(|value| (value, generation))
    }

    /// Starts using `object`, with `handle` found in connection `generation`; refused if the
    /// token reconnected since.
    pub(crate) fn add_key(
        &self,
        object: KeyObject,
        handle: ObjectHandle,
        generation: Generation,
    ) -> Result<(), HsmError> {
        let mut st = self.lock();
        if !st.current(generation) {
            return Err(stale_handle(&object));
        }
        st.keys.retain(|(k, _)| k.kek_id != object.kek_id);
        st.keys.push((object, handle));
        Ok(())
    }

    /// Starts using `object` as a detachable key (see `State::detachable`), with `handle`
    /// found in connection `generation`. Refused when the instance KEK uses that key (a
    /// version): an account's key never takes its place; and when the token reconnected
    /// since. A lost entry of the key is dropped: it is in use again.
    pub(crate) fn add_detachable_key(
        &self,
        object: KeyObject,
        handle: ObjectHandle,
        generation: Generation,
    ) -> Result<(), HsmError> {
        let mut st = self.lock();
        if !st.current(generation) {
            return Err(stale_handle(&object));
        }
        let id = &object.kek_id;
        if st.keys.iter().any(|(k, _)| k.kek_id == *id) && !st.detachable.contains(id) {
            return Err(HsmError::WrongKey(format!(
                "the key object {} is KEK {id}, which is the instance KEK's; an account needs a \
                 key of its own",
                object.describe()
            )));
        }
        st.keys.retain(|(k, _)| k.kek_id != *id);
        st.lost.retain(|l| l.object.kek_id != *id);
        st.detachable.retain(|d| d != id);
        st.detachable.push(id.clone());
        st.keys.push((object, handle));
        Ok(())
    }

    /// Stops using the detachable (or lost) key `id`. Refused for a key of the instance KEK,
    /// which is left in use (nothing changed).
    pub(crate) fn remove_detachable(&self, id: &KekId) -> Result<(), InstanceKey> {
        let mut st = self.lock();
        if !st.detachable.contains(id) && st.keys.iter().any(|(k, _)| k.kek_id == *id) {
            return Err(InstanceKey);
        }
        st.lost.retain(|l| l.object.kek_id != *id);
        if !st.detachable.contains(id) {
            return Ok(());
        }
        st.detachable.retain(|d| d != id);
        st.keys.retain(|(k, _)| k.kek_id != *id);
        Ok(())
    }

    /// The object of key `id` if it is in use and detachable.
    pub(crate) fn detachable(&self, id: &KekId) -> Option<KeyObject> {
        let st = self.lock();
        if !st.detachable.contains(id) {
            return None;
        }
        st.keys
            .iter()
            .find(|(k, _)| k.kek_id == *id)
            .map(|(k, _)| k.clone())
    }

    /// Stops using the key `id`; returns its object and handle.
    pub(crate) fn remove_key(&self, id: &KekId) -> Option<(KeyObject, ObjectHandle)> {
        let mut st = self.lock();
        st.detachable.retain(|d| d != id);
        st.lost.retain(|l| l.object.kek_id != *id);
        let at = st.keys.iter().position(|(k, _)| k.kek_id == *id)?;
        Some(st.keys.remove(at))
    }

    /// The module, and the token's slot while connected.
    pub(crate) fn module_and_slot(&self) -> (&Pkcs11, Option<Slot>) {
        (&self.module, self.lock().live)
    }

    /// Sessions open now, and the most ever open at once.
    pub(crate) fn sessions(&self) -> (usize, usize) {
        let st = self.lock();
        (st.open, st.high_water)
    }

    /// How many times the pool reconnected to the token.
    #[cfg(feature = "test-support")]
    pub(crate) fn reconnects(&self) -> u64 {
        self.lock().reconnects
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests;

fn reconnect_failure(e: &HsmError) -> String {
    format!("reconnecting failed: {e}")
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Sessions first, then the module: nothing may use a session after C_Finalize.
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        st.idle.clear();
        let _ = self.module.clone().finalize();
    }
}
