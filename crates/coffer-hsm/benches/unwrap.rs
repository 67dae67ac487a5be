//! DEK unwrap latency: the file KEK (in process, aws-lc) against the PKCS#11 KEK (SoftHSM2),
//! one caller and several at once (the session pool), and an account's own key in the same
//! token and pool.
//!
//! `cargo bench -p coffer-hsm --bench unwrap [-- --rounds N]`
//!
//! SoftHSM reads its configuration once per process, so the SoftHSM rows run in a child
//! process of this benchmark (started with `SOFTHSM2_CONF` pointing at a fresh token); without
//! SoftHSM they are skipped. Each row: `rounds` unwraps per thread after a tenth as many
//! warm-up ones, each timed alone; p50/p99/max per unwrap and the total rate.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coffer_crypto::{DataKey, DekContext, FileKek, KekProvider, WrappedDataKey};
use coffer_hsm::testing::{SoftHsm, USER_PIN};
use coffer_hsm::{Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};
use coffer_types::{AccountId, DekId};
use zeroize::Zeroizing;

const CHILD_URI: &str = "COFFER_BENCH_SOFTHSM_URI";
const THREADS: [usize; 3] = [1, 2, 4];
/// Distinct wrapped DEKs cycled through, so no single input is hot.
const KEYS: usize = 64;

fn main() {
    let rounds = rounds();
    if let Ok(uri) = std::env::var(CHILD_URI) {
        softhsm_rows(&uri, rounds);
        return;
    }
    println!("DEK unwrap latency, {rounds} unwraps per thread");
    println!("provider  sessions  threads  p50       p99       max       unwraps/s");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = Arc::new(FileKek::create(&dir.path().join("kek.key")).expect("file KEK"));
    for threads in THREADS {
        row("file", "-", file.clone(), threads, rounds);
    }
    let Some(hsm) = SoftHsm::new("unwrap bench") else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().expect("this benchmark"));
    child
        .args(["--rounds", &rounds.to_string()])
        .env(CHILD_URI, hsm.uri());
    hsm.configure(&mut child);
    let status = child.status().expect("run the SoftHSM rows");
    assert!(status.success(), "the SoftHSM rows failed: {status}");
}

fn rounds() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--rounds N"))
        .unwrap_or(10_000)
}

fn softhsm_rows(uri: &str, rounds: usize) {
    for sessions in [1, 4] {
        let uri = Pkcs11Uri::parse(uri).expect("URI");
        let pin = Pin::resolve(&uri, Some(Zeroizing::new(USER_PIN.to_owned()))).expect("PIN");
        let mut config = Pkcs11Config::new(uri, pin);
        config.sessions = sessions;
        let (kek, _) = Pkcs11Kek::open_or_generate(config).expect("SoftHSM KEK");
        let kek = Arc::new(kek);
        for threads in THREADS {
            row(
                "softhsm",
                &sessions.to_string(),
                kek.clone(),
                threads,
                rounds,
            );
        }
        // Accounts' own keys in the same token and pool (`set-kek --kek pkcs11`): 16 of them
        // loaded beside the instance KEK, one unwrapping.
        let mut last = None;
        for n in 0..ACCOUNT_KEYS {
            let label = format!("coffer-kek.account.bench{sessions}.{n}");
            let object = kek
                .generate_account_key(&label, &[n as u8; 16])
                .expect("account key");
            last = Some(object.kek_id);
        }
        let account = Arc::new(kek.version(&last.expect("an account key")).expect("in use"));
        for threads in THREADS {
            row(
                "account",
                &sessions.to_string(),
                account.clone(),
                threads,
                rounds,
            );
        }
    }
}

/// Account keys in the pool for the `account` rows.
const ACCOUNT_KEYS: usize = 16;

fn ctx(i: usize) -> DekContext<'static> {
    let mut account = [0u8; 16];
    account[..8].copy_from_slice(&(i as u64).to_be_bytes());
    DekContext {
        account: Some(AccountId::from_bytes(account)),
        dek: DekId::from_bytes([7; 16]),
        purpose: "dek",
    }
}

fn row<K: KekProvider + 'static>(
    name: &str,
    sessions: &str,
    kek: Arc<K>,
    threads: usize,
    rounds: usize,
) {
    let wrapped: Arc<Vec<WrappedDataKey>> = Arc::new(
        (0..KEYS)
            .map(|i| kek.wrap(&DataKey::generate(), &ctx(i)).expect("wrap"))
            .collect(),
    );
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (kek, wrapped, barrier) = (kek.clone(), wrapped.clone(), barrier.clone());
            std::thread::spawn(move || {
                for i in 0..rounds / 10 {
                    kek.unwrap(&wrapped[i % KEYS], &ctx(i % KEYS))
                        .expect("warm-up");
                }
                barrier.wait();
                let mut times = Vec::with_capacity(rounds);
                for i in 0..rounds {
                    let k = (i + t) % KEYS;
                    let start = Instant::now();
                    let key = kek.unwrap(&wrapped[k], &ctx(k)).expect("unwrap");
                    times.push(start.elapsed());
                    drop(key);
                }
                times
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut times: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = start.elapsed();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name:<9} {sessions:<9} {threads:<8} {:<9} {:<9} {:<9} {:.0}",
        fmt(at(0.50)),
        fmt(at(0.99)),
        fmt(times[times.len() - 1]),
        times.len() as f64 / elapsed.as_secs_f64()
    );
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}
