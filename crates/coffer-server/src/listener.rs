//! The listener every server and edge serves on, and what it lets a client cost before it has
//! authenticated anything.
//!
//! - **A cap on open connections.** A connection is accepted only once a slot is free
//!   ([`HttpLimits::max_connections`]); until then it waits in the kernel's accept queue,
//!   holding no file descriptor of this process (past the queue, the kernel drops new
//!   handshakes and clients retry). The cap is lowered to fit the open-file limit, which is
//!   raised to its hard limit at start.
//! - **A cap per client address.** One address (an IPv6 /64) holds at most
//!   [`HttpLimits::max_connections_per_address`] of the slots; a connection past it is closed
//!   as soon as it is accepted, before a byte is read. So one client, however it keeps its
//!   connections busy (HTTP/2 pings, trickled bodies), cannot take every slot: it takes its
//!   share. Loopback is not capped (local tools, and a proxy on the same host).
//! - **A header timeout.** A connection must send a whole request head within
//!   [`HttpLimits::header_timeout`] of being accepted (axum-server's first-request timeout,
//!   which also covers the protocol detection and, with TLS, the handshake), and within the
//!   same time of going idle between requests (hyper's HTTP/1 header-read timeout, which runs
//!   from the end of the previous response): a client trickling header bytes is closed.
//! - **An idle timeout.** A connection on which no byte was read or written for a whole
//!   [`HttpLimits::idle_timeout`] is closed ([`Conn`]); it matters for HTTP/2, where a
//!   connection between requests is otherwise kept open for as long as the peer likes.
//! - **Header and stream limits.** HTTP/1 request heads are limited to [`MAX_HEADER_BYTES`]
//!   (hyper answers a larger one 431 and closes), HTTP/2 header lists to the same (h2 answers
//!   431), and an HTTP/2 connection to [`MAX_CONCURRENT_STREAMS`] streams at once.
//!
//! HTTP itself is hyper's (through axum-server); this module only counts connections and
//! watches for silence on the socket.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// The largest request head (HTTP/1: request line and headers) or header list (HTTP/2).
pub const MAX_HEADER_BYTES: usize = 32 << 10;

/// HTTP/2 streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

/// File descriptors kept for everything but connections (the database and its WAL, logs, the
/// listener, upstream connections).
const RESERVED_FDS: u64 = 256;

/// What one listener lets clients cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold at once; loopback is not capped.
    pub max_connections_per_address: usize,
    /// How long a connection may take to send a request head, from being accepted or from
    /// the end of its previous response.
    pub header_timeout: Duration,
    /// A connection that reads and writes nothing for this long is closed. Longer than the
    /// longest request that sends nothing while it waits (a feed long-poll, 60 s at most).
    pub idle_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// An eighth of the default cap: a load balancer's pool fits, one client cannot fill it.
    pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 512;
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: HttpLimits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: HttpLimits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout: HttpLimits::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: HttpLimits::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Raises the soft open-file limit to the hard one (once per process) and returns the
/// connections that fit in it beside [`RESERVED_FDS`]; `None` if there is no limit.
pub(crate) fn connections_that_fit() -> Option<usize> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "cannot raise the open-file limit");
            }
        }
    });
    let soft = getrlimit(Resource::Nofile).current?;
    Some(usize::try_from(soft.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX))
}

/// The address type of a [`Listener`]: the peer of an accepted connection (or, for the
/// listener itself, its local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl axum_server::Address for Peer {
    type Stream = Conn;
    type Listener = Listener;
}

/// Handlers see the peer as `ConnectInfo<SocketAddr>`, as with a plain listener.
impl axum::extract::connect_info::Connected<Peer> for SocketAddr {
    fn connect_info(peer: Peer) -> SocketAddr {
        peer.0
    }
}

/// A TCP listener that accepts a connection only when one of its slots is free, and keeps
/// one client address from holding more than its share.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    idle: Duration,
    /// Counts open connections, with `--metrics-listen`.
    connections: Option<coffer_metrics::Connections>,
}

impl Listener {
    pub(crate) fn new(inner: TcpListener, limits: &HttpLimits) -> Listener {
        Listener {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: Arc::new(PerAddress {
                max: limits.max_connections_per_address.max(1),
                open: Mutex::new(HashMap::new()),
            }),
            idle: limits.idle_timeout,
            connections: None,
        }
    }

    /// [`PerAddress::admit`], counting a refusal in the metrics.
    fn admit(&self, peer: IpAddr) -> Option<AddressShare> {
        let share = self.per_address.admit(peer);
        if share.is_none()
            && let Some(connections) = &self.connections
        {
            connections.refused();
        }
        share
    }

