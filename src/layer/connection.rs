//! [`LicensedIo`] and [`LicensedListener`]: the cut-off for what a tower layer cannot see.
//!
//! A tower layer sees requests and responses. It does not see the bytes of a connection
//! that a request upgraded (a WebSocket over HTTP/1.1 `Upgrade` or HTTP/2 extended
//! CONNECT): hyper hands those to the handler, and the response the layer wrapped is
//! already over. Nor does it see a request body that a handler reads in a task of its own
//! after answering. Both would carry on past the cut-off for as long as the client likes.
//!
//! So the connections themselves are wrapped: a [`LicensedIo`] stops reading when the
//! drain period after a cut-off ends, if it was accepted before that, and closes
//! [`CLOSE_AFTER`] later (time for the final answers to go out). The server then drops
//! the connection, and with it every WebSocket, upload and
//! stream it carried; the client sees the connection closed. A connection accepted later
//! is never closed by it (its requests get the layer's rejection), and a renewal during
//! the drain period stops it as it stops the drain. Exempt paths and `/health` served on
//! a connection that was open at the end of a drain period see that connection close too:
//! the client's next request opens a new one, which answers them.
//!
//! The cost is one relaxed load per read or write of the connection; nothing per request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::future::Waiting;
use crate::LicenseMonitor;
use crate::shared::Drain;

pin_project! {
    /// A connection that closes at the end of the drain period after a cut-off.
    ///
    /// Wraps any `AsyncRead + AsyncWrite` (a `TcpStream`, a TLS stream, a Unix socket).
    /// Until then it passes everything through. From then on nothing more is read, and a
    /// read waiting on the connection is woken, so that an idle WebSocket is reached too;
    /// writes go on for [`CLOSE_AFTER`] (the drain's final answers, such as a gRPC
    /// stream's `grpc-status: 14` trailers, reach the client), then every read and write
    /// fails with [`io::ErrorKind::ConnectionAborted`] and the server drops the
    /// connection. See the [module docs](self).
    ///
    /// [`LicensedListener`] wraps every connection a listener accepts; use this directly
    /// in a hand-written accept loop (hyper-util's, say).
    #[derive(Debug)]
    pub struct LicensedIo<T> {
        #[pin]
        io: T,
        drain: &'static Drain,
        // How many drain periods had ended when the connection was accepted: only a later
        // end closes it.
        accepted: u64,
        // Registered when a read (or a write) waits, so that the end of the drain wakes
        // it; apart, because the two halves of a split connection may wait in two tasks.
        reading: Waiting,
        writing: Waiting,
        read_closing: Closing,
        write_closing: Closing,
        closes_at: Option<tokio::time::Instant>,
    }
}

impl<T> LicensedIo<T> {
    /// Wraps a connection accepted now, for `monitor`'s cut-off.
    pub fn new(io: T, monitor: &LicenseMonitor) -> Self {
        Self::with_drain(io, monitor.view().drain())
    }

    fn with_drain(io: T, drain: &'static Drain) -> Self {
        Self {
            io,
            drain,
            accepted: drain.ends(),
            reading: None,
            writing: None,
            read_closing: Closing::default(),
            write_closing: Closing::default(),
            closes_at: None,
        }
    }

    /// The connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Unwraps the connection: it is no longer closed by the cut-off.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Whether the connection has been closed by the end of a drain period.
    pub fn is_cut(&self) -> bool {
        self.drain.cuts(self.accepted)
    }
}

/// The error of every read and write once the connection is cut.
fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the license's drain period after the cut-off is over: connection closed",
    )
}

/// Registers `cx` to be woken when a drain period ends that cuts a connection accepted
/// after `accepted` ends; returns whether one has.
#[cold]
#[inline(never)]
fn wait_for_cut(
    drain: &'static Drain,
    accepted: u64,
    waiting: &mut Waiting,
    cx: &mut Context<'_>,
) -> bool {
    // Created before the flag is read, so a notification in between is not missed.
    let notified = waiting.get_or_insert_with(|| Box::pin(drain.waiters().notified()));
    loop {
        if drain.cuts(accepted) {
            return true;
        }
        if notified.as_mut().poll(cx).is_pending() {
            return false;
        }
        // A drain that a renewal stopped again, or one that ended before this connection
        // was accepted: wait for the next.
        notified.set(drain.waiters().notified());
    }
}

