//! Talking to upstreams: feed answers, streamed snapshots and access-event deliveries over
//! HTTP(S), authenticated with the node token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use coffer_replication::sign::FeedKey;
use coffer_replication::wire::{
    ClusterId, FEED_CONTENT_TYPE, FeedAnswer, Frame, FrameDecoder, SNAPSHOT_CONTENT_TYPE, WireError,
};
use coffer_replication::{Position, SnapshotDigest, SnapshotSeal};
use coffer_storage::{SnapshotInstall, SqliteStorage, StorageError};
use zeroize::Zeroizing;

/// How long a snapshot may go without sending a byte before it is abandoned.
const SNAPSHOT_STALL: Duration = Duration::from_secs(30);
/// Extra time over the long-poll before a feed request is abandoned.
pub const FEED_GRACE: Duration = Duration::from_secs(10);
/// The largest feed answer accepted (upstreams cut answers at a few MiB).
const MAX_FEED_BODY: usize = 64 << 20;
/// How often a streaming answer reports progress to the follower.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What a snapshot from upstream may be. Items are staged to disk before the snapshot's
/// signature (at its end) can be checked, so an upstream could otherwise fill the disk with a
/// count and items it makes up: past either bound the snapshot is refused (an alarm) and its
/// staging rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBounds {
    /// A signed snapshot made longer ago than this is refused: a recorded one replayed. Must
    /// exceed the longest a snapshot takes to stream plus the clock skew. Default 30 min.
    pub max_age: Duration,
    /// Items at most (one per live replicated row). Default 10 million.
    pub max_items: u64,
    /// Item bytes at most. Default 16 GiB.
    pub max_bytes: u64,
}

impl Default for SnapshotBounds {
    fn default() -> SnapshotBounds {
        SnapshotBounds {
            max_age: Duration::from_secs(30 * 60),
            max_items: 10_000_000,
            max_bytes: 16 << 30,
        }
    }
}

