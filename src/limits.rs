//! Request limits at the edge: the request target and header size (a middleware
//! answering 414 / 431 with the JSON error body); the number of open client
//! connections (a listener that stops accepting at `server.max_connections`, further
//! connections waiting in the kernel's listen backlog until one closes) and per client
//! address (`server.max_connections_per_client`: the next one is answered 429 and
//! closed); and how long a connection may take to send a request head or sit idle
//! between requests (`ConnTimer`, hyper's timer for one connection).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::http::error::AppError;

/// Rejects a request whose target is longer than `server.max_uri_bytes` (414) or whose
/// headers (names, values and 4 bytes of `: ` and CRLF per line) exceed
/// `server.max_header_bytes` (431), before any routing.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let server = &state.config.server;
    let uri = req.uri();
    let uri_len = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > server.max_uri_bytes {
        return AppError::UriTooLong(format!(
            "request target is {uri_len} bytes; the limit is {} (server.max_uri_bytes)",
            server.max_uri_bytes
        ))
        .into_response();
    }
    let header_len: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_len > server.max_header_bytes {
        return AppError::HeadersTooLarge(format!(
            "request headers are {header_len} bytes; the limit is {} (server.max_header_bytes)",
            server.max_header_bytes
        ))
        .into_response();
    }
    // A body (admin JSON, an Xtream form) arrives whole within `header_timeout` of the
    // head, or reading it fails (408): a client that stalls mid-body holds no slot.
    let req = if http_body::Body::is_end_stream(req.body()) {
        req
    } else {
        let within = server.header_timeout;
        req.map(|body| Body::new(Deadline::new(body, within)))
    };
    next.run(req).await
}

/// Why a request body was cut off: it did not arrive within `server.header_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s (server.header_timeout)", .0.as_secs_f64())]
pub struct BodyTooLate(Duration);

/// The deadline's error behind a body read's error, if that is why it failed.
pub fn body_too_late(e: &axum::Error) -> Option<&BodyTooLate> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(late) = c.downcast_ref::<BodyTooLate>() {
            return Some(late);
        }
        cause = c.source();
    }
    None
}

/// A request body that fails with [`BodyTooLate`] once `within` has passed before its
/// end.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    within: Duration,
}

impl Deadline {
    fn new(inner: Body, within: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(within)),
            within,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let late = BodyTooLate(self.within);
            return Poll::Ready(Some(Err(axum::Error::new(late))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How long a connection refused for its client's cap has to send its request head
/// before it is closed without an answer.
const REFUSE_WITHIN: Duration = Duration::from_secs(2);

/// Refused connections answered at once at most; beyond that they are closed at once,
/// so a flood of refused connections holds nothing.
const REFUSING_AT_ONCE: usize = 64;

/// A TCP listener that holds at most `max` connections open (`accept` waits for a
/// connection to close before taking the next one from the backlog) and at most
/// `per_client` from one client address (0: no such cap).
pub struct Limited {
    inner: TcpListener,
    /// One permit per open connection, `max` in all.
    slots: Arc<Semaphore>,
    max: usize,
    per_client: usize,
    /// Open connections per client address (addresses with none are removed).
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Refused connections being answered (`REFUSING_AT_ONCE` at most).
    refusing: Arc<Semaphore>,
    /// When the cap warnings were last logged (at most one line a minute each).
    warned: Option<Instant>,
    warned_client: Option<Instant>,
}

impl Limited {
    pub fn new(inner: TcpListener, max: usize, per_client: usize) -> Self {
        let max = max.max(1);
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_client,
            clients: Arc::default(),
            refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            warned: None,
            warned_client: None,
        }
    }

    /// The next connection to serve. One whose client address is at its cap is
    /// answered 429 (on a task of its own) and not returned.
    pub async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let permit = self.slot().await;
            let (stream, addr) = self.accept_any().await;
            match self.client_slot(addr.ip()) {
                Some(client) => {
                    return (
                        Counted {
                            stream,
                            activity: Arc::default(),
                            _client: client,
                            _permit: permit,
                        },
                        addr,
                    )
                }
                None => {
                    drop(permit);
                    self.refuse(stream, addr);
                }
            }
        }
    }

