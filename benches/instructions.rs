//! A fixed number of requests through one variant, for instruction counting with
//! callgrind (see `benches/instructions.sh`): instructions, unlike nanoseconds, do not
//! depend on what else the machine is doing.
//!
//! `instructions VARIANT N`, VARIANT one of bare, identity, valid, grace, rejecting,
//! feature (`RequireFeature`, the license grants it), stream-identity, stream-valid (a
//! response of 100 frames, read to the end).
//! Run by `cargo bench` with no arguments, it does a short smoke run of each variant.

mod common;

use std::hint::black_box;

use common::floor::FloorLayer;
use common::{
    Hello, State, Streamer, monitor, one_request, one_request_as_served, one_streamed_request,
    runtime,
};
use tower::Layer;
use tower::layer::util::Identity;

// Kept out of `run`: each variant is compiled on its own, not as a part of one
// function whose other arms shape its registers and stack.
#[inline(never)]
fn drive<S>(mut service: S, n: u64)
where
    S: tower::Service<common::Req>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        black_box(one_request(black_box(&mut service)));
    }
}

// Kept out of `run`: each variant is compiled on its own, not as a part of one
// function whose other arms shape its registers and stack.
#[inline(never)]
fn drive_served<S>(mut service: S, n: u64)
where
    S: tower::Service<common::Req>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        black_box(one_request_as_served(black_box(&mut service)));
    }
}

// Kept out of `run`: each variant is compiled on its own, not as a part of one
// function whose other arms shape its registers and stack.
#[inline(never)]
fn drive_streams<S, B>(mut service: S, n: u64)
where
    S: tower::Service<common::Req, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..n {
        black_box(one_streamed_request(black_box(&mut service)));
    }
}

const VARIANTS: [&str; 16] = [
    "bare",
    "identity",
    "floor",
    "valid",
    "grace",
    "rejecting",
    "feature",
    "served-identity",
    "served-floor",
    "served-valid",
    "served-feature",
    "counted",
    "served-counted",
    "stream-identity",
    "stream-floor",
    "stream-valid",
];

fn run(variant: &str, n: u64) {
    let rt = runtime();
    match variant {
        "bare" => drive(Hello, n),
        "identity" => drive(Identity::new().layer(Hello), n),
        "floor" => drive(FloorLayer.layer(Hello), n),
        "valid" => drive(monitor(&rt, State::Valid).layer().layer(Hello), n),
        "grace" => drive(monitor(&rt, State::Grace).layer().layer(Hello), n),
        "rejecting" => drive(monitor(&rt, State::Rejecting).layer().layer(Hello), n),
        "feature" => drive(
            monitor(&rt, State::Valid)
                .require_feature("sso")
                .layer(Hello),
            n,
        ),
        "served-identity" => drive_served(Identity::new().layer(Hello), n),
        "served-floor" => drive_served(FloorLayer.layer(Hello), n),
        "served-valid" => drive_served(monitor(&rt, State::Valid).layer().layer(Hello), n),
        "counted" => drive(monitor(&rt, State::Counted).layer().layer(Hello), n),
        "served-counted" => drive_served(monitor(&rt, State::Counted).layer().layer(Hello), n),
        "served-feature" => drive_served(
            monitor(&rt, State::Valid)
                .require_feature("sso")
                .layer(Hello),
            n,
        ),
        "stream-identity" => drive_streams(Identity::new().layer(Streamer), n),
        "stream-floor" => drive_streams(FloorLayer.layer(Streamer), n),
        "stream-valid" => drive_streams(monitor(&rt, State::Valid).layer().layer(Streamer), n),
        other => {
            eprintln!("unknown variant {other}: one of {VARIANTS:?}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [variant, n] => run(variant, n.parse().expect("N is a number")),
        [] => {
            for variant in VARIANTS {
                run(variant, 1000);
            }
            println!("instructions: smoke run done; count with benches/instructions.sh");
        }
        _ => {
            eprintln!("usage: instructions VARIANT N");
            std::process::exit(2);
        }
    }
}
