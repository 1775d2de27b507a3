//! [`LicensedIo`] and [`LicensedListener`]: the cut-off for what a tower layer cannot see.
//!
//! A tower layer sees requests and responses. It does not see the bytes of a connection
//! that a request upgraded (a WebSocket over HTTP/1.1 `Upgrade` or HTTP/2 extended
//! CONNECT, a `CONNECT` tunnel): hyper hands those to the handler, and the response the
//! layer wrapped is already over. They would carry on past the cut-off for as long as the
//! client likes.
//!
//! So the connections themselves are wrapped, and **a gate marks the connection that
//! carries an upgrade it admitted** (the license layer and every `require_feature` gate
//! alike): a `101 Switching Protocols` answer on HTTP/1.1, or a `CONNECT` request. When
//! that gate's drain period ends (the cut-off's, or a feature's after a renewal took the
//! feature away), a marked [`LicensedIo`] stops reading at once, and
//! closes [`CLOSE_AFTER`] later (time for the final answers to go out), whether or not
//! its handler reads or writes: a TCP socket is shut down from outside, so a WebSocket
//! that only pushes is closed on time too. The server then drops the connection, and
//! with it the WebSocket or tunnel. A connection that never carried an upgrade a drained
//! gate admitted is never closed: a free WebSocket or SSE stream, `/health` and
//! `/metrics` on a keep-alive or HTTP/2 connection, a pooled client's next request, the
//! exempt gRPC health check all go on across the cut-off.
//!
//! Request bodies need no mark: the gate wraps the body of a request it admits (axum's
//! and tonic's body types, which every axum router and tonic server hands a layer), and
//! the drain ends it with an error, so an upload read by a task of the handler's own
//! stops at the drain's end while its connection lives on.
//!
//! The cost is one relaxed load per read or write of a connection, and a thread-local
//! note of which connection the task is serving; marking costs only the requests that
//! upgrade.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::drain::{Cut, Drain};
use crate::LicenseMonitor;

/// What the gates reach of a connection: whether a gate marked it, whether a drain that
/// marked it ended (the connection is cut), and what closes it from outside.
#[derive(Debug, Default)]
pub(crate) struct Conn {
    /// A gate marked it: the one load an unmarked connection's reads and writes pay.
    marked: AtomicBool,
    /// A drain that marked it ended. Never unset: a renewal after the end does not reopen
    /// a connection that was closed.
    cut: AtomicBool,
    state: Mutex<ConnState>,
}

#[derive(Debug, Default)]
struct ConnState {
    /// When the cut was made: the connection closes [`CLOSE_AFTER`] later.
    cut_at: Option<tokio::time::Instant>,
    /// The tasks waiting to read or to write, woken by the cut and by the close.
    reading: Option<Waker>,
    writing: Option<Waker>,
    /// The socket, shut down from outside when the connection closes (where it is one:
    /// a TCP or Unix stream).
    #[cfg(unix)]
    socket: Option<std::os::fd::OwnedFd>,
    /// The socket is still to be taken, at the connection's next read or write.
    wants_socket: bool,
    /// The tasks noted as serving it (see `tasks`).
    tasks: Vec<Server>,
}

fn lock(state: &Mutex<ConnState>) -> std::sync::MutexGuard<'_, ConnState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cut for Conn {
    fn mark(&self) {
        Conn::mark(self);
    }

    fn cut_at(&self, at: tokio::time::Instant) -> tokio::time::Instant {
        Conn::cut_at(self, at)
    }

    fn close(&self) {
        Conn::close(self);
    }
}

impl Conn {
    /// The drain that marked it ended at `at`: the connection is cut, and closes
    /// [`CLOSE_AFTER`] later. Returns when it closes.
    pub(crate) fn cut_at(&self, at: tokio::time::Instant) -> tokio::time::Instant {
        let mut state = lock(&self.state);
        let at = *state.cut_at.get_or_insert(at);
        self.cut.store(true, Ordering::Release);
        for waker in [state.reading.take(), state.writing.take()]
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
        at + CLOSE_AFTER
    }

