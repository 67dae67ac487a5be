//! `coffer server` and `coffer dev`: run the server until SIGINT or SIGTERM.
//!
//! Readiness is announced on standard output with one line, `listening on http(s)://ADDR`,
//! printed (and flushed) once the server answers `/healthz`. With `--listen 127.0.0.1:0` this is
//! how a supervisor or a test learns the port. Under systemd (`Type=notify`, `NOTIFY_SOCKET` set)
//! the service manager is told `READY=1` at the same moment. Logs go to standard error.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use coffer_server::{ServeOptions, ServerError, TlsFiles};
use serde::Deserialize;
use zeroize::Zeroizing;

pub(crate) mod json_log;

use super::UsageError;
use super::init::credentials_json;
use crate::args::{DevArgs, EdgeArgs, LogArgs, LogFormat, ServerArgs};
use crate::output;

/// Name of the file, inside a `coffer dev` data dir, that holds the dev account's credentials.
pub const DEV_CREDENTIALS: &str = "dev-credentials.json";

pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    // Before any key is loaded: no core dumps, no ptrace by the same user, memory locked
    // where that is safe. Reported once serving, so that a failed start stays one line.
    let hardening = coffer_server::harden_process();
    // Held until the command returns, so that every line queued to the log writer is written.
    let _log = init_logging(&args.log);
    // First: until it is installed, a SIGHUP (`systemctl reload` during a slow start) kills.
    let reload = reload_on_sighup()?;
    let keys = args.keys();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        // clap makes each flag require the other.
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let database = args.database.database()?;
    let opts = ServeOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        tls,
        insecure_http: args.insecure_http,
        dashboard_secure_cookies: args.dashboard_secure_cookies.into(),
        secrets_quota: args.secrets_quota,
        max_stores: args.max_stores,
        feed_retention: args.feed_retention,
        trusted_proxies: args.proxies.trusted()?,
        http: args.limits.http(),
        snapshots: args.limits.snapshots(),
        runtime_rate: args.limits.runtime_rate(),
        keys,
        reload,
        metrics_listen: args.metrics.metrics_listen,
    };
    let shutdown = shutdown_signal()?;
    coffer_server::serve_on(
        opts,
        database,
        super::init::kek_secrets(),
        move |addr| {
            hardening.log();
            announce(&format!("listening on {scheme}://{addr}\n"));
            notify_ready();
        },
        shutdown,
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

pub async fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    if args.kek_file.is_some() {
        return Err(UsageError(
            "edges no longer take a KEK file (--kek-file, COFFER_KEK_FILE): an edge makes its own node key and is granted the replication key by the control plane; delete the edge's copy of the KEK file and start it without the flag (see docs/edges.md, \"Upgrading from --kek-file\")".into(),
        )
        .into());
    }
    let hardening = coffer_server::harden_process();
    let _log = init_logging(&args.log);
    let reload = reload_on_sighup()?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let upstreams: Vec<String> = args
        .upstreams
        .into_iter()
        .filter(|u| !u.trim().is_empty())
        .collect();
    let from_file = args.node_token.is_none();
    let node_token = match (args.node_token, &args.node_token_file) {
        (Some(token), _) => Some(token.0),
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => None,
    }
    .filter(|t| !t.trim().is_empty());
    let mut missing = Vec::new();
    if upstreams.is_empty() {
        missing.push("--upstream (or COFFER_UPSTREAM)");
    }
    if node_token.is_none() {
        missing.push("--node-token (or COFFER_NODE_TOKEN, or --node-token-file)");
    }
    let (true, Some(node_token)) = (missing.is_empty(), node_token) else {
        return Err(UsageError(format!(
            "missing connection settings: {}; `coffer node create NAME` makes a node token",
            missing.join(", ")
        ))
        .into());
    };
    if !node_token.starts_with("coffernode_") {
        let given = match &args.node_token_file {
            Some(path) if from_file => format!("the node token in {}", path.display()),
            _ => "--node-token".to_owned(),
        };
        anyhow::bail!(
            "{given} is not a node token (they start with coffernode_; make one with `coffer node create NAME`)"
        );
    }
    let opts = coffer_edge::EdgeOptions {
        upstreams,
        node_token,
        data_dir: args.data_dir,
        listen: args.listen,
        tls,
        insecure_http: args.insecure_http,
        insecure_http_upstream: args.insecure_http_upstream,
        ca_cert: args.ca_cert,
        feed_key: args.feed_key,
        serve_feed: args.serve_feed,
        staleness: std::time::Duration::from_secs(args.staleness),
        long_poll: coffer_edge::EdgeOptions::DEFAULT_LONG_POLL,
        max_staleness: args.max_staleness.map(std::time::Duration::from_secs),
        snapshot_bounds: coffer_edge::SnapshotBounds::default(),
        trusted_proxies: args.proxies.trusted()?,
        http: args.limits.http(),
        snapshots: args.limits.snapshots(),
        runtime_rate: args.limits.runtime_rate(),
        reload,
        metrics_listen: args.metrics.metrics_listen,
    };
    let shutdown = shutdown_signal()?;
    coffer_edge::run(
        opts,
        move |addr, _| {
            hardening.log();
            announce(&format!("listening on {scheme}://{addr}\n"));
            notify_ready();
        },
        shutdown,
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let hardening = coffer_server::harden_process();
    let _log = init_logging(&args.log);
    let reload = reload_on_sighup()?;
    let creds_path = args.data_dir.join(DEV_CREDENTIALS);
    let creds = if needs_init(&args.data_dir)? {
        let outcome = coffer_server::init_data_dir(&args.data_dir).await?;
        let creds = DevCredentials {
            account_id: outcome.account_id.to_string(),
            api_token: Zeroizing::new(outcome.api_token.expose_secret().to_owned()),
        };
        write_credentials(&creds_path, &creds).with_context(|| {
            format!(
                "cannot save {}; delete {} and start again",
                creds_path.display(),
                args.data_dir.display()
            )
        })?;
        tracing::info!(data_dir = %args.data_dir.display(), "created a development data dir");
        creds
    } else {
        read_credentials(&creds_path, &args.data_dir)?
    };
    let opts = ServeOptions {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        tls: None,
        insecure_http: false,
        dashboard_secure_cookies: Default::default(),
        secrets_quota: ServeOptions::DEFAULT_SECRETS_QUOTA,
        max_stores: ServeOptions::DEFAULT_MAX_STORES,
        feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        keys: Default::default(),
        reload,
        metrics_listen: args.metrics.metrics_listen,
    };
    let shutdown = shutdown_signal()?;
    let result = coffer_server::serve(
        opts,
        move |addr| {
            hardening.log();
            announce(&format!("listening on http://{addr}\n"));
            announce(&dev_banner(addr, &creds, &creds_path));
            notify_ready();
        },
        shutdown,
    )
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(e @ ServerError::Bind { .. }) => Err(anyhow::anyhow!(
            "{e}; choose another address with --listen (port 0 picks a free one)"
        )),
        Err(e) => Err(e.into()),
    }
}