    /// Counts every open connection in `connections`, and those refused per address.
    pub(crate) fn counting(mut self, connections: Option<coffer_metrics::Connections>) -> Listener {
        self.connections = connections;
        self
    }
}

/// Open connections by client group ([`crate::limiter::key`]). Holds an entry only while the
/// group has a connection open, so it is never larger than the connection cap.
#[derive(Debug)]
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts a connection from `peer`, or `None` if its group holds `max` already.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<AddressShare> {
        if peer.to_canonical().is_loopback() {
            return Some(AddressShare(None));
        }
        let group = crate::limiter::key(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(group).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressShare(Some((Arc::clone(self), group))))
    }
}

/// One connection's place in its address's count, given back on drop.
#[derive(Debug)]
struct AddressShare(Option<(Arc<PerAddress>, IpAddr)>);

impl Drop for AddressShare {
    fn drop(&mut self) {
        if let Some((table, group)) = self.0.take() {
            let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&group) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&group);
                }
            }
        }
    }
}

impl axum_server::AddrListener<Conn, Peer> for Listener {
    fn bind_to(_: Peer) -> impl Future<Output = io::Result<Listener>> + Send {
        // Only made from a bound socket (`Listener::new`).
        std::future::ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a capped listener is made from a bound socket",
        )))
    }

    async fn accept_stream(&self) -> io::Result<(Conn, Peer)> {
        // Wait for a slot first: until then the connection stays in the kernel's queue.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the listener is closed"))?;
        loop {
            let (io, peer) = self.inner.accept().await?;
            match self.admit(peer.ip()) {
                Some(share) => {
                    let mut conn = Conn::new(io, slot, share, self.idle);
                    conn._counted = self.connections.as_ref().map(|c| c.open());
                    return Ok((conn, Peer(peer)));
                }
                // Closed unread; the slot stays for the next connection. Not logged per
                // connection: a client over its share would write a line for each attempt.
                None => drop(io),
            }
        }
    }

    fn get_local_addr(&self) -> io::Result<Peer> {
        self.inner.local_addr().map(Peer)
    }
}

/// An accepted connection: it holds its slot until it is dropped, and fails its pending reads
/// and writes once a whole idle period passed without a byte read or written.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    _share: AddressShare,
    /// Counted among the open connections until dropped (with metrics).
    _counted: Option<coffer_metrics::ConnectionGuard>,
    idle: Idle,
}

#[derive(Debug)]
struct Idle {
    period: Duration,
    timer: Pin<Box<Sleep>>,
    /// A byte moved since the timer was last set.
    active: bool,
}

impl Idle {
    /// Whether a whole period passed with nothing moving; otherwise the timer is armed (and
    /// wakes the task that polls it when it runs out).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if !self.active {
                return true;
            }
            self.active = false;
            let next = tokio::time::Instant::now() + self.period;
            self.timer.as_mut().reset(next);
        }
        false
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
}

impl Conn {
    fn new(
        io: TcpStream,
        slot: OwnedSemaphorePermit,
        share: AddressShare,
        period: Duration,
    ) -> Conn {
        Conn {
            io,
            _slot: slot,
            _share: share,
            _counted: None,
            idle: Idle {
                period,
                timer: Box::pin(tokio::time::sleep(period)),
                active: false,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.idle.active |= buf.filled().len() > before;
                Poll::Ready(r)
            }
            Poll::Pending if this.idle.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.idle.active |= matches!(r, Ok(n) if n > 0);
                Poll::Ready(r)
            }
            Poll::Pending if this.idle.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.idle.active |= matches!(r, Ok(n) if n > 0);
                Poll::Ready(r)
            }
            Poll::Pending if this.idle.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending if this.idle.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Applies `limits` to a server's protocol settings: hyper's HTTP/1 header-read timeout and
/// head size, HTTP/2 streams and header-list size, and the time to a first request.
pub(crate) fn configure<A>(
    server: axum_server::Server<Peer, A>,
    limits: &HttpLimits,
) -> axum_server::Server<Peer, A> {
    let mut server = server.first_request_timeout(limits.header_timeout);
    let builder = server.http_builder();
    builder
        .http1()
        .header_read_timeout(limits.header_timeout)
        // The read buffer's ceiling is the head's: a longer head is answered 431.
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    server
}

#[cfg(test)]
mod tests {
    use axum_server::AddrListener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn listener(limits: HttpLimits) -> (Listener, SocketAddr) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        (Listener::new(inner, &limits), addr)
    }