    async fn slot(&mut self) -> OwnedSemaphorePermit {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return p;
        }
        // At most one line a minute while the cap is hit.
        if once_a_minute(&mut self.warned) {
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached; new connections wait until one closes"
            );
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    async fn accept_any(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    // Bodies are written chunk by chunk as the upstream sends them: with
                    // Nagle's algorithm a short last chunk would wait for the client's
                    // (delayed) acknowledgement of the one before, tens of milliseconds.
                    if let Err(e) = accepted.0.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    return accepted;
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: back off as axum's own
                    // listener does.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Counts one more connection of `ip`, unless it is at its cap.
    fn client_slot(&self, ip: IpAddr) -> Option<ClientSlot> {
        let ip = client_key(ip);
        if self.per_client > 0 {
            let mut clients = self
                .clients
                .lock()
                .expect("client counts lock is never poisoned");
            let open = clients.entry(ip).or_default();
            if *open >= self.per_client {
                return None;
            }
            *open += 1;
        }
        Some(ClientSlot {
            clients: (self.per_client > 0).then(|| self.clients.clone()),
            ip,
        })
    }

    /// Answers the request of a connection over its client's cap with a 429 and
    /// closes it; closes it at once when many are being answered already.
    fn refuse(&mut self, stream: TcpStream, addr: SocketAddr) {
        if once_a_minute(&mut self.warned_client) {
            tracing::warn!(
                client = %addr.ip(),
                max_connections_per_client = self.per_client,
                "a client is at its connection cap; its new connections are refused"
            );
        }
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        let per_client = self.per_client;
        tokio::spawn(async move {
            let _permit = permit;
            let answer = hyper::service::service_fn(move |_req| async move {
                let mut response = crate::http::error::AppError::TooManyConnections(format!(
                    "this client address has {per_client} connections open already \
                     (server.max_connections_per_client); close one and retry"
                ))
                .into_response();
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                Ok::<_, std::convert::Infallible>(response)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REFUSE_WITHIN)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
            let _ = tokio::time::timeout(REFUSE_WITHIN * 2, conn).await;
        });
    }
}

/// Whom a connection is counted against: its IPv4 address (an IPv4-mapped IPv6 one
/// read as IPv4), or a global IPv6 address's /64 network, the least one host is given:
/// a client holding a /64 could otherwise open the cap's worth from each of its
/// addresses. A local IPv6 address (loopback, link-local `fe80::/10`, unique local
/// `fc00::/7`) stays itself: every device of a home network shares its /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let local = v6.is_loopback()
                || bits >> 118 == 0b11_1111_1010 // fe80::/10
                || bits >> 121 == 0b111_1110; // fc00::/7
            if local {
                IpAddr::V6(v6)
            } else {
                IpAddr::V6((bits & !((1u128 << 64) - 1)).into())
            }
        }
        v4 => v4,
    }
}

fn once_a_minute(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One open connection of a client address; counted down when dropped.
struct ClientSlot {
    /// `None` when there is no per-client cap (nothing is counted).
    clients: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(clients) = &self.clients else {
            return;
        };
        let mut clients = clients
            .lock()
            .expect("client counts lock is never poisoned");
        if let Some(open) = clients.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection; its slots free when it is dropped.
pub struct Counted {
    stream: TcpStream,
    activity: Arc<Activity>,
    _client: ClientSlot,
    _permit: OwnedSemaphorePermit,
}

impl Counted {
    /// The timer to serve this connection with (`ConnTimer`).
    pub fn timer(&self, idle_timeout: Duration) -> ConnTimer {
        ConnTimer {
            activity: self.activity.clone(),
            idle_timeout,
        }
    }
}

/// What a connection has read so far, for its `ConnTimer`.
#[derive(Default)]
struct Activity {
    /// Bytes read from the client since the connection opened.
    read: AtomicU64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// hyper's timer for one HTTP/1 connection. hyper asks it for one deadline only: the
/// request-head timeout (`header_read_timeout`, set to `server.header_timeout`), which
/// it starts whenever it waits for a request head, on a fresh connection and between
/// requests on a kept-alive one alike, and never while a response is being written.
/// On a fresh connection that deadline is used as it is: a client that connects and
/// sends no complete head in time is closed. On a kept-alive connection (bytes were
/// read before) the wait is first for the next request to begin, up to
/// `idle_timeout`; its first byte starts the `header_timeout` for the rest of the head.
#[derive(Clone)]
pub struct ConnTimer {
    activity: Arc<Activity>,
    idle_timeout: Duration,
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(plain_sleep(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let read = self.activity.read.load(Ordering::Relaxed);
        if read == 0 {
            return Box::pin(plain_sleep(
                deadline.saturating_duration_since(Instant::now()),
            ));
        }
        let header_timeout = deadline.saturating_duration_since(Instant::now());
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep(self.idle_timeout)),
            activity: self.activity.clone(),
            idle_since: Some(read),
            header_timeout,
        })
    }
}

fn plain_sleep(after: Duration) -> HeadSleep {
    HeadSleep {
        sleep: Box::pin(tokio::time::sleep(after)),
        activity: Arc::default(),
        idle_since: None,
        header_timeout: after,
    }
}

/// A request-head deadline; while `idle_since` is set, the idle wait before it.
struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    activity: Arc<Activity>,
    /// The connection's bytes read when the idle wait began; `None` once the head's
    /// first byte came (or for a fresh connection).
    idle_since: Option<u64>,
    header_timeout: Duration,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this after each read that left the head incomplete, so a new
        // byte is seen here as soon as it arrives.
        if let Some(since) = self.idle_since {
            if self.activity.read.load(Ordering::Relaxed) != since {
                self.idle_since = None;
                let deadline = tokio::time::Instant::now() + self.header_timeout;
                self.sleep.as_mut().reset(deadline);
            }
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_network_and_a_mapped_one_its_ipv4_address() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        // Home network addresses are each their own client.
        for (a, b) in [
            ("fe80::1", "fe80::2"),
            ("fd12:3456:789a:1::1", "fd12:3456:789a:1::2"),
        ] {
            assert_ne!(key(a), key(b), "{a} {b}");
            assert_eq!(key(a), a.parse::<IpAddr>().unwrap());
        }
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[tokio::test]
    async fn the_cap_counts_a_64_network_as_one_client() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = Limited::new(inner, 100, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = listener.client_slot(ip("2001:db8::1")).expect("first");
        let _b = listener.client_slot(ip("2001:db8::2")).expect("second");
        assert!(
            listener.client_slot(ip("2001:db8::3")).is_none(),
            "a third address of one /64"
        );
        let _other = listener
            .client_slot(ip("2001:db8:0:1::1"))
            .expect("another /64");
        drop(a);
        assert!(
            listener.client_slot(ip("2001:db8::4")).is_some(),
            "a slot freed"
        );
    }
}