/// The node token in the file at `path` (`--node-token-file`), without surrounding whitespace,
/// read by the rules every secret file is read by ([`coffer_hsm::read_secret_file`]: a private
/// regular file, a FIFO refused rather than read, of at most 4096 bytes, not empty). A path
/// that looks like a token itself is refused without being repeated.
fn read_token_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    /// Far more than a token; a path to something else is refused rather than read.
    const MAX_BYTES: u64 = 4096;
    if let Some(what) = crate::config_file::looks_like_secret(&path.to_string_lossy()) {
        return Err(UsageError(format!(
            "--node-token-file names no file: its value looks like {what} (not repeated here); give the path of a file holding the token, or the token itself as COFFER_NODE_TOKEN"
        ))
        .into());
    }
    let text = coffer_hsm::read_secret_file(path, MAX_BYTES)
        .map_err(|what| UsageError(format!("the node token file {} {what}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(UsageError(format!("the node token file {} is empty", path.display())).into());
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// Prints to standard output and flushes, ignoring a closed stdout: the server keeps running
/// even if nobody reads its announcements.
fn announce(text: &str) {
    let _ = output::print(text);
}

/// Tells the service manager that the service is up (`READY=1` to `NOTIFY_SOCKET`, what
/// `Type=notify` waits for); nothing when the variable is unset. A failure is logged: systemd then
/// fails the start when its timeout runs out, which says the same.
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::error!(error = %e, "cannot tell the service manager that the service is ready (NOTIFY_SOCKET)");
    }
}

/// Logs to standard error through a writer thread, so that no request waits for the write
/// of its log line; `RUST_LOG` overrides the default level, `info`. The request lines of
/// successful runtime reads (target [`coffer_server::ACCESS_LOG_TARGET`]) are written only with
/// `--access-log`, whatever `RUST_LOG` says. `--log-format json` writes each line as one JSON
/// object ([`json_log`]).
///
/// The writer never drops a line (`lossy(false)`): refusals and errors are always logged, and
/// a request waits for the log only once 128,000 lines are queued behind a stalled standard
/// error. The returned guard flushes the queue when dropped: keep it until the command ends.
fn init_logging(args: &LogArgs) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // `--log-level` (or `RUST_LOG`, or the config file's `[log] level`) was checked when the
    // command line was parsed.
    let mut filter = EnvFilter::builder()
        .parse(args.log_level.as_deref().unwrap_or("info"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    filter = filter.add_directive(access_log_directive(args.access_log));
    // tokio-postgres logs every statement with its parameters (token hashes, sealed values)
    // at debug, and PostgreSQL's NOTICEs at info: kept to warnings unless the filter names
    // it itself, so `--log-level debug` does not put query parameters in the log.
    if !args
        .log_level
        .as_deref()
        .is_some_and(|level| level.contains("tokio_postgres"))
        && let Ok(directive) = "tokio_postgres=warn".parse()
    {
        filter = filter.add_directive(directive);
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("coffer-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // `try_init` fails only if a subscriber is already installed, which cannot happen: each
    // process runs one command.
    let _ = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_log::FlatJson)
            .try_init(),
    };
    guard
}

/// The filter directive that turns the request lines of successful runtime reads on or off.
fn access_log_directive(on: bool) -> tracing_subscriber::filter::Directive {
    let level = if on { "info" } else { "off" };
    format!("{}={level}", coffer_server::ACCESS_LOG_TARGET)
        .parse()
        .expect("a target and a level make a valid directive")
}

/// A [`coffer_server::Reload`] asked for on every SIGHUP (what `systemctl reload` sends): the
/// TLS certificate and key, and an edge's upstream CA bundle, are read again. The handler is
/// installed now, so SIGHUP no longer ends the process.
fn reload_on_sighup() -> anyhow::Result<coffer_server::Reload> {
    let reload = coffer_server::Reload::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let asked = reload.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // Plain HTTP and no CA bundle: nothing watches, and nothing is reloaded.
                tracing::info!(
                    "SIGHUP received: reloading the TLS certificate and CA files, if any"
                );
                asked.request();
            }
        });
    }
    Ok(reload)
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, so a
/// signal that arrives while the server starts is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                // Without a Ctrl-C handler the server can only be stopped by killing it.
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received, shutting down");
        })
    }
}

