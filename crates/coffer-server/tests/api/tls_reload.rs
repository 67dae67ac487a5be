//! The serving certificate is replaced while serving: when a reload is asked for (what SIGHUP
//! does in the CLI) and when the files change; a pair that does not load is refused and the
//! certificate in use stays; no request fails meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use coffer_server::{HttpLimits, Reload, TlsFiles};

/// A self-signed certificate for 127.0.0.1: its PEM, its key's PEM, and its DER (what a client
/// is shown).
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn pair() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    Pair {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().to_vec(),
    }
}

/// Writes `pem` to `path` as deployment tools do: a new file renamed over the old one.
fn replace(path: &Path, pem: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, pem).unwrap();
    std::fs::rename(&next, path).unwrap();
}

struct Served {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), coffer_server::ServerError>>,
}

async fn serve(files: &TlsFiles, reload: Reload) -> Served {
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let files = files.clone();
    let task = tokio::spawn(async move {
        coffer_server::serve_app(
            app,
            "127.0.0.1:0".parse().unwrap(),
            Some(&files),
            HttpLimits::default(),
            reload,
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let addr = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("ready in time")
        .expect("started");
    Served {
        url: format!("https://127.0.0.1:{}/healthz", addr.port()),
        stop: Some(stop_tx),
        task,
    }
}

impl Served {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap();
    }
}

/// A client that trusts every certificate in `pairs`, opens a new connection per request, and
/// says which certificate it was shown.
fn client(pairs: &[&Pair]) -> reqwest::Client {
    let roots = pairs
        .iter()
        .map(|p| reqwest::Certificate::from_pem(p.cert_pem.as_bytes()).unwrap())
        .collect::<Vec<_>>();
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The certificate a new connection is shown.
async fn shown(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let res = client.get(url).send().await.expect("request over TLS");
    assert_eq!(res.status(), 200);
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the certificate shown")
        .to_vec()
}

async fn until_shown(client: &reqwest::Client, url: &str, want: &Pair) {
    for _ in 0..200 {
        if shown(client, url).await == want.der {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("new connections were never shown the new certificate");
}

fn files_in(dir: &Path, first: &Pair) -> TlsFiles {
    let (cert, key): (PathBuf, PathBuf) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    TlsFiles { cert, key }
}

/// Requests on new connections, in a loop until stopped; counts the failures.
fn keep_asking(
    client: reqwest::Client,
    url: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let task = tokio::spawn({
        let (stop, failed) = (stop.clone(), failed.clone());
        async move {
            let mut made = 0;
            while !stop.load(Ordering::Acquire) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                made += 1;
            }
            made
        }
    });
    (stop, failed, task)
}

#[tokio::test]
async fn asked_to_reload_new_connections_get_the_new_certificate_and_none_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pair(), pair());
    let files = files_in(dir.path(), &first);
    // Files are not looked at during the test: only the request reloads.
    let reload = Reload::with_poll(Duration::from_secs(3600));
    let served = serve(&files, reload.clone()).await;
    let client = client(&[&first, &second]);
    assert_eq!(shown(&client, &served.url).await, first.der);

    let (stop, failed, asking) = keep_asking(client.clone(), served.url.clone());
    replace(&files.key, &second.key_pem);
    replace(&files.cert, &second.cert_pem);
    // Not asked yet: the files alone change nothing.
    assert_eq!(shown(&client, &served.url).await, first.der);
    reload.request();
    until_shown(&client, &served.url, &second).await;
    stop.store(true, Ordering::Release);
    let made = asking.await.unwrap();
    assert!(made > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{made} requests, some failed"
    );
    served.stop().await;
}

/// Asks for a reload and waits until it was refused, the `refused`th time.
async fn refused_after_request(reload: &Reload, refused: u64) {
    reload.request();
    for _ in 0..400 {
        if reload.counts().1 >= refused {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the reload was not refused: {:?}", reload.counts());
}

#[tokio::test]
async fn a_pair_that_does_not_load_is_refused_and_the_certificate_in_use_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pair(), pair());
    let files = files_in(dir.path(), &first);
    let reload = Reload::with_poll(Duration::from_secs(3600));
    let served = serve(&files, reload.clone()).await;
    let client = client(&[&first, &second]);

    // Refused, each: the second certificate with the first one's key (they do not match), a
    // key file that is not a key, no key file at all, a FIFO.
    replace(&files.cert, &second.cert_pem);
    refused_after_request(&reload, 1).await;
    assert_eq!(shown(&client, &served.url).await, first.der);
    replace(&files.key, "not a key");
    refused_after_request(&reload, 2).await;
    assert_eq!(shown(&client, &served.url).await, first.der);
    std::fs::remove_file(&files.key).unwrap();
    refused_after_request(&reload, 3).await;
    assert_eq!(shown(&client, &served.url).await, first.der);
    // A FIFO in the key's place: refused, not read (a read would block until a writer came).
    let made = std::process::Command::new("mkfifo")
        .arg(&files.key)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    refused_after_request(&reload, 4).await;
    assert_eq!(shown(&client, &served.url).await, first.der);
    std::fs::remove_file(&files.key).unwrap();
    assert_eq!(reload.counts().0, 0, "nothing was reloaded");

    // Mended: the next reload takes it.
    replace(&files.key, &second.key_pem);
    reload.request();
    until_shown(&client, &served.url, &second).await;
    assert_eq!(reload.counts(), (1, 4));
    served.stop().await;
}

#[tokio::test]
async fn changed_files_are_picked_up_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pair(), pair());
    let files = files_in(dir.path(), &first);
    let reload = Reload::with_poll(Duration::from_millis(50));
    let served = serve(&files, reload.clone()).await;
    let client = client(&[&first, &second]);
    assert_eq!(shown(&client, &served.url).await, first.der);
    replace(&files.key, &second.key_pem);
    replace(&files.cert, &second.cert_pem);
    until_shown(&client, &served.url, &second).await;
    served.stop().await;
}
