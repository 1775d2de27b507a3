//! Allocations on the request path, counted exactly by a counting global allocator: none
//! per admitted request beyond the inner service's own, and for a refused request only
//! the response itself. (A count, not a timing: exact and deterministic.)

#![allow(unsafe_code)] // the counting allocator; each block says why it is sound

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use iosetu_license::{LicenseMonitor, LicenseSigner, LicenseSource};

mod common;
use tower::{Layer, Service};

struct Counting;

thread_local! {
    // Counted per thread, so the test only sees its own allocations.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// An inner service that allocates exactly once per request (a boxed body), so that "the
/// inner service's own" allocations are visible and known.
#[derive(Clone, Copy)]
struct OneAllocation;

impl Service<Request<()>> for OneAllocation {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(String::from("hello"))))
    }
}

fn requests<S>(service: &mut S, n: usize)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = pin!(service.call(Request::new(())));
        match future.poll(&mut cx) {
            Poll::Ready(Ok(response)) => drop(response),
            _ => panic!("not ready"),
        }
    }
}

fn monitor(rt: &tokio::runtime::Runtime, licensed: bool) -> LicenseMonitor {
    let signer = LicenseSigner::from_seed([88; 32]);
    let token = if licensed {
        let mut claims = iosetu_license::Claims::new("Acme", 4_102_444_800);
        claims.features = vec!["sso".into()];
        signer.sign(&claims)
    } else {
        String::new()
    };
    rt.block_on(
        LicenseMonitor::builder()
            .public_key(signer.public_key())
            .source(LicenseSource::Static(token))
            .fail_closed(!licensed)
            .clock(common::SettledClock)
            .start(),
    )
    .unwrap()
}

#[test]
fn the_request_path_allocates_nothing_of_its_own() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let valid = monitor(&rt, true);
    let cut_off = monitor(&rt, false);
    const N: usize = 1000;

    let mut bare = OneAllocation;
    requests(&mut bare, 10); // warm up anything lazily initialised
    let inner_only = allocations_during(|| requests(&mut bare, N));
    assert_eq!(
        inner_only, N as u64,
        "the inner service allocates once per request"
    );

    let mut licensed = valid.layer().layer(OneAllocation);
    requests(&mut licensed, 10);
    let with_layer = allocations_during(|| requests(&mut licensed, N));
    assert_eq!(
        with_layer, inner_only,
        "an admitted request allocated in the layer"
    );

    let mut paid = valid.require_feature("sso").layer(OneAllocation);
    requests(&mut paid, 10);
    let with_feature = allocations_during(|| requests(&mut paid, N));
    assert_eq!(
        with_feature, inner_only,
        "an admitted request allocated in RequireFeature"
    );
    // A request refused for its feature allocates what its response takes, no more
    // than a license refusal (its texts were made once, when the layer was).
    let mut unlicensed = valid.require_feature("reports").layer(OneAllocation);
    requests(&mut unlicensed, 10);
    let not_licensed = allocations_during(|| requests(&mut unlicensed, N));
    assert!(
        not_licensed <= 2 * N as u64,
        "{not_licensed} allocations for {N} feature refusals"
    );

    // A refused request never reaches the inner service; it allocates only what building
    // a response with two headers takes, nothing per-request beyond that (no formatting).
    let reference = allocations_during(|| {
        for _ in 0..N {
            let mut response = Response::new(());
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            response
                .headers_mut()
                .insert("cache-control", http::HeaderValue::from_static("no-store"));
            drop(response);
        }
    });
    let mut refusing = cut_off.layer().layer(OneAllocation);
    requests(&mut refusing, 10);
    let refused = allocations_during(|| requests(&mut refusing, N));
    assert_eq!(
        refused, reference,
        "a refused request allocated more than its response"
    );
    assert!(
        refused <= 2 * N as u64,
        "{refused} allocations for {N} refusals"
    );
}
