//! The request bodies a gate admits: ended at its drain's end, like its responses.
//!
//! A handler may answer at once and read an endless upload in a task of its own, or a
//! gRPC handler read the client's half of a bidirectional call so: the response the gate
//! watches is over, the body goes on. So the gate wraps the body of a request it admits
//! in the same watch its responses get (a body error once the drain period is over; an
//! idle body is woken for it). That takes the body's own type back, so it is done for
//! the two types a layer is handed in practice: axum's (every axum router, and
//! `axum::serve`) and tonic's (every tonic server). A body that is over before it starts
//! (a `GET`) is left alone, and costs nothing but the check.

#[cfg(any(feature = "axum", feature = "tonic"))]
use std::any::{Any, TypeId};

use super::drain::Drain;

/// Wraps `body` to end at `drain`'s end, where it is a body type this can rebuild.
#[inline(always)]
pub(super) fn watch<B: 'static>(body: &mut B, drain: &'static Drain) {
    // (Compared as constants first: for any other body type the branches fold away, and
    // no reference to the request escapes, which would make the compiler copy it.)
    #[cfg(feature = "axum")]
    if TypeId::of::<B>() == TypeId::of::<axum::body::Body>() {
        if let Some(body) = (body as &mut dyn Any).downcast_mut::<axum::body::Body>()
            && !http_body::Body::is_end_stream(body)
        {
            watch_axum(body, drain);
        }
        return;
    }
    #[cfg(feature = "tonic")]
    if TypeId::of::<B>() == TypeId::of::<tonic::body::Body>() {
        if let Some(body) = (body as &mut dyn Any).downcast_mut::<tonic::body::Body>()
            && !http_body::Body::is_end_stream(body)
        {
            watch_tonic(body, drain);
        }
        return;
    }
    let _ = (body, drain);
}

#[cfg(feature = "axum")]
#[cold]
#[inline(never)]
fn watch_axum(body: &mut axum::body::Body, drain: &'static Drain) {
    let inner = std::mem::take(body);
    *body = axum::body::Body::new(super::ResponseBody::watching(inner, drain.link(false)));
}

#[cfg(feature = "tonic")]
#[cold]
#[inline(never)]
fn watch_tonic(body: &mut tonic::body::Body, drain: &'static Drain) {
    let inner = std::mem::replace(body, tonic::body::Body::empty());
    *body = tonic::body::Body::new(super::ResponseBody::watching(inner, drain.link(false)));
}
