//! The response body of [`License`](super::License).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::drain::{Link, Ticket, wait_for_drain};
use super::rejection::{
    GRPC_MESSAGE, GRPC_PERMISSION_DENIED, GRPC_UNAVAILABLE, HTTP_BODY_BYTES, Rejection,
};

/// A boxed error, what hyper, axum and tonic take a body's error as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error type of [`ResponseBody`]: the inner body's own error, or [`Drained`].
///
/// A plain enum rather than a box, so that an admitted frame passes through without a
/// conversion. It turns into a [`BoxError`] (what hyper, axum and tonic ask for) with
/// `Into`.
#[derive(Debug)]
pub enum BodyError<E> {
    /// The inner body failed.
    Inner(E),
    /// The drain period after a cut-off is over.
    Drained(Drained),
}

impl<E: fmt::Display> fmt::Display for BodyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Inner(e) => e.fmt(f),
            BodyError::Drained(d) => d.fmt(f),
        }
    }
}

impl<E: Into<BoxError>> From<BodyError<E>> for BoxError {
    fn from(error: BodyError<E>) -> Self {
        match error {
            BodyError::Inner(e) => e.into(),
            BodyError::Drained(d) => Box::new(d),
        }
    }
}

/// The error a response body ends with when the drain period after a cut-off is over
/// and it was still streaming (plain HTTP; gRPC responses end with `grpc-status: 14`
/// trailers instead). hyper then aborts the response: on HTTP/1.1 the connection closes
/// mid-body, on HTTP/2 the stream is reset, so the client never mistakes it for a
/// complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained;

impl fmt::Display for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the license's drain period after the cut-off is over: response ended")
    }
}

impl std::error::Error for Drained {}

pin_project! {
    /// The body of a response from [`License`](super::License): the inner service's body
    /// when the request was admitted, or the fixed body of a rejection.
    ///
    /// Both axum's `Router::layer` and tonic's `Server::builder().layer` accept it: its
    /// data is [`Bytes`] and its error a [`BodyError`], which converts into a
    /// [`BoxError`]. An admitted body still streaming
    /// at the end of the drain period after a cut-off ends there (see [`Drained`]).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
            // The drain it watches, and whether a cut ends it as gRPC (trailers) or as
            // plain HTTP (an error).
            link: &'static Link,
            // Its place among the drain's wakers, taken only once the body is pending:
            // plain bits, nothing to drop.
            ticket: Ticket,
        },
        // Also what is left of a body cut at the end of the drain period (nothing). A
        // reference to a static slice, empty once sent: one word, nothing to drop, so the
        // whole body is two words and a response stays small enough to move inline.
        Full { data: &'static &'static [u8] },
    }
}

/// The empty body.
static EMPTY: &[u8] = &[];

impl<B> ResponseBody<B> {
    /// An admitted response's body, watching `link`.
    #[inline(always)]
    pub(crate) fn watching(body: B, link: &'static Link) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                link,
                ticket: Ticket::NONE,
            },
        }
    }

    /// A body of fixed bytes.
    pub(crate) fn full(data: &'static &'static [u8]) -> Self {
        Self {
            kind: Kind::Full { data },
        }
    }
}

impl<B> Default for ResponseBody<B> {
    /// An empty body: the end of the stream from the start, so hyper sends a gRPC
    /// rejection's headers with END_STREAM (a trailers-only response).
    fn default() -> Self {
        Self::full(&EMPTY)
    }
}

/// What `poll_frame` returns.
type PolledFrame<E> = Poll<Option<Result<Frame<Bytes>, BodyError<E>>>>;

/// What a body that is pending, or whose drain is over, does next.
enum Next {
    /// Pending, with its (new) place among the drain's wakers.
    Wait(Ticket),
    /// The drain period is over: the body ends here.
    Cut,
}

/// A pending body registers for the end of the drain period; one whose drain is over
/// gives its place back. Out of line, and given the ticket by value rather than a pointer
/// into the body: nothing of the body escapes its `poll_frame`, so a caller that inlines
/// it keeps the body's fields in registers.
#[cold]
#[inline(never)]
fn wait_or_cut(link: &'static Link, mut ticket: Ticket, cx: &mut Context<'_>) -> Next {
    if !wait_for_drain(link, &mut ticket, cx) {
        return Next::Wait(ticket);
    }
    link.waiters().release(&mut ticket);
    Next::Cut
}

/// The place among the drain's wakers of a body that ended, given back.
#[cold]
#[inline(never)]
fn release(link: &'static Link, mut ticket: Ticket) {
    link.waiters().release(&mut ticket);
}

/// The last frame of a body cut at the end of the drain period: a failure the client
/// cannot mistake for a complete response.
#[cold]
#[inline(never)]
fn cut_frame<E>(link: &'static Link) -> PolledFrame<E> {
    if link.grpc() {
        Poll::Ready(Some(Ok(Frame::trailers(grpc_cut(link)))))
    } else {
        Poll::Ready(Some(Err(BodyError::Drained(Drained))))
    }
}

