//! Request limits at the edge: the request target and header size (a middleware
//! answering 414 / 431 with the JSON error body) and the number of open client
//! connections (a listener that stops accepting at `server.max_connections`; further
//! connections wait in the kernel's listen backlog until one closes).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AppError;
use crate::http::AppState;

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
    next.run(req).await
}

/// A TCP listener that holds at most `max` connections open: `accept` waits for a
/// connection to close before taking the next one from the backlog.
pub struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    warned: Option<Instant>,
}

impl Limited {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        let max = max.max(1);
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            max,
            warned: None,
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At most one line a minute while the cap is hit.
                if self
                    .warned
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    self.warned = Some(Instant::now());
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
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Counted {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    )
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

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An accepted connection; its slot frees when it is dropped.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
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
