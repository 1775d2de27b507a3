//! The response future of [`License`](super::License).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::drain::{Drain, Ticket, wait_for_drain};
use super::rejection::Rejection;

pin_project! {
    /// The future returned by [`License`](super::License): the inner service's future for
    /// an admitted request, or a ready rejection.
    ///
    /// An admitted request's future runs to completion whatever the license does
    /// meanwhile, unless it has not answered by the end of the drain period after a
    /// cut-off: then it is dropped and the request gets the rejection
    /// ([`drain_period`](crate::LicenseMonitorBuilder::drain_period)).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
            // The drain it watches (for exempt paths, one that is never over).
            drain: &'static Drain,
            // `H2` and `WAITED`: either sends a poll out of line (one byte for the admitted
            // path to test, not two fields).
            flags: u8,
            // Its place among the drain's wakers, taken only once the inner future is
            // pending, so that the end of the drain period wakes it: plain bits, nothing
            // to drop.
            ticket: Ticket,
        },
        Rejected { rejection: Rejection },
    }
}

/// An HTTP/2 request: its response may be gRPC (told by the response's own content type),
/// and a cut before it starts answers in a form gRPC clients read as UNAVAILABLE too.
const H2: u8 = 1;
/// The inner future was pending once: it may hold a ticket.
const WAITED: u8 = 2;

impl<F> ResponseFuture<F> {
    #[inline(always)]
    pub(crate) fn inner(future: F, drain: &'static Drain, h2: bool) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                drain,
                flags: if h2 { H2 } else { 0 },
                ticket: Ticket::NONE,
            },
        }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            kind: Kind::Rejected { rejection },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        // The admitted path: an HTTP/1 request (HTTP/2 may be gRPC: see `poll_other`) that
        // never waited, the drain not over (one relaxed load), the inner future ready.
        // Nothing is looked at in the response: it moves once, straight into place.
        let mut polled = false;
        if let KindProj::Inner {
            future,
            drain,
            flags,
            ..
        } = kind.as_mut().project()
        {
            let drain: &'static Drain = drain;
            if *flags == 0 && !drain.is_over() {
                if let Poll::Ready(result) = future.poll(cx) {
                    let link = drain.link(false);
                    return Poll::Ready(
                        result.map(|response| {
                            response.map(|body| ResponseBody::watching(body, link))
                        }),
                    );
                }
                polled = true;
            }
        }
        poll_other(kind, cx, polled)
    }
}

/// Everything but an HTTP/1 response ready without waiting: an HTTP/2 response, a future
/// that waited, a pending future registering for the end of the drain, the cut, a
/// rejection. Out of line, so that the
/// admitted path stays small enough to inline and writes its response in one move.
#[cold]
#[inline(never)]
fn poll_other<F, B, E>(
    mut kind: Pin<&mut Kind<F>>,
    cx: &mut Context<'_>,
    polled: bool,
) -> Poll<Result<Response<ResponseBody<B>>, E>>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    let rejection = match kind.as_mut().project() {
        KindProj::Inner {
            future,
            drain,
            flags,
            ticket,
        } => {
            let (drain, h2): (&'static Drain, bool) = (drain, *flags & H2 != 0);
            let link = drain.link(false);
            // (`polled`: `poll` just polled it, and it was pending.)
            if !polled
                && !drain.is_over()
                && let Poll::Ready(result) = future.poll(cx)
            {
                // Its place among the drain's wakers, if it waited, goes back.
                link.waiters().release(ticket);
                return Poll::Ready(result.map(|response| {
                    // HTTP/2 may be gRPC, by the response's content type: a cut then ends
                    // it with trailers.
                    let grpc = h2 && Rejection::for_request(response.headers()) == Rejection::Grpc;
                    response.map(|body| ResponseBody::watching(body, drain.link(grpc)))
                }));
            }
            *flags |= WAITED;
            if !wait_for_drain(link, ticket, cx) {
                return Poll::Pending;
            }
            link.waiters().release(ticket);
            // The drain period is over before the response started. The request's headers
            // are gone by now: an HTTP/2 request gets the answer both gRPC and plain HTTP
            // clients read right. A feature's drain while the license still admits answers
            // with the feature's refusal, never "license expired".
            match (link.feature_cut(), h2) {
                (Some(text), true) => Rejection::FeatureHttpAndGrpc(text),
                (Some(text), false) => Rejection::FeatureHttp(text),
                (None, true) => Rejection::HttpAndGrpc,
                (None, false) => Rejection::Http,
            }
        }
        // Polled again after completion: answer again rather than panic.
        KindProj::Rejected { rejection } => *rejection,
    };
    // The inner future is dropped here: its work stops.
    kind.set(Kind::Rejected { rejection });
    Poll::Ready(Ok(super::body::refusal(rejection)))
}