/// Why a request to an upstream did not give a usable answer. None of these is data to apply:
/// the follower treats them as a connection-level failure of that upstream.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The v4 error code, if the answer had one.
        code: Option<u32>,
        /// How long the upstream asked to be left alone (`Retry-After`, in seconds).
        retry_after: Option<Duration>,
        /// The cluster and head the upstream names when it refuses a position beyond its head.
        cluster: Option<ClusterId>,
        head: Option<u64>,
    },
    #[error("unreadable answer: {0}")]
    Wire(#[from] WireError),
    #[error(
        "serves cluster {theirs} but this edge's data dir holds a replica of cluster {ours}; refusing it (point the edge at its own cluster, or give it an empty data dir)"
    )]
    OtherCluster { ours: String, theirs: String },
    #[error("storing the snapshot failed: {0}")]
    Storage(#[from] StorageError),
    /// A snapshot over [`SnapshotBounds`]: refused before (or while) staging it.
    #[error("the snapshot is over the bound of {limit} {what}; refusing it")]
    SnapshotTooLarge { what: &'static str, limit: u64 },
    /// A feed or snapshot answer not of the signed media type (an older, unsigned format, or
    /// something else altogether): refused, never read as another format.
    #[error("answered with media type {got:?}, not {expected}; refusing it")]
    MediaType { expected: &'static str, got: String },
}

impl FetchError {
    /// The upstream says this node was revoked (401 `node_revoked`): said only to the holder
    /// of the real node token.
    pub fn is_revocation(&self) -> bool {
        matches!(
            self,
            FetchError::Status {
                status: 401,
                code: Some(c),
                ..
            } if *c == coffer_api::ErrorCode::NodeRevoked.code()
        )
    }

    /// What the upstream asked with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why the client for upstreams cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA certificate {path}: {message}")]
    CaCert { path: PathBuf, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The HTTP client for `urls`, trusting `ca_cert` instead of the system roots if given.
fn http_client(urls: &[String], ca_cert: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("coffer-edge/", env!("CARGO_PKG_VERSION")))
        // An upstream is a fixed URL: a redirect would hand its answers (a revocation verdict
        // among them) to whoever answers at the target.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90));
    // A proxy named in the environment would see a plain-HTTP upstream's traffic, the node
    // token included; over HTTPS a proxy only relays the TLS stream, so it may stay.
    if urls.iter().any(|u| u.starts_with("http://")) {
        http = http.no_proxy();
    }
    if let Some(path) = ca_cert {
        let ca_error = |message: String| ClientError::CaCert {
            path: path.to_owned(),
            message,
        };
        // A FIFO or a device would block the read, or never end it.
        let meta = std::fs::metadata(path).map_err(|e| ca_error(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(ca_error("not a regular file".to_owned()));
        }
        let pem = std::fs::read(path).map_err(|e| ca_error(format!("cannot read: {e}")))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in the file".to_owned()));
        }
        http = http.tls_certs_only(certs);
    }
    http.build().map_err(|e| ClientError::Build(e.to_string()))
}

/// The upstreams of this node and how to reach them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub urls: Vec<String>,
    /// Replaced whole when the CA bundle is reloaded; requests load the current one.
    client: Arc<ArcSwap<reqwest::Client>>,
    ca_cert: Option<PathBuf>,
    token: Arc<Zeroizing<String>>,
    bounds: SnapshotBounds,
}

/// A snapshot streamed into an open install transaction, awaiting the follower's verdict.
#[derive(Debug)]
pub struct Staged {
    pub cluster_id: ClusterId,
    pub position: Position,
    pub intact: bool,
    /// What the follower checks the signature against: header and end as received.
    pub seal: SnapshotSeal,
    pub origin_ms: u64,
    pub install: SnapshotInstall,
}

impl Upstreams {
    /// `ca_cert`: a PEM bundle to trust instead of the system roots (a private CA).
    pub fn new(
        urls: Vec<String>,
        token: Zeroizing<String>,
        ca_cert: Option<&Path>,
    ) -> Result<Upstreams, ClientError> {
        let client = http_client(&urls, ca_cert)?;
        Ok(Upstreams {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            client: Arc::new(ArcSwap::from_pointee(client)),
            ca_cert: ca_cert.map(Path::to_owned),
            token: Arc::new(token),
            bounds: SnapshotBounds::default(),
        })
    }

    /// Trusts the CA bundle as it is now in its file, for every request made from now on: a new
    /// client, with new connections (requests in flight finish on the old one; its idle
    /// connections are dropped with it). A bundle that does not load is refused and the one in
    /// use stays. Without `ca_cert` there is nothing to reload.
    pub fn reload_ca(&self) -> Result<(), ClientError> {
        if let Some(path) = &self.ca_cert {
            self.client
                .store(Arc::new(http_client(&self.urls, Some(path))?));
        }
        Ok(())
    }

    /// Reloads the CA bundle when `reload` asks or the file changes (see
    /// [`coffer_server::Reload`]); the edge aborts it when it stops.
    pub async fn keep_ca_current(self, reload: coffer_server::Reload) {
        let Some(path) = self.ca_cert.clone() else {
            return;
        };
        reload
            .watch("upstream CA", vec![path], move || {
                self.reload_ca().map_err(|e| e.to_string())
            })
            .await;
    }

    /// Snapshots beyond `bounds` are refused.
    #[must_use]
    pub fn with_snapshot_bounds(mut self, bounds: SnapshotBounds) -> Upstreams {
        self.bounds = bounds;
        self
    }

    pub fn snapshot_bounds(&self) -> SnapshotBounds {
        self.bounds
    }

    fn get(&self, upstream: usize, path: &str) -> reqwest::RequestBuilder {
        self.client
            .load()
            .get(format!("{}{path}", self.urls[upstream]))
            .bearer_auth(self.token.as_str())
    }

    /// The entries after `after`, waiting up to `wait` for new ones.
    pub async fn feed(
        &self,
        upstream: usize,
        after: u64,
        wait: Duration,
    ) -> Result<FeedAnswer, FetchError> {
        let res = self
            .get(
                upstream,
                &format!(
                    "/replication/v1/feed?after={after}&wait_ms={}",
                    wait.as_millis()
                ),
            )
            .timeout(wait + FEED_GRACE)
            .send()
            .await
            .map_err(transport)?;
        let mut res = media(ok(res).await?, FEED_CONTENT_TYPE)?;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_FEED_BODY {
                return Err(FetchError::Transport(format!(
                    "a feed answer over {MAX_FEED_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FeedAnswer::decode(&body)?)
    }

    /// Streams a snapshot into `storage` (an install transaction left open, not committed),
    /// checking its digest on the way. `expected` is the cluster this edge belongs to, if it
    /// has one yet.
    /// `progress` is called about every half second while bytes arrive.
    pub async fn snapshot(
        &self,
        upstream: usize,
        storage: &SqliteStorage,
        expected: Option<ClusterId>,
        progress: impl Fn(),
    ) -> Result<Staged, FetchError> {
        let res = self
            .get(upstream, "/replication/v1/snapshot")
            .send()
            .await
            .map_err(transport)?;
        let mut res = media(ok(res).await?, SNAPSHOT_CONTENT_TYPE)?;
        let mut decoder = FrameDecoder::new();
        let mut last_progress = tokio::time::Instant::now();
        let mut bytes: u64 = 0;
        let mut header: Option<(
            ClusterId,
            Position,
            u64,
            u64,
            SnapshotDigest,
            SnapshotInstall,
        )> = None;
        loop {
            let chunk = tokio::time::timeout(SNAPSHOT_STALL, res.chunk())
                .await
                .map_err(|_| FetchError::Transport("the snapshot stalled".into()))?
                .map_err(transport)?;
            let Some(chunk) = chunk else {
                decoder.finish()?;
                return Err(WireError::Truncated.into());
            };
            decoder.push(&chunk);
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = tokio::time::Instant::now();
                progress();
            }
            while let Some(frame) = decoder.next_frame()? {
                match (frame, &mut header) {
                    (
                        Frame::SnapshotHeader {
                            cluster_id,
                            position,
                            count,
                            origin_ms,
                        },
                        None,
                    ) => {
                        check_cluster(expected, cluster_id)?;
                        if count > self.bounds.max_items {
                            return Err(FetchError::SnapshotTooLarge {
                                what: "items",
                                limit: self.bounds.max_items,
                            });
                        }
                        let install = storage.install_snapshot(
                            cluster_id,
                            position.seq,
                            position.hash,
                            count,
                        );
                        header = Some((
                            cluster_id,
                            position,
                            origin_ms,
                            count,
                            SnapshotDigest::new(position, count),
                            install,
                        ));
                    }
                    (Frame::Item(item), Some((_, _, _, count, digest, install))) => {
                        if digest.items() >= *count {
                            return Err(WireError::Protocol(
                                "a snapshot holds more items than its header announced",
                            )
                            .into());
                        }
                        bytes = bytes.saturating_add(item.len() as u64);
                        if bytes > self.bounds.max_bytes {
                            return Err(FetchError::SnapshotTooLarge {
                                what: "bytes",
                                limit: self.bounds.max_bytes,
                            });
                        }
                        digest.update(&item);
                        install.push(item).await?;
                    }
                    (
                        Frame::SnapshotEnd {
                            digest: sent,
                            signature,
                        },
                        Some(_),
                    ) => {
                        let Some((cluster_id, position, origin_ms, count, digest, install)) =
                            header.take()
                        else {
                            return Err(WireError::Protocol("snapshot without header").into());
                        };
                        return Ok(Staged {
                            cluster_id,
                            position,
                            intact: digest.finish() == Some(sent),
                            seal: SnapshotSeal {
                                cluster_id,
                                count,
                                digest: sent,
                                origin_ms,
                                signature,
                            },
                            origin_ms,
                            install,
                        });
                    }
                    _ => {
                        return Err(WireError::Protocol("unexpected frame in a snapshot").into());
                    }
                }
            }
        }
    }

    /// The feed-signing key the upstream names (`GET /replication/v1/feed-key`): the root's
    /// own, or the one a relay pinned.
    pub async fn feed_key(&self, upstream: usize) -> Result<FeedKey, FetchError> {
        let res = self
            .get(upstream, "/replication/v1/feed-key")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(transport)?;
        let body = ok(res).await?.bytes().await.map_err(transport)?;
        serde_json::from_slice::<coffer_api::Envelope<coffer_api::replication::FeedKeyInfo>>(&body)
            .ok()
            .and_then(|e| e.result)
            .and_then(|k| FeedKey::parse(&k.public_key).ok())
            .ok_or_else(|| FetchError::Transport("unreadable feed-key answer".into()))
    }

    /// A relay's request for a snapshot on behalf of a node below (with that node's token):
    /// the answer, checked for status and media type, its body not yet read.
    pub async fn forward_snapshot(
        &self,
        upstream: usize,
        bearer: &str,
    ) -> Result<reqwest::Response, FetchError> {
        let res = self
            .client
            .load()
            .get(format!("{}/replication/v1/snapshot", self.urls[upstream]))
            .bearer_auth(bearer)
            .send()
            .await
            .map_err(transport)?;
        media(ok(res).await?, SNAPSHOT_CONTENT_TYPE)
    }

    /// Registers a node's public key (`PUT /replication/v1/node-key`) with `bearer`: this
    /// edge's own node token, or (on a relay) the token of the node below that registers.
    pub async fn register_node_key(
        &self,
        upstream: usize,
        bearer: Option<&str>,
        registration: &coffer_api::replication::NodeKeyRegistration,
    ) -> Result<coffer_api::replication::NodeKeyReceipt, FetchError> {
        self.put_key(
            upstream,
            bearer,
            "/replication/v1/node-key".into(),
            registration,
        )
        .await
    }

    /// Registers a key for `account` (`PUT /replication/v1/node-key/accounts/{account}`), with
    /// `bearer` (a relay forwarding a node's) or this node's token.
    pub async fn register_account_key(
        &self,
        upstream: usize,
        bearer: Option<&str>,
        account: coffer_types::AccountId,
        registration: &coffer_api::replication::NodeKeyRegistration,
    ) -> Result<coffer_api::replication::NodeKeyReceipt, FetchError> {
        let path = format!("/replication/v1/node-key/accounts/{account}");
        self.put_key(upstream, bearer, path, registration).await
    }

    /// One key registration: PUT `registration` to `path` and read the receipt.
    async fn put_key(
        &self,
        upstream: usize,
        bearer: Option<&str>,
        path: String,
        registration: &coffer_api::replication::NodeKeyRegistration,
    ) -> Result<coffer_api::replication::NodeKeyReceipt, FetchError> {
        let res = self
            .client
            .load()
            .put(format!("{}{path}", self.urls[upstream]))
            .bearer_auth(bearer.unwrap_or(self.token.as_str()))
            .json(registration)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(transport)?;
        let body = ok(res).await?.bytes().await.map_err(transport)?;
        serde_json::from_slice::<coffer_api::Envelope<coffer_api::replication::NodeKeyReceipt>>(
            &body,
        )
        .ok()
        .and_then(|e| e.result)
        .ok_or_else(|| FetchError::Transport("unreadable node-key receipt".into()))
    }

    /// Delivers one access batch; `Ok(())` once the upstream has it durably.
    pub async fn deliver_access(&self, upstream: usize, body: Vec<u8>) -> Result<(), FetchError> {
        let res = self
            .client
            .load()
            .post(format!("{}/replication/v1/access", self.urls[upstream]))
            .bearer_auth(self.token.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(transport)?;
        ok(res).await.map(drop)
    }
}

/// Refuses an upstream of another cluster than the one this edge's replica belongs to.
pub fn check_cluster(expected: Option<ClusterId>, theirs: ClusterId) -> Result<(), FetchError> {
    match expected {
        Some(ours) if ours != theirs => Err(FetchError::OtherCluster {
            ours: hex::encode(ours),
            theirs: hex::encode(theirs),
        }),
        _ => Ok(()),
    }
}

fn transport(e: reqwest::Error) -> FetchError {
    FetchError::Transport(cause(&e))
}

/// What went wrong, said as plainly as the error chain allows: reqwest's own message ("error
/// sending request") names no cause, the innermost error does ("Connection refused", a TLS
/// alert, "invalid peer certificate: UnknownIssuer").
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if e.is_connect() {
        format!("cannot connect: {innermost}")
    } else {
        innermost.to_string()
    }
}

/// The most of an error answer's body read (a v4 envelope is a few hundred bytes).
const MAX_ERROR_BODY: usize = 64 << 10;
/// The most of an upstream's error message kept (it goes into logs and `/healthz`).
const MAX_ERROR_MESSAGE: usize = 300;

/// An error answer's body, up to [`MAX_ERROR_BODY`] bytes (empty if unreadable).
async fn error_body(mut res: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// `text` cut to at most `max` bytes on a character boundary, control characters (a forged
/// line break in a log) replaced.
fn shorten(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The response if its media type is `expected` (parameters aside).
fn media(res: reqwest::Response, expected: &'static str) -> Result<reqwest::Response, FetchError> {
    let got = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(res)
    } else {
        Err(FetchError::MediaType {
            expected,
            got: shorten(&got, 100),
        })
    }
}

/// The response if it is a 200; otherwise the error its v4 envelope describes.
async fn ok(res: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cluster = header(coffer_replication::wire::CLUSTER_HEADER).and_then(|v| {
        let mut id = [0u8; 16];
        hex::decode_to_slice(v, &mut id).ok().map(|()| id)
    });
    let head = header(coffer_replication::wire::HEAD_HEADER).and_then(|v| v.parse().ok());
    let retry_after = header(axum::http::header::RETRY_AFTER.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = error_body(res).await;
    let error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .map(|v| v["errors"][0].clone());
    let message = error
        .as_ref()
        .and_then(|e| e["message"].as_str())
        .map(|m| shorten(m, MAX_ERROR_MESSAGE))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let code = error
        .as_ref()
        .and_then(|e| e["code"].as_u64())
        .and_then(|c| u32::try_from(c).ok());
    Err(FetchError::Status {
        status: status.as_u16(),
        message,
        code,
        retry_after,
        cluster,
        head,
    })
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn upstream_messages_are_cut_short_and_kept_to_one_line() {
        assert_eq!(shorten("plain", 300), "plain");
        assert_eq!(shorten("a\nforged log line\r", 300), "a forged log line ");
        assert_eq!(shorten(&"x".repeat(1_000), 300).len(), 300);
        // Never inside a character.
        assert_eq!(shorten("ééé", 3), "é");
    }
}
