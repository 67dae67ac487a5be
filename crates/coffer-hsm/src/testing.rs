//! A throwaway SoftHSM2 token for tests and benchmarks (feature `test-support`).
//!
//! SoftHSM reads its configuration (`SOFTHSM2_CONF`: where the token directory is) once per
//! process, when the module is initialised. So every test gets its own token directory and
//! runs the code under test in a process started with `SOFTHSM2_CONF` pointing there: a spawned
//! `coffer` binary, or the test binary itself re-run for one test ([`in_own_process`]).
//!
//! A test that needs SoftHSM skips (printing why) when the module or `softhsm2-util` is
//! missing, except under `CI=true`, where it fails: CI must never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use crate::{HsmError, Pkcs11Kek};

/// Overrides where the SoftHSM2 module is looked for.
pub const MODULE_ENV: &str = "COFFER_TEST_SOFTHSM_MODULE";
/// Set in the child process [`in_own_process`] starts: the SoftHSM root directory.
const CHILD_ENV: &str = "COFFER_TEST_SOFTHSM_CHILD";
/// Set in the child process [`SoftHsm::create_key`] starts: the key to make.
const KEY_ENV: &str = "COFFER_TEST_SOFTHSM_KEY";

/// Where distributions put the module.
const CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The label of the token every [`SoftHsm`] starts with.
pub const TOKEN: &str = "coffer";
/// The label the tests give the KEK.
pub const OBJECT: &str = "coffer-kek";
pub const USER_PIN: &str = "1234-user";
pub const SO_PIN: &str = "5678-so";

const INSTALL_HINT: &str = "install SoftHSM2 (Debian: apt-get install softhsm2)";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The SoftHSM2 module, if it and `softhsm2-util` are installed.
pub fn find_module() -> Result<PathBuf, String> {
    let module = match std::env::var_os(MODULE_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!("{MODULE_ENV}={} is not a file", path.display()));
            }
            path
        }
        None => CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| format!("no libsofthsm2.so in {}", CANDIDATES.join(", ")))?,
    };
    match Command::new("softhsm2-util").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(module),
        Ok(out) => Err(format!("softhsm2-util --version failed: {}", out.status)),
        Err(e) => Err(format!("cannot run softhsm2-util: {e}")),
    }
}

/// A token directory with one initialised token labelled [`TOKEN`], and the configuration file
/// that points SoftHSM at it. The directory is deleted on drop (by the process that made it).
#[derive(Debug)]
pub struct SoftHsm {
    _owned: Option<tempfile::TempDir>,
    root: PathBuf,
    module: PathBuf,
}