// ---- dev credentials ----

struct DevCredentials {
    account_id: String,
    api_token: Zeroizing<String>,
}

#[derive(Deserialize)]
struct CredentialsFile {
    account_id: String,
    api_token: String,
}

/// True if `dir` does not exist or is an empty directory.
fn needs_init(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

fn write_credentials(path: &Path, creds: &DevCredentials) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let text = Zeroizing::new(credentials_json(&creds.account_id, &creds.api_token));
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// After an offline operator-token rotation of a `coffer dev` data dir: its
/// `dev-credentials.json` holds the operator token, now revoked, so it gets the new one
/// (written beside it, then renamed over it). Returns whether there was one to replace.
pub fn replace_dev_token(data_dir: &Path, api_token: &str) -> anyhow::Result<bool> {
    let path = data_dir.join(DEV_CREDENTIALS);
    if !path.exists() {
        return Ok(false);
    }
    let old = read_credentials(&path, data_dir)?;
    let next = data_dir.join(format!("{DEV_CREDENTIALS}.new"));
    // A leftover from an interrupted replacement would make create_new fail.
    let _ = std::fs::remove_file(&next);
    let creds = DevCredentials {
        account_id: old.account_id,
        api_token: Zeroizing::new(api_token.to_owned()),
    };
    write_credentials(&next, &creds)
        .and_then(|()| std::fs::rename(&next, &path))
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(true)
}

fn read_credentials(path: &Path, data_dir: &Path) -> anyhow::Result<DevCredentials> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "{} is not a `coffer dev` data dir (it has no {DEV_CREDENTIALS}): run `coffer \
             server --data-dir {}` with the credentials `coffer init` printed, or choose another \
             --data-dir",
            data_dir.display(),
            data_dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    warn_if_readable_by_others(path);
    let file: CredentialsFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not valid: delete {} to start over",
            path.display(),
            data_dir.display()
        )
    })?;
    Ok(DevCredentials {
        account_id: file.account_id,
        api_token: Zeroizing::new(file.api_token),
    })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the dev credentials file is readable by other users; `chmod 600` it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The URL a client on this machine should use: an unspecified listen address (`0.0.0.0`)
/// becomes loopback.
fn client_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