/// How long a cut connection still writes (but no longer reads) before it closes: time
/// for the final answers the drain's end produced (a gRPC stream's `grpc-status: 14`
/// trailers, a 503) to reach the client, on any link that is not stalled.
pub const CLOSE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What one direction of a connection does once it is cut: reads stop at once (nothing
/// more is received, so nothing more is processed), writes go on until [`CLOSE_AFTER`]
/// after the cut was first seen, then both fail and the server drops the connection.
#[derive(Debug, Default)]
struct Closing(Option<Pin<Box<tokio::time::Sleep>>>);

impl Closing {
    /// Whether the connection must fail now (`closes_at`, shared by both directions, is
    /// set the first time either sees the cut); registers `cx` for when it must.
    #[cold]
    #[inline(never)]
    fn over(&mut self, closes_at: &mut Option<tokio::time::Instant>, cx: &mut Context<'_>) -> bool {
        let deadline = *closes_at.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_AFTER);
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead> AsyncRead for LicensedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let cut = this.drain.is_over() && this.drain.cuts(*this.accepted);
        if !cut {
            match this.io.poll_read(cx, buf) {
                Poll::Pending => {
                    if !wait_for_cut(this.drain, *this.accepted, this.reading, cx) {
                        return Poll::Pending;
                    }
                }
                ready => return ready,
            }
        }
        // Cut: nothing more is read; the read fails when the connection closes.
        if this.read_closing.over(this.closes_at, cx) {
            Poll::Ready(Err(aborted()))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncWrite> LicensedIo<T> {
    /// A write (or flush) of the connection: passed on, until [`CLOSE_AFTER`] after a cut.
    #[inline(always)]
    fn watch_write<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        if this.drain.is_over()
            && this.drain.cuts(*this.accepted)
            && this.write_closing.over(this.closes_at, cx)
        {
            return Poll::Ready(Err(aborted()));
        }
        match write(this.io, cx) {
            Poll::Pending => {
                if !this.drain.cuts(*this.accepted)
                    && wait_for_cut(this.drain, *this.accepted, this.writing, cx)
                    && this.write_closing.over(this.closes_at, cx)
                {
                    return Poll::Ready(Err(aborted()));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for LicensedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch_write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch_write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch_write(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down is always allowed: it is how a cut connection ends cleanly.
        self.project().io.poll_shutdown(cx)
    }
}

/// A listener whose connections close at the end of the drain period after a cut-off:
/// each one it accepts is a [`LicensedIo`].
///
/// With feature `axum` it is an `axum::serve::Listener` (`axum::serve(monitor.listener(tcp),
/// app)`); with feature `tonic`, `LicensedListener::into_incoming` is what tonic's
/// `serve_with_incoming` takes. Anything else can call [`LicensedListener::accept`].
#[derive(Debug)]
pub struct LicensedListener<L> {
    inner: L,
    drain: &'static Drain,
}

impl<L> LicensedListener<L> {
    /// Wraps `listener`, for `monitor`'s cut-off.
    pub fn new(listener: L, monitor: &LicenseMonitor) -> Self {
        Self {
            inner: listener,
            drain: monitor.view().drain(),
        }
    }

    /// Wraps a connection this listener's way (for an accept loop of one's own).
    pub fn wrap<T>(&self, io: T) -> LicensedIo<T> {
        LicensedIo::with_drain(io, self.drain)
    }

    /// The listener.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// Unwraps the listener.
    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl LicensedListener<tokio::net::TcpListener> {
    /// Accepts a connection, wrapped.
    pub async fn accept(
        &self,
    ) -> io::Result<(LicensedIo<tokio::net::TcpStream>, std::net::SocketAddr)> {
        let (io, addr) = self.inner.accept().await?;
        Ok((self.wrap(io), addr))
    }

    /// The connections this listener accepts, as a stream: what tonic's
    /// `Server::serve_with_incoming` takes (feature `tonic`).
    #[cfg(feature = "tonic")]
    pub fn into_incoming(self) -> LicensedIncoming {
        LicensedIncoming(self)
    }
}

#[cfg(feature = "axum")]
impl<L: axum::serve::Listener> axum::serve::Listener for LicensedListener<L> {
    type Io = LicensedIo<L::Io>;
    type Addr = L::Addr;

    fn accept(&mut self) -> impl std::future::Future<Output = (Self::Io, Self::Addr)> + Send {
        let drain = self.drain;
        let accept = self.inner.accept();
        async move {
            let (io, addr) = accept.await;
            (LicensedIo::with_drain(io, drain), addr)
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The connections a [`LicensedListener`] on TCP accepts, as a stream (feature `tonic`):
/// `Server::builder()…serve_with_incoming(monitor.listener(tcp).into_incoming())`.
#[cfg(feature = "tonic")]
#[derive(Debug)]
pub struct LicensedIncoming(LicensedListener<tokio::net::TcpListener>);

#[cfg(feature = "tonic")]
impl futures_core::Stream for LicensedIncoming {
    type Item = io::Result<LicensedIo<tokio::net::TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let listener = &self.0;
        listener
            .inner
            .poll_accept(cx)
            .map(|accepted| Some(accepted.map(|(io, _)| listener.wrap(io))))
    }
}

#[cfg(feature = "tonic")]
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for LicensedIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl LicenseMonitor {
    /// Wraps `listener` so that the connections it accepts close at the end of the drain
    /// period after a cut-off: same as [`LicensedListener::new`]. See the
    /// [`connection` docs](crate::layer::connection) for why a service needs it beside the
    /// layer.
    pub fn listener<L>(&self, listener: L) -> LicensedListener<L> {
        LicensedListener::new(listener, self)
    }
}