impl SoftHsm {
    /// A fresh SoftHSM with its [`TOKEN`]; `None` (after printing why) if SoftHSM is not
    /// installed. Panics under `CI=true` instead of skipping.
    pub fn new(test: &str) -> Option<SoftHsm> {
        let module = match find_module() {
            Ok(module) => module,
            Err(reason) if in_ci() => panic!(
                "{test}: SoftHSM2 is not available and CI=true, so this test may not be \
                 skipped: {reason}; {INSTALL_HINT}"
            ),
            Err(reason) => {
                eprintln!("SKIPPED {test}: SoftHSM2 is not available: {reason}; {INSTALL_HINT}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        std::fs::create_dir(root.join("tokens")).expect("tokens dir");
        std::fs::write(
            root.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                root.join("tokens").display()
            ),
        )
        .expect("softhsm2.conf");
        let hsm = SoftHsm {
            _owned: Some(dir),
            root,
            module,
        };
        hsm.init_token(TOKEN);
        Some(hsm)
    }

    /// The configuration file; give it to a process as `SOFTHSM2_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.root.join("softhsm2.conf")
    }

    pub fn module(&self) -> &Path {
        &self.module
    }

    /// `pkcs11:token=coffer;object=coffer-kek?module-path=…`
    pub fn uri(&self) -> String {
        self.uri_for(TOKEN, OBJECT)
    }

    pub fn uri_for(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}",
            self.module.display()
        )
    }

    /// Points `cmd` at this SoftHSM.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("SOFTHSM2_CONF", self.conf());
    }

    /// Initialises another token in the next free slot.
    pub fn init_token(&self, label: &str) {
        self.init_token_with_pin(label, USER_PIN);
    }

    /// Initialises another token in the next free slot, with `pin` as its user PIN.
    pub fn init_token_with_pin(&self, label: &str, pin: &str) {
        let mut cmd = Command::new("softhsm2-util");
        cmd.args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", SO_PIN]);
        self.configure(&mut cmd);
        let out = cmd.output().expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes every token away, as if the HSM were disconnected: their directories move out of
    /// the token directory until [`SoftHsm::plug`].
    pub fn unplug(&self) {
        let away = self.root.join("unplugged");
        std::fs::create_dir_all(&away).expect("unplugged dir");
        for entry in std::fs::read_dir(self.root.join("tokens")).expect("tokens dir") {
            let entry = entry.expect("token entry");
            std::fs::rename(entry.path(), away.join(entry.file_name())).expect("unplug");
        }
    }

    /// The directory that holds the tokens (one subdirectory each): what a backup of this
    /// SoftHSM copies.
    pub fn tokens_dir(&self) -> PathBuf {
        self.root.join("tokens")
    }

    /// Deletes every token now in the token directory (not those unplugged).
    pub fn remove_tokens(&self) {
        for entry in std::fs::read_dir(self.root.join("tokens")).expect("tokens dir") {
            std::fs::remove_dir_all(entry.expect("token entry").path()).expect("remove token");
        }
    }

    /// Brings back what [`SoftHsm::unplug`] took away.
    pub fn plug(&self) {
        let away = self.root.join("unplugged");
        for entry in std::fs::read_dir(&away).expect("unplugged dir") {
            let entry = entry.expect("token entry");
            std::fs::rename(
                entry.path(),
                self.root.join("tokens").join(entry.file_name()),
            )
            .expect("plug");
        }
    }
}

/// Runs `body` with a fresh [`SoftHsm`] in a new process: the current test binary re-run for
/// the one test named `test` (its full path as the test harness shows it), with `SOFTHSM2_CONF`
/// set. In that child this function runs `body`; in the parent it waits for the child and
/// fails with its output if the child failed. Skips like [`SoftHsm::new`].
pub fn in_own_process(test: &str, body: impl FnOnce(&SoftHsm)) {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        let root = PathBuf::from(root);
        let module = find_module().expect("the parent found SoftHSM");
        body(&SoftHsm {
            _owned: None,
            root,
            module,
        });
        return;
    }
    let Some(hsm) = SoftHsm::new(test) else {
        return;
    };
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &hsm.root);
    hsm.configure(&mut cmd);
    let out = cmd.output().expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The child must really have run the test (a wrong name would run nothing and pass).
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in the child process:\n{stdout}\n{stderr}"
    );
}

/// An AES-256 key object with the value and attributes a test chooses, for
/// [`Pkcs11Kek::create_test_key`] (pkcs11-tool cannot clear CKA_WRAP, which SoftHSM sets by
/// default).
#[derive(Debug, Clone)]
pub struct TestKey<'a> {
    pub label: &'a str,
    pub id: &'a [u8],
    pub value: [u8; 32],
    pub private: bool,
    pub extractable: bool,
    pub wrap: bool,
    pub derive: bool,
}

impl<'a> TestKey<'a> {
    /// A key that meets an account key's demands: private, sensitive, never extractable, no
    /// wrapping, no derivation; it may encrypt and decrypt.
    pub fn account(label: &'a str, id: &'a [u8], value: [u8; 32]) -> TestKey<'a> {
        TestKey {
            label,
            id,
            value,
            private: true,
            extractable: false,
            wrap: false,
            derive: false,
        }
    }
}

