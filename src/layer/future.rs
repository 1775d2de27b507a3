//! The response future of [`License`](super::License).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tokio::sync::futures::Notified;

use super::body::ResponseBody;
use super::rejection::Rejection;
use crate::shared::Drain;

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
            // For exempt paths, a drain that is never over.
            drain: &'static Drain,
            // Registered only once the inner future is pending, so that the end of the
            // drain period wakes it.
            #[pin]
            waiter: Option<Notified<'static>>,
            // An HTTP/2 request: its response may be gRPC (told by the response's own
            // content type), and a cut before it starts answers in a form gRPC clients
            // read as UNAVAILABLE too.
            h2: bool,
        },
        Rejected { rejection: Option<Rejection> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn inner(future: F, drain: Option<&'static Drain>, h2: bool) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                drain: drain.unwrap_or_else(Drain::never),
                waiter: None,
                h2,
            },
        }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
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
        let cut = match kind.as_mut().project() {
            KindProj::Inner {
                future,
                drain,
                mut waiter,
                h2,
            } => {
                let (drain, h2) = (*drain, *h2);
                if !drain.is_over() {
                    match future.poll(cx) {
                        Poll::Ready(result) => {
                            return Poll::Ready(result.map(|response| {
                                let grpc = h2 && is_grpc_response(response.headers());
                                response.map(|body| ResponseBody::inner(body, Some(drain), grpc))
                            }));
                        }
                        Poll::Pending => {
                            if waiter.is_none() {
                                // Created before `wait_for_drain` checks the flag, so a
                                // notification in between is not missed.
                                waiter.set(Some(drain.waiter()));
                            }
                            if let Some(waiter) = waiter.as_pin_mut()
                                && !wait_for_drain(drain, waiter, cx)
                            {
                                return Poll::Pending;
                            }
                        }
                    }
                }
                // The request's headers are gone by now: an HTTP/2 request gets the
                // answer both gRPC and plain HTTP clients read right.
                if h2 {
                    Rejection::HttpAndGrpc
                } else {
                    Rejection::Http
                }
            }
            KindProj::Rejected { rejection } => {
                // Polled again after completion: answer again rather than panic.
                let rejection = rejection.take().unwrap_or(Rejection::Http);
                return Poll::Ready(Ok(rejection.into_response()));
            }
        };
        // The drain period is over and the response has not started: drop the inner
        // future (its work stops here) and answer as a new request would be.
        kind.set(Kind::Rejected { rejection: None });
        Poll::Ready(Ok(cut.into_response()))
    }
}

/// Whether a response is gRPC, by its content type. Out of line: only HTTP/2 responses
/// are asked.
#[inline(never)]
fn is_grpc_response(headers: &http::HeaderMap) -> bool {
    Rejection::for_request(headers) == Rejection::Grpc
}

/// Registers `cx` to be woken when the drain period ends; returns whether it has ended
/// already. `waiter` must have been created before this call (it then cannot miss a
/// notification sent after the flag was read). Called only after the inner future or
/// body returned `Pending`: a response that is ready costs nothing here.
#[cold]
pub(crate) fn wait_for_drain(
    drain: &'static Drain,
    waiter: Pin<&mut Notified<'static>>,
    cx: &mut Context<'_>,
) -> bool {
    drain.is_over_acquire() || waiter.poll(cx).is_ready()
}