fn dev_banner(addr: SocketAddr, creds: &DevCredentials, creds_path: &Path) -> String {
    let url = client_url(addr);
    let account = &creds.account_id;
    let token = creds.api_token.as_str();
    format!(
        "\n\
         Coffer development server (local development only)\n\
         \n\
         \x20 URL:         {url}\n\
         \x20 Account ID:  {account}\n\
         \x20 API token:   {token}\n\
         \x20 (saved in clear in {path})\n\
         \n\
         Try it:\n\
         \x20 COFFER_API_URL={url} COFFER_API_TOKEN={token} COFFER_ACCOUNT_ID={account} \
         coffer store create --name my-store\n\
         \n\
         With wrangler:\n\
         \x20 export CLOUDFLARE_API_BASE_URL={url}/client/v4 CLOUDFLARE_API_TOKEN={token} \
         CLOUDFLARE_ACCOUNT_ID={account}\n\
         \x20 npx wrangler secrets-store store create my-store --remote\n\
         \n\
         Press Ctrl-C to stop.\n",
        path = creds_path.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_directive_names_the_access_target() {
        let on = access_log_directive(true).to_string();
        let off = access_log_directive(false).to_string();
        assert_eq!(on, format!("{}=info", coffer_server::ACCESS_LOG_TARGET));
        assert_eq!(off, format!("{}=off", coffer_server::ACCESS_LOG_TARGET));
    }

    #[test]
    fn client_url_replaces_unspecified_addresses() {
        assert_eq!(
            client_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(client_url("[::]:9".parse().unwrap()), "http://[::1]:9");
        assert_eq!(
            client_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn credentials_file_is_private_and_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_CREDENTIALS);
        let creds = DevCredentials {
            account_id: "acc".into(),
            api_token: Zeroizing::new("coffer_tok".into()),
        };
        write_credentials(&path, &creds).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            write_credentials(&path, &creds).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        let read = read_credentials(&path, dir.path()).unwrap();
        assert_eq!(read.account_id, "acc");
        assert_eq!(read.api_token.as_str(), "coffer_tok");
    }

    #[test]
    fn a_foreign_data_dir_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        assert!(needs_init(dir.path()).unwrap());
        assert!(needs_init(&dir.path().join("absent")).unwrap());
        std::fs::write(dir.path().join("something"), "x").unwrap();
        assert!(!needs_init(dir.path()).unwrap());
        let err = read_credentials(&dir.path().join(DEV_CREDENTIALS), dir.path())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("is not a `coffer dev` data dir"),
            "{err}"
        );
    }

    fn token_file(dir: &Path, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("node-token");
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_node_token_file_is_read_by_the_pin_files_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), b"  coffernode_s3cret \n", 0o600);
        assert_eq!(
            read_token_file(&path).unwrap().as_str(),
            "coffernode_s3cret"
        );
        for (bytes, mode, expect) in [
            (&b"coffernode_s3cret"[..], 0o644, "has mode 644"),
            (b"coffernode_s3cret", 0o640, "`chmod 600"),
            (b"", 0o600, "is empty"),
            (b" \n\n", 0o600, "is empty"),
            (&[b'a'; 5000], 0o600, "over 4096 bytes"),
        ] {
            let path = token_file(dir.path(), bytes, mode);
            let message = read_token_file(&path).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("the node token file {} ", path.display())),
                "{message}"
            );
            assert!(message.contains(expect), "{mode:o}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn a_fifo_as_the_node_token_file_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Nothing writes to it: reading it would hang the test.
        let message = read_token_file(&fifo).unwrap_err().to_string();
        assert!(message.contains("not a regular file"), "{message}");
    }

    #[test]
    fn a_token_given_as_the_token_files_path_is_not_repeated() {
        let message = read_token_file(Path::new("coffernode_0123abcd_s3cret"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("names no file"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn banner_has_both_clients_env_vars() {
        let creds = DevCredentials {
            account_id: "acc".into(),
            api_token: Zeroizing::new("coffer_tok".into()),
        };
        let text = dev_banner(
            "127.0.0.1:8080".parse().unwrap(),
            &creds,
            Path::new("d/dev-credentials.json"),
        );
        assert!(text.contains(
            "COFFER_API_URL=http://127.0.0.1:8080 COFFER_API_TOKEN=coffer_tok \
             COFFER_ACCOUNT_ID=acc coffer store create --name my-store"
        ));
        assert!(text.contains("CLOUDFLARE_API_BASE_URL=http://127.0.0.1:8080/client/v4"));
        assert!(text.contains("local development only"));
    }
}