    /// Past the cap a connection is not accepted (it waits in the kernel's queue) until an
    /// accepted one is dropped.
    #[tokio::test]
    async fn a_connection_is_accepted_only_when_a_slot_is_free() {
        let (listener, addr) = listener(HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        })
        .await;
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept_stream().await.unwrap();
        let second = listener.accept_stream();
        tokio::pin!(second);
        // No slot: the second cannot be accepted, however long it waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut second)
                .await
                .is_err()
        );
        drop(first);
        let (_second, peer) = second.await.unwrap();
        assert!(peer.0.ip().is_loopback());
    }

    /// One address (an IPv6 /64) holds at most its share of the slots; closing one makes
    /// room for the next, and other addresses are not affected.
    #[test]
    fn one_address_holds_at_most_its_share() {
        let table = Arc::new(PerAddress {
            max: 2,
            open: Mutex::new(HashMap::new()),
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = table.admit(ip("192.0.2.7")).expect("first");
        let a2 = table.admit(ip("192.0.2.7")).expect("second");
        assert!(
            table.admit(ip("192.0.2.7")).is_none(),
            "third from one address"
        );
        // The same client as an IPv4-mapped address is the same client.
        assert!(table.admit(ip("::ffff:192.0.2.7")).is_none());
        let other = table.admit(ip("192.0.2.8")).expect("another address");
        drop(a1);
        let a3 = table
            .admit(ip("192.0.2.7"))
            .expect("room again after a close");
        // Addresses of one /64 share one count.
        let v6a = table.admit(ip("2001:db8:1:2::1")).unwrap();
        let v6b = table.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(table.admit(ip("2001:db8:1:2::42")).is_none());
        assert!(table.admit(ip("2001:db8:1:3::1")).is_some());
        // Loopback is not counted.
        let local: Vec<_> = (0..5)
            .map(|_| table.admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert!(table.admit(ip("::1")).is_some());
        drop((a2, a3, other, v6a, v6b, local));
        assert!(
            table.open.lock().unwrap().is_empty(),
            "entries go when their last connection closes"
        );
    }

    /// A connection past its address's share is counted as refused in the metrics.
    #[tokio::test]
    async fn a_refusal_per_address_is_counted() {
        let metrics = coffer_metrics::Metrics::new();
        let (listener, _) = listener(HttpLimits {
            max_connections_per_address: 1,
            ..HttpLimits::default()
        })
        .await;
        let listener = listener.counting(Some(metrics.connections()));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let _first = listener.admit(ip).expect("within its share");
        assert!(listener.admit(ip).is_none());
        assert!(listener.admit(ip).is_none());
        let text = metrics.encode().unwrap();
        assert!(
            text.lines()
                .any(|l| l == "coffer_http_connections_refused_total 2"),
            "{text}"
        );
    }

    /// Loopback connections are not capped per address (only by the listener's own cap).
    #[tokio::test]
    async fn loopback_is_not_capped_per_address() {
        let (listener, addr) = listener(HttpLimits {
            max_connections_per_address: 1,
            ..HttpLimits::default()
        })
        .await;
        let _clients = (
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        );
        let _first = listener.accept_stream().await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), listener.accept_stream()).await;
        assert!(
            matches!(second, Ok(Ok(_))),
            "a second loopback connection is accepted"
        );
    }

    /// A connection on which bytes keep moving stays open however long it lasts; one silent
    /// for a whole idle period fails its pending read.
    #[tokio::test]
    async fn a_connection_silent_for_a_whole_period_is_closed() {
        // Long against a scheduler stall on a loaded machine: writes a third of it apart must
        // never look idle.
        let period = Duration::from_secs(2);
        let (listener, addr) = listener(HttpLimits {
            idle_timeout: period,
            ..HttpLimits::default()
        })
        .await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.accept_stream().await.unwrap();
        let writer = tokio::spawn(async move {
            // A byte every third of a period, for four periods; then silence, socket open.
            for _ in 0..12 {
                tokio::time::sleep(period / 3).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut got = 0;
        let mut buf = [0u8; 16];
        while got < 12 {
            got += conn
                .read(&mut buf)
                .await
                .expect("an active connection is kept");
        }
        let _client = writer.await.unwrap();
        let silent = tokio::time::Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = silent.elapsed();
        assert!(waited <= period * 2 + Duration::from_secs(1), "{waited:?}");
    }
}
