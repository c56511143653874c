#!/usr/bin/env bash
# Fuzz the input agent's contract (rust/dataplane/src/http/contract.rs) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]     (default 60)
#
# Exits non-zero when libFuzzer finds a crash, and prints where the crashing input is: drop
# that file into rust/dataplane/tests/corpus/request/ once the bug is fixed.
#
# Stable Rust: `--sanitizer none` needs no nightly flag (coverage instrumentation, overflow
# checks and debug assertions stay on). The code under test is safe Rust, so ASan would
# mostly halve the speed; FUZZ_SANITIZER=address asks for it anyway (via RUSTC_BOOTSTRAP=1).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
  ''|*[!0-9]*|0) echo "usage: $0 [SECONDS>0]" >&2; exit 2 ;;
esac
sanitizer="${FUZZ_SANITIZER:-none}"
cargo_fuzz_version=0.13.2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/rust/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked </dev/null
fi

if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi
flags=(--sanitizer "$sanitizer")

cargo fuzz build request "${flags[@]}" </dev/null

# libFuzzer adds what it learns to its first corpus directory: keep that one out of the tree,
# so the committed seeds and the regression corpus stay as they are.
work="target/corpus-request"
mkdir -p "$work" artifacts/request
log="target/fuzz-request.log"

# -timeout: a hanging input is a finding, not a stalled CI; the outer timeout is a last resort.
set +e
timeout -k 30 "$((seconds + 300))" \
  cargo fuzz run request "${flags[@]}" "$work" corpus/request ../dataplane/tests/corpus/request -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 </dev/null 2>&1 \
  | tee "$log" | grep -E --line-buffered '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)|^Done [0-9]+ runs'
codes=("${PIPESTATUS[@]}")
set -e
status="${codes[0]}"

if [ "$status" -ne 0 ] || grep -q 'Test unit written to' "$log"; then
  tail -n 60 "$log" >&2
  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
  echo "fuzz: request: FINDING (exit status $status); full log: $root/rust/fuzz/$log" >&2
  if [ -n "$artifact" ]; then
    case "$artifact" in /*) ;; *) artifact="$root/rust/fuzz/$artifact" ;; esac
    echo "fuzz: request: crashing input: $artifact" >&2
    echo "fuzz: reproduce: (cd $root/rust/fuzz && cargo fuzz run request --sanitizer $sanitizer $artifact)" >&2
  fi
  exit 1
fi

runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
secs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)"
cov="$(sed -n 's/^#[0-9].* cov: \([0-9]*\) ft: \([0-9]*\) .*/cov \1, ft \2/p' "$log" | tail -n 1)"
if [ -z "$runs" ]; then
  echo "fuzz: request: libFuzzer did not report its runs; full log: $root/rust/fuzz/$log" >&2
  exit 1
fi
echo "fuzz: request: $runs runs in $secs s, no finding (${cov:-no coverage figures})"
