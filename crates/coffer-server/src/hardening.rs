//! Process hardening for the processes that hold keys (`coffer server`, `coffer dev`,
//! `coffer edge`), applied once at start, before any key is loaded:
//!
//! - **not dumpable** (`prctl(PR_SET_DUMPABLE, 0)`): no core dump, and processes of the same
//!   user cannot attach a debugger (ptrace) or read `/proc/PID/mem` and `environ`;
//! - **no core files** (`RLIMIT_CORE` 0, soft and hard, so nothing in the process can raise it
//!   again);
//! - **memory locked** (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`): pages holding
//!   unwrapped keys are never written to swap. Only where the locking cannot turn into a
//!   failure later: with an unlimited `RLIMIT_MEMLOCK` or `CAP_IPC_LOCK`. Under a finite limit
//!   `MCL_FUTURE` makes every allocation past it fail, which would crash the server at an
//!   arbitrary moment, so it is skipped with a log line saying how to enable it. Locking only
//!   the pages of the key caches would need `mlock` on raw pointers, which has no safe API.
//!
//! All through rustix's safe wrappers (`unsafe_code` stays forbidden). None of it defends
//! against root on the host or a debugger attached before the process started: see
//! docs/threat-model.md.

/// What [`harden_process`] did. Each step that did not happen says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub non_dumpable: Result<(), String>,
    pub core_limit_zero: Result<(), String>,
    pub memory_locked: Result<(), String>,
}

/// Makes the process non-dumpable, turns core files off and, where that is safe, locks its
/// memory. Never fails: a step that cannot be done is skipped, so a host without the means
/// still runs the server. Logs nothing itself: the caller logs the report with
/// [`Hardening::log`] once the process is up, so that a start that fails still says one line.
pub fn harden_process() -> Hardening {
    Hardening {
        non_dumpable: non_dumpable(),
        core_limit_zero: core_limit_zero(),
        memory_locked: lock_memory(),
    }
}

impl Hardening {
    /// One line if every step was done, else a line per step that was not, saying why.
    pub fn log(&self) {
        let done = [
            &self.non_dumpable,
            &self.core_limit_zero,
            &self.memory_locked,
        ];
        if done.iter().all(|r| r.is_ok()) {
            tracing::info!("process hardened: not dumpable, no core files, memory locked");
            return;
        }
        for (what, result) in [
            ("the process stays dumpable", &self.non_dumpable),
            ("core files stay possible", &self.core_limit_zero),
        ] {
            if let Err(why) = result {
                tracing::warn!(reason = %why, "{what}");
            }
        }
        if let Err(why) = &self.memory_locked {
            tracing::info!(reason = %why, "memory not locked: key material may reach swap");
        }
    }
}

#[cfg(target_os = "linux")]
fn non_dumpable() -> Result<(), String> {
    use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| format!("prctl(PR_SET_DUMPABLE, 0) failed: {e}"))?;
    match dumpable_behavior() {
        Ok(DumpableBehavior::NotDumpable) => Ok(()),
        Ok(other) => Err(format!("still {other:?} after PR_SET_DUMPABLE 0")),
        Err(e) => Err(format!("prctl(PR_GET_DUMPABLE) failed: {e}")),
    }
}

#[cfg(not(target_os = "linux"))]
fn non_dumpable() -> Result<(), String> {
    Err("not available on this platform (Linux only)".into())
}

fn core_limit_zero() -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, zero).map_err(|e| format!("setrlimit(RLIMIT_CORE, 0) failed: {e}"))
}

#[cfg(target_os = "linux")]
fn lock_memory() -> Result<(), String> {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, getrlimit};
    use rustix::thread::{CapabilitySet, capabilities};
    let limit = getrlimit(Resource::Memlock).current;
    let cap_ipc_lock = capabilities(None)
        .map(|sets| sets.effective.contains(CapabilitySet::IPC_LOCK))
        .unwrap_or(false);
    memory_lock_plan(limit, cap_ipc_lock)?;
    // ONFAULT: pages are locked as they are first touched, not all populated now (the
    // binary's pages, every thread's whole stack), so memory use stays what it would be.
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| format!("mlockall failed: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn lock_memory() -> Result<(), String> {
    Err("not done on this platform (Linux only)".into())
}

/// Whether locking all memory is safe: `Ok` with an unlimited `RLIMIT_MEMLOCK` (`None`) or
/// `CAP_IPC_LOCK` (which the limit does not bind), else why not.
fn memory_lock_plan(limit: Option<u64>, cap_ipc_lock: bool) -> Result<(), String> {
    match limit {
        None => Ok(()),
        Some(_) if cap_ipc_lock => Ok(()),
        Some(bytes) => Err(format!(
            "RLIMIT_MEMLOCK is {bytes} bytes, and locking all memory under a finite limit \
             would make allocations fail once it is reached; to keep keys out of swap, start \
             with an unlimited limit (systemd: LimitMEMLOCK=infinity; shell: ulimit -l \
             unlimited) or CAP_IPC_LOCK"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_locked_only_where_no_limit_can_bite() {
        assert_eq!(memory_lock_plan(None, false), Ok(()));
        assert_eq!(memory_lock_plan(None, true), Ok(()));
        assert_eq!(memory_lock_plan(Some(8 << 20), true), Ok(()));
        let why = memory_lock_plan(Some(8 << 20), false).unwrap_err();
        assert!(
            why.contains("8388608 bytes") && why.contains("LimitMEMLOCK=infinity"),
            "{why}"
        );
        assert!(memory_lock_plan(Some(u64::MAX - 1), false).is_err());
    }
}
