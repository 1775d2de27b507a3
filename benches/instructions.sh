#!/usr/bin/env bash
# Instructions per request for each variant, counted by callgrind (exact and repeatable,
# unlike timings on a shared machine). Per request = (Ir at 2N - Ir at N) / N, so the
# fixed costs (start-up, the monitor) cancel out.
#
#   bash benches/instructions.sh            # needs valgrind (Debian package "valgrind")
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }

bin=$(cargo bench --no-run --bench instructions --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "instructions":
        print(m["executable"])')
n=100000
ir() { # variant iterations -> total instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-10s %14s %18s\n' variant "instr/request" "vs identity"
base=""
for variant in bare identity valid grace rejecting; do
  a=$(ir "$variant" "$n"); b=$(ir "$variant" $((2 * n)))
  per=$(( (b - a) / n ))
  [ "$variant" = identity ] && base=$per
  if [ -n "$base" ]; then delta=$(( per - base )); else delta="-"; fi
  printf '%-10s %14s %18s\n' "$variant" "$per" "$delta"
done