    /// The close: the socket is shut down (the peer sees the connection end, whatever
    /// the handler does), and whoever waits on it is woken to fail.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        #[cfg(unix)]
        if let Some(socket) = state.socket.take() {
            // (A socket already closed by the peer: nothing to do.)
            let _ = std::net::TcpStream::from(socket).shutdown(std::net::Shutdown::Both);
        }
        for waker in [state.reading.take(), state.writing.take()]
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
    }

    fn mark(&self) {
        lock(&self.state).wants_socket = true;
        self.marked.store(true, Ordering::Release);
    }
}

/// The connection each task serves, by the task's id: a gate admitting an upgrade marks
/// the connection of the task it runs in (hyper runs an HTTP/1.1 connection's handler in
/// the connection's task, whatever it awaits first and wherever the task moves). A gate
/// called from a task that serves no connection (a `Buffer`'s worker, an HTTP/2 stream's
/// task) finds none, rather than a wrong one.
fn tasks() -> &'static Mutex<HashMap<Server, Weak<Conn>>> {
    static TASKS: OnceLock<Mutex<HashMap<Server, Weak<Conn>>>> = OnceLock::new();
    TASKS.get_or_init(Mutex::default)
}

/// What serves a connection: a tokio task, or (outside any task: a connection served
/// in `block_on`) a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Server {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Server {
    fn current() -> Self {
        tokio::task::try_id()
            .map_or_else(|| Server::Thread(std::thread::current().id()), Server::Task)
    }
}

/// Notes that the running task serves `conn` (once per task and connection: `noted` is
/// the task last noted for it).
#[inline]
fn enter(conn: &Arc<Conn>, noted: &mut Option<Server>) {
    let server = Server::current();
    if Some(server) != *noted {
        note(conn, noted, server);
    }
}

#[cold]
#[inline(never)]
fn note(conn: &Arc<Conn>, noted: &mut Option<Server>, task: Server) {
    *noted = Some(task);
    tasks()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(task, Arc::downgrade(conn));
    lock(&conn.state).tasks.push(task);
}

impl Drop for Conn {
    fn drop(&mut self) {
        let noted = std::mem::take(&mut lock(&self.state).tasks);
        if noted.is_empty() {
            return;
        }
        let mut tasks = tasks()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for task in noted {
            // (Unless the task went on to serve another connection since.)
            if tasks
                .get(&task)
                .is_some_and(|weak| weak.strong_count() == 0)
            {
                tasks.remove(&task);
            }
        }
    }
}

/// Whether hyper would hand the handler this request's connection, or a stream of it:
/// an HTTP/1.1 `Upgrade`, a `CONNECT` (a tunnel, or a WebSocket over HTTP/2), told by
/// the `OnUpgrade` hyper puts in the extensions of those requests only. An extension
/// lookup: a load when a request carries no extensions, a map lookup when it does.
#[inline(always)]
pub(crate) fn wants_upgrade<B>(request: &http::Request<B>) -> bool {
    #[cfg(feature = "hyper")]
    {
        request
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
    }
    #[cfg(not(feature = "hyper"))]
    {
        let _ = request;
        false
    }
}

/// The gate whose drain is `drain` admitted an upgrade (`h2`: a `CONNECT` over HTTP/2,
/// a WebSocket): its connection is cut when that drain ends. Where the gate runs in the
/// connection's own task (HTTP/1.1, where hyper polls the handler's future in it; a layer
/// around the whole service), that connection is known. An axum route's gate runs in the stream's own task, which tells nothing of the
/// connection: every HTTP/2 connection open now is marked then, so that the WebSocket
/// cannot outlive its license (the others open with it close at the drain's end too, and
/// their clients reconnect; connections opened later are not touched).
#[cold]
#[inline(never)]
pub(crate) fn mark_upgrade(drain: &'static Drain, h2: bool) {
    let conn = tasks()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&Server::current())
        .and_then(Weak::upgrade);
    match conn {
        Some(conn) => {
            let conn: Arc<dyn Cut> = conn;
            conn.mark();
            drain.register(&conn);
        }
        None => mark_h2(drain, h2),
    }
}

fn mark_h2(drain: &'static Drain, h2: bool) {
    if !h2 {
        return;
    }
    let open: Vec<Arc<dyn Cut>> = drain
        .license()
        .h2_connections()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for conn in open {
        conn.mark();
        drain.register(&conn);
    }
}

