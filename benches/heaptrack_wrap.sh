#!/bin/bash
# Runs the operator under heaptrack (Debian package `heaptrack`) for a heap profile,
# keeping the operator's PID (its /proc figures and SIGTERM stay the operator's), so it
# can stand in for the binary of any benchmark:
#
#   HEAPTRACK_BIN=target/release/mfa-operator HEAPTRACK_OUT=/tmp/ht \
#     python3 benches/steady_state.py --skip-new --window 300 --binary benches/heaptrack_wrap.sh
#   heaptrack_print -f /tmp/ht.<pid>.zst | less          # peak consumers, leaks
#   heaptrack_print -f /tmp/ht.<pid>.zst -M /tmp/ht.massif  # heap in use over time
#
# How it was used for issue 13: BENCHMARKS.md section 3, benches/results/memory_issue13.txt.
set -euo pipefail
BIN=${HEAPTRACK_BIN:-target/release/mfa-operator}
if [ "${1:-}" = "--version" ]; then exec "$BIN" --version; fi
LIB=${HEAPTRACK_LIB:-/usr/lib/heaptrack}
OUT=${HEAPTRACK_OUT:-/tmp/heaptrack-mfa-operator}.$$.zst
pipe=$(mktemp -u /tmp/heaptrack-pipe.XXXXXX)
mkfifo "$pipe"
"$LIB/libexec/heaptrack_interpret" <"$pipe" | zstd -q -c >"$OUT" &
exec env LD_PRELOAD="$LIB/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$pipe" "$BIN" "$@"