/// The one frame of a fixed body.
#[cold]
#[inline(never)]
fn full_frame<E>(bytes: &'static [u8]) -> PolledFrame<E> {
    Poll::Ready((!bytes.is_empty()).then(|| Ok(Frame::data(Bytes::from_static(bytes)))))
}

/// The trailers a gRPC stream cut at the end of the drain period ends with: UNAVAILABLE
/// after the cut-off, PERMISSION_DENIED with the feature's words after a renewal took a
/// feature away.
fn grpc_cut(link: &'static Link) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    match link.feature_cut() {
        Some(text) => {
            trailers.insert(
                "grpc-status",
                HeaderValue::from_static(GRPC_PERMISSION_DENIED),
            );
            trailers.insert(
                "grpc-message",
                HeaderValue::from_static(text.grpc_message()),
            );
        }
        None => {
            trailers.insert("grpc-status", HeaderValue::from_static("14"));
            trailers.insert("grpc-message", HeaderValue::from_static(GRPC_MESSAGE));
        }
    }
    trailers
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = BodyError<B::Error>;

    #[inline(always)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut kind = self.project().kind;
        let link = match kind.as_mut().project() {
            KindProj::Inner { body, link, ticket } => {
                let link: &'static Link = link;
                // The admitted path: one relaxed load per frame, then the inner body's
                // frame, passed on as it is.
                if !link.is_over() {
                    match body.poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                        Poll::Ready(Some(Err(e))) => {
                            if ticket.is_some() {
                                release(link, std::mem::take(ticket));
                            }
                            return Poll::Ready(Some(Err(BodyError::Inner(e))));
                        }
                        Poll::Ready(None) => {
                            if ticket.is_some() {
                                // It waited: its place among the drain's wakers goes back.
                                release(link, std::mem::take(ticket));
                            }
                            return Poll::Ready(None);
                        }
                        Poll::Pending => {}
                    }
                }
                match wait_or_cut(link, *ticket, cx) {
                    Next::Wait(held) => {
                        *ticket = held;
                        return Poll::Pending;
                    }
                    Next::Cut => link,
                }
            }
            KindProj::Full { data } => {
                let bytes: &'static [u8] = data;
                *data = &EMPTY;
                return full_frame(bytes);
            }
        };
        // The drain period is over: the inner body is dropped here, and the stream ends
        // as a failure the client cannot mistake for a complete response.
        kind.set(Kind::Full { data: &EMPTY });
        cut_frame(link)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Full { data } => data.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Full { data } => SizeHint::with_exact(data.len() as u64),
        }
    }
}

/// The answer to a refused request (503 `license_expired`, or a feature's 403, each in
/// the form its client reads), with a body of this layer's type.
pub(crate) fn refusal<B>(rejection: Rejection) -> Response<ResponseBody<B>> {
    match rejection {
        Rejection::Http | Rejection::HttpAndGrpc => {
            let mut response = Response::new(ResponseBody::full(&HTTP_BODY_BYTES));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if rejection == Rejection::HttpAndGrpc {
                headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
                headers.insert("grpc-message", HeaderValue::from_static(GRPC_MESSAGE));
            }
            response
        }
        Rejection::Grpc => grpc_trailers_only(GRPC_UNAVAILABLE, GRPC_MESSAGE),
        Rejection::FeatureHttp(text) | Rejection::FeatureHttpAndGrpc(text) => {
            let mut response = Response::new(ResponseBody::full(&text.body));
            *response.status_mut() = StatusCode::FORBIDDEN;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if matches!(rejection, Rejection::FeatureHttpAndGrpc(_)) {
                headers.insert(
                    "grpc-status",
                    HeaderValue::from_static(GRPC_PERMISSION_DENIED),
                );
                headers.insert("grpc-message", HeaderValue::from_static(text.grpc_message));
            }
            response
        }
        Rejection::FeatureGrpc(text) => {
            grpc_trailers_only(GRPC_PERMISSION_DENIED, text.grpc_message)
        }
    }
}

/// A trailers-only gRPC answer: HTTP 200, the status in the headers, and an empty body
/// that reports the end of the stream, so hyper sets END_STREAM on the HEADERS frame.
fn grpc_trailers_only<B>(status: &'static str, message: &'static str) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::default());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(status));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_body_yields_its_bytes_once() {
        static BODY: &[u8] = b"{}";
        let body: ResponseBody<Full<Bytes>> = ResponseBody::full(&BODY);
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"{}");
    }

    #[tokio::test]
    async fn empty_body_is_the_end_of_the_stream() {
        let body: ResponseBody<Full<Bytes>> = ResponseBody::default();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }

    #[test]
    fn a_body_of_nothing_is_two_words_so_a_response_moves_inline() {
        // (The compiler moves values up to 128 bytes inline and larger ones through
        // `memcpy`: a response head is 112 bytes.)
        assert_eq!(std::mem::size_of::<ResponseBody<()>>(), 16);
        assert!(std::mem::size_of::<http::Response<ResponseBody<()>>>() <= 128);
    }

    #[tokio::test]
    async fn inner_body_passes_through() {
        let link = crate::layer::drain::Drain::never().link(false);
        let body = ResponseBody::watching(Full::new(Bytes::from_static(b"hello")), link);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
    }
}