/// The HTTP/2 client preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Notes a connection that may be HTTP/2 by the first bytes it read (`read` added to
/// `seen`); returns whether more are needed to tell. Plain HTTP/1 (a request line) is
/// not noted; the HTTP/2 preface is, and so is anything this cannot read (TLS, a PROXY
/// protocol header): an HTTP/2 WebSocket whose gate cannot tell its connection must not
/// escape because its connection's bytes were hidden.
#[cold]
#[inline(never)]
fn sniff(conn: &Arc<Conn>, drain: &'static Drain, seen: &mut Vec<u8>, read: &[u8]) -> bool {
    seen.extend_from_slice(&read[..read.len().min(H2_PREFACE.len() - seen.len())]);
    let more = !read.is_empty() && seen.len() < H2_PREFACE.len();
    let note = match seen.first() {
        None => return more,
        Some(first) if !first.is_ascii_uppercase() => true,
        Some(_) if H2_PREFACE.starts_with(seen) || b"PROXY ".starts_with(seen) => {
            if more {
                return true;
            }
            seen.len() >= b"PROXY ".len()
        }
        Some(_) => seen.starts_with(b"PROXY "),
    };
    if note {
        let mut open = drain
            .h2_connections()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|c| c.strong_count() > 0);
        let conn: Arc<dyn Cut> = Arc::clone(conn) as Arc<dyn Cut>;
        open.push(Arc::downgrade(&conn));
    }
    false
}

pin_project! {
    /// A connection that a gate's drain can close: one that carried an upgrade (a
    /// WebSocket, a tunnel) a gate admitted closes at the end of that gate's drain
    /// period; any other is never closed by it.
    ///
    /// Wraps any `AsyncRead + AsyncWrite` (a `TcpStream`, a TLS stream, a Unix socket).
    /// Until the cut it passes everything through. From then on nothing more is read,
    /// and a read waiting on the connection is woken, so that an idle WebSocket is
    /// reached too; writes go on for [`CLOSE_AFTER`] after the drain's end (the final
    /// answers reach the client), then every read and write fails with
    /// [`io::ErrorKind::ConnectionAborted`] and the server drops the connection. A
    /// tokio `TcpStream` or `UnixStream` is also shut down then from outside, so the
    /// client sees the end even while the handler neither reads nor writes. See the
    /// [module docs](self).
    ///
    /// [`LicensedListener`] wraps every connection a listener accepts; use this directly
    /// in a hand-written accept loop (hyper-util's, say).
    #[derive(Debug)]
    pub struct LicensedIo<T> {
        #[pin]
        io: T,
        conn: Arc<Conn>,
        // The monitor's drain: its list of HTTP/2 connections.
        drain: &'static Drain,
        // The task last noted as serving this connection.
        noted: Option<Server>,
        read_closing: Closing,
        write_closing: Closing,
        // The first bytes read, until they tell whether this is HTTP/2; `None` after.
        sniffing: Option<Vec<u8>>,
    }
}

impl<T: 'static> LicensedIo<T> {
    /// Wraps a connection accepted now, for `monitor`'s gates (the license layer and
    /// every `require_feature` gate).
    pub fn new(io: T, monitor: &LicenseMonitor) -> Self {
        Self::wrap(io, monitor.view().drain())
    }

    fn wrap(io: T, drain: &'static Drain) -> Self {
        Self {
            io,
            conn: Arc::new(Conn::default()),
            drain,
            noted: None,
            read_closing: Closing::default(),
            write_closing: Closing::default(),
            sniffing: Some(Vec::new()),
        }
    }
}

impl<T> LicensedIo<T> {
    /// The connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Unwraps the connection: it is no longer closed by a drain.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Whether the connection has been cut by the end of a drain period.
    pub fn is_cut(&self) -> bool {
        self.conn.cut.load(Ordering::Acquire)
    }
}

/// The error of every read and write once the connection is closed.
fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the license's drain period is over: connection closed",
    )
}

/// How long a cut connection still writes (but no longer reads) before it closes: time
/// for the final answers the drain's end produced (a gRPC stream's `grpc-status: 14`
/// trailers, a 503) to reach the client, on any link that is not stalled. Counted from the
/// drain's end, not from the connection's next read or write.
pub const CLOSE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What one direction of a cut connection does: reads stop at once, writes go on until
/// [`CLOSE_AFTER`] after the cut, then both fail and the server drops the connection.
#[derive(Debug, Default)]
struct Closing(Option<Pin<Box<tokio::time::Sleep>>>);

