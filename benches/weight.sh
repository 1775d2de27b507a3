#!/usr/bin/env bash
# What the library adds to a plain axum app: crates in the build, release binary size
# (and stripped), and a clean release build's wall time. Builds three scratch apps in a
# temporary directory, one without the library, one with it (default features, the
# layer and /health), and one that also counts instances (feature `kubernetes`, set up
# as the README says), each from an empty target directory.
#
#   bash benches/weight.sh            # ~8 minutes on 2 cores; needs network for crates.io
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

app() { # name, extra dependency line, main.rs body
  mkdir -p "$work/$1/src"
  cat > "$work/$1/Cargo.toml" <<TOML
[package]
name = "$1"
version = "0.1.0"
edition = "2024"
[dependencies]
axum = "0.8.9"
tokio = { version = "1.47", features = ["rt-multi-thread", "macros", "net"] }
$2
[workspace]
TOML
  printf '%s\n' "$3" > "$work/$1/src/main.rs"
}

app plain "" 'use axum::{Router, routing::get};
#[tokio::main]
async fn main() {
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        axum::serve(listener, app).await.unwrap();
    }
}'

# The licensed app's main.rs; $1 is an extra builder call (instance slots), $2 a last
# statement.
licensed_main() {
  cat <<RUST
use axum::{Router, routing::get};
use iosetu_license::*;
#[tokio::main]
async fn main() {
    let key = PublicKey::from_pem(include_str!("$repo/examples/dev-keys/dev.pub.pem")).unwrap();
    let monitor = LicenseMonitor::builder()
        .public_key(key)
        .source(LicenseSource::Env("APP_LICENSE".into()))$1
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(LicenseLayer::new(&monitor))
        .route_service("/health", monitor.health_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        axum::serve(listener, app).await.unwrap();
    }
    $2
}
RUST
}

app licensed "iosetu-license = { path = \"$repo\" }" "$(licensed_main "" "")"

app counted "iosetu-license = { path = \"$repo\", features = [\"kubernetes\"] }
k8s-openapi = { version = \"0.29\", features = [\"v1_33\"] }" \
  "$(licensed_main '
        .instance_slots(InstanceSlots::new("hello"))' 'monitor.shutdown().await;')"

printf '%-10s %7s %12s %14s %10s\n' app crates "binary (B)" "stripped (B)" "build (s)"
for name in plain licensed counted; do
  cd "$work/$name"
  cargo fetch -q
  start=$(date +%s.%N)
  cargo build --release -q
  end=$(date +%s.%N)
  crates=$(cargo tree -e normal --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
  bin="target/release/$name"
  cp "$bin" stripped && strip stripped
  printf '%-10s %7d %12d %14d %10.0f\n' "$name" "$crates" "$(stat -c %s "$bin")" \
    "$(stat -c %s stripped)" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
done
