#!/usr/bin/env bash
# Instructions per request for each variant, counted by callgrind (exact and repeatable,
# unlike timings on a shared machine). Per request = (Ir at 2N - Ir at N) / N, so the
# fixed costs (start-up, the monitor) cancel out.
#
#   bash benches/instructions.sh            # needs valgrind (Debian package "valgrind")
#   bash benches/instructions.sh served-identity served-valid   # only these rows
#
# "floor" is a minimal gate+drain layer written by hand in benches/common (what the same
# behaviour on ready responses costs at the least): the row to hold the crate's layer to.
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
printf '%-16s %14s %18s\n' variant "instr/request" "vs identity"
declare -A per
all=(bare identity floor valid grace rejecting feature served-identity served-floor served-valid
  served-feature counted served-counted stream-identity stream-floor stream-valid)
if (($#)); then variants=("$@"); else variants=("${all[@]}"); fi
for variant in "${variants[@]}"; do
  m=$n; [[ $variant == stream-* ]] && m=$((n / 10))
  a=$(ir "$variant" "$m"); b=$(ir "$variant" $((2 * m)))
  per[$variant]=$(( (b - a) / m ))
  case $variant in
    stream-*) base=stream-identity ;;
    served-*) base=served-identity ;;
    *) base=identity ;;
  esac
  if [[ $variant == bare || -z ${per[$base]:-} ]]; then delta="-"; else delta=$(( per[$variant] - per[$base] )); fi
  printf '%-16s %14s %18s\n' "$variant" "${per[$variant]}" "$delta"
done
# Per frame of a 100-frame body: what the stream adds to the same request, over 100.
for x in identity floor valid; do
  [[ -n ${per[stream-$x]:-} && -n ${per[$x]:-} ]] || continue
  frame=$(( (per[stream-$x] - per[$x]) ))
  printf 'per frame, %-9s %d.%02d\n' "$x:" $((frame / 100)) $((frame % 100))
done