impl Closing {
    /// Whether the cut connection must fail now; registers `cx` for when it must.
    #[cold]
    #[inline(never)]
    fn over(&mut self, conn: &Conn, cx: &mut Context<'_>) -> bool {
        let Some(cut_at) = lock(&conn.state).cut_at else {
            return false;
        };
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(cut_at + CLOSE_AFTER)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A marked connection: takes its socket if it is still to be taken, and registers the
/// waiting task so that the cut and the close wake it.
#[cold]
#[inline(never)]
fn marked<T: 'static>(io: &T, conn: &Conn, cx: &mut Context<'_>, read: bool) {
    let mut state = lock(&conn.state);
    if std::mem::take(&mut state.wants_socket) {
        #[cfg(unix)]
        {
            state.socket = socket_of(io);
        }
        #[cfg(not(unix))]
        let _ = io;
    }
    let slot = if read {
        &mut state.reading
    } else {
        &mut state.writing
    };
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A duplicate of the connection's socket, where it is a tokio TCP or Unix stream: what
/// closes it from outside.
#[cfg(unix)]
fn socket_of<T: 'static>(io: &T) -> Option<std::os::fd::OwnedFd> {
    use std::any::Any;
    use std::os::fd::AsFd;
    let io: &dyn Any = io;
    let fd = if let Some(tcp) = io.downcast_ref::<tokio::net::TcpStream>() {
        tcp.as_fd()
    } else if let Some(unix) = io.downcast_ref::<tokio::net::UnixStream>() {
        unix.as_fd()
    } else {
        return None;
    };
    fd.try_clone_to_owned().ok()
}

impl<T: AsyncRead + 'static> AsyncRead for LicensedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        enter(this.conn, this.noted);
        if let Some(seen) = this.sniffing {
            let before = buf.filled().len();
            let polled = this.io.poll_read(cx, buf);
            if polled.is_ready() && !sniff(this.conn, this.drain, seen, &buf.filled()[before..]) {
                *this.sniffing = None;
            }
            return polled;
        }
        if !this.conn.marked.load(Ordering::Relaxed) {
            return this.io.poll_read(cx, buf);
        }
        marked(&*this.io, this.conn, cx, true);
        if !this.conn.cut.load(Ordering::Acquire) {
            return this.io.poll_read(cx, buf);
        }
        // Cut: nothing more is read; the read fails when the connection closes.
        if this.read_closing.over(this.conn, cx) {
            Poll::Ready(Err(aborted()))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncWrite + 'static> LicensedIo<T> {
    /// A write (or flush) of the connection: passed on, until [`CLOSE_AFTER`] after a cut.
    #[inline(always)]
    fn watch_write<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        enter(this.conn, this.noted);
        if this.conn.marked.load(Ordering::Relaxed) {
            marked(&*this.io, this.conn, cx, false);
            if this.conn.cut.load(Ordering::Acquire) && this.write_closing.over(this.conn, cx) {
                return Poll::Ready(Err(aborted()));
            }
        }
        write(this.io, cx)
    }
}

impl<T: AsyncWrite + 'static> AsyncWrite for LicensedIo<T> {
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

/// A listener whose connections a gate's drain can close (those that carried an upgrade
/// the gate admitted): each one it accepts is a [`LicensedIo`].
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
    /// Wraps `listener`, for `monitor`'s gates.
    pub fn new(listener: L, monitor: &LicenseMonitor) -> Self {
        Self {
            inner: listener,
            drain: monitor.view().drain(),
        }
    }

    /// Wraps a connection this listener's way (for an accept loop of one's own).
    pub fn wrap<T: 'static>(&self, io: T) -> LicensedIo<T> {
        LicensedIo::wrap(io, self.drain)
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
            (LicensedIo::wrap(io, drain), addr)
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
    /// Wraps `listener` so that a connection it accepts closes at the end of a gate's
    /// drain period when it carried an upgrade that gate admitted: same as
    /// [`LicensedListener::new`]. See the
    /// [`connection` docs](crate::layer::connection) for why a service needs it beside the
    /// layer.
    pub fn listener<L>(&self, listener: L) -> LicensedListener<L> {
        LicensedListener::new(listener, self)
    }
}