impl TestKey<'_> {
    fn template(&self) -> Vec<Attribute> {
        let key = self;
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(key.private),
            Attribute::Sensitive(true),
            Attribute::Extractable(key.extractable),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(key.wrap),
            Attribute::Unwrap(false),
            Attribute::Derive(key.derive),
            Attribute::Label(key.label.as_bytes().to_vec()),
            Attribute::Id(key.id.to_vec()),
            Attribute::Value(key.value.to_vec()),
        ]
    }

    /// One line of tab-separated fields, for the child process of [`SoftHsm::create_key`].
    fn encode(&self, token: &str) -> String {
        let flag = |b: bool| if b { "1" } else { "0" };
        [
            token.to_owned(),
            self.label.to_owned(),
            hex::encode(self.id),
            hex::encode(self.value),
            flag(self.private).to_owned(),
            flag(self.extractable).to_owned(),
            flag(self.wrap).to_owned(),
            flag(self.derive).to_owned(),
        ]
        .join("\t")
    }
}

impl SoftHsm {
    /// Creates `key` in `token` (logged in with [`USER_PIN`]) in a child process: the test
    /// binary re-run for the test `helper` (its full path, as for [`in_own_process`]), whose
    /// body is [`create_key_in_child`]. SoftHSM reads its configuration from the environment
    /// once per process, so a test process serving several SoftHSMs cannot use the module
    /// itself; and pkcs11-tool cannot clear CKA_WRAP, which SoftHSM sets by default.
    pub fn create_key(&self, token: &str, key: &TestKey<'_>, helper: &str) {
        let exe = std::env::current_exe().expect("current test binary");
        let mut cmd = Command::new(exe);
        cmd.args([helper, "--exact", "--nocapture", "--test-threads=1"])
            .env(KEY_ENV, key.encode(token));
        self.configure(&mut cmd);
        let out = cmd.output().expect("re-run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed") && stdout.contains("made key"),
            "creating {:?} in {helper} failed: {stdout}\n{}",
            key.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The body of the helper test [`SoftHsm::create_key`] runs: makes the key it was asked for;
/// run as an ordinary test (without the request in the environment), nothing.
pub fn create_key_in_child() {
    let Ok(spec) = std::env::var(KEY_ENV) else {
        return;
    };
    let fields: Vec<&str> = spec.split('\t').collect();
    let [token, label, id, value, private, extractable, wrap, derive] = fields[..] else {
        panic!("malformed {KEY_ENV}: {spec}");
    };
    let id = hex::decode(id).expect("id");
    let value: [u8; 32] = hex::decode(value)
        .expect("value")
        .try_into()
        .expect("32 bytes");
    let key = TestKey {
        label,
        id: &id,
        value,
        private: private == "1",
        extractable: extractable == "1",
        wrap: wrap == "1",
        derive: derive == "1",
    };
    let module = Pkcs11::new(find_module().expect("SoftHSM")).expect("load SoftHSM");
    module
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("initialise SoftHSM");
    let slot = module
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            module
                .get_token_info(*s)
                .is_ok_and(|i| i.label().trim_end() == token)
        })
        .expect("the token");
    let session = module.open_rw_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(USER_PIN.to_owned())))
        .expect("login");
    session.create_object(&key.template()).expect("create");
    drop(session);
    module.finalize().expect("finalize");
    println!("made key {label:?}");
}

impl Pkcs11Kek {
    /// Creates `key` in this KEK's token, through its own session pool (a process may
    /// initialise the module once, so a test cannot open another connection to it).
    pub fn create_test_key(&self, key: &TestKey<'_>) -> Result<(), HsmError> {
        let template = key.template();
        self.pool.with_rw_session(|session| {
            session.create_object(&template).map_err(|e| {
                HsmError::Unavailable(format!("cannot create {:?}: {e}", key.label))
            })?;
            Ok(())
        })
    }
}
