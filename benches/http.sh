#!/usr/bin/env bash
# Requests per second of an axum hello-world on 127.0.0.1 with and without the license
# layer, measured with wrk in interleaved rounds (so drift in the machine's speed hits
# both alike); prints each round and the median ratio. Loopback only, bounded in time.
#
#   bash benches/http.sh [ROUNDS] [SECONDS]     # defaults: 5 rounds of 5 s each
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --example hello_bench >/dev/null 2>&1
bin=target/release/examples/hello_bench
port_bare=18081
port_layer=18082
# The servers run single-threaded on core 0 and wrk on core 1, so the two never fight
# for a core: on a 2-core machine that fight is the largest source of noise.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  core0=(taskset -c 0); core1=(taskset -c 1)
else
  core0=(); core1=()
fi
# taskset execs the server, so $! is the server itself and the trap can stop it.
"${core0[@]}" "$bin" "127.0.0.1:$port_bare" bare >/dev/null 2>&1 & pid_bare=$!
"${core0[@]}" "$bin" "127.0.0.1:$port_layer" layer >/dev/null 2>&1 & pid_layer=$!
trap 'kill $pid_bare $pid_layer 2>/dev/null || true' EXIT
sleep 1
rps() { "${core1[@]}" wrk -t1 -c32 -d"${secs}s" "http://127.0.0.1:$1/" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p'; }
# Warm both up, then alternate which goes first, so neither gains from going second.
rps $port_bare >/dev/null; rps $port_layer >/dev/null
ratios=()
for i in $(seq 1 "$rounds"); do
  if (( i % 2 )); then bare=$(rps $port_bare); layer=$(rps $port_layer)
  else layer=$(rps $port_layer); bare=$(rps $port_bare); fi
  ratio=$(python3 -c "print(f'{$layer / $bare:.4f}')")
  ratios+=("$ratio")
  printf 'round %d: bare %10.0f req/s   layer %10.0f req/s   ratio %s\n' "$i" "$bare" "$layer" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print(f"{v[len(v)//2]:.4f}")')
echo "median ratio (layer / bare): $median"
