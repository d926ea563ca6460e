#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, two at a time, and fails if any
# finds a crash. Shaped for CI: one build for all targets (debug deps build
# far faster than release, see fuzz/Cargo.toml), the committed corpus read
# as seeds only (new inputs go to a temporary folder, so a run never writes
# into the repository), and each target's figures printed at the end.
#
# Stable Rust is enough: `--sanitizer none` makes cargo-fuzz pass only
# stable `-C` flags (sancov passes, debug assertions, overflow checks), so
# no nightly and no RUSTC_BOOTSTRAP. Without a sanitizer, libFuzzer still
# catches panics, overflows, timeouts and memory over -rss_limit_mb.
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_JOBS (targets at
# once, default 2), FUZZ_TARGETS (space-separated names, default all),
# FUZZ_KEEP=1 (merge what the run found into fuzz/corpus, minimised: how
# the committed corpora grow; review the size before committing).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=target/$triple/debug

start=$(date +%s)
cargo fuzz build --dev --sanitizer none
echo "fuzz build: $(($(date +%s) - start)) s"
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {
  local name=$1
  mkdir -p "$work/$name" "corpus/$name" "artifacts/$name"
  local rc=0
  # New inputs go into the first folder (temporary); corpus/NAME only seeds.
  "$bin_dir/$name" "$work/$name" "corpus/$name" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$name/" \
    >"$work/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$name.rc"
}

for name in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  echo "fuzzing $name for ${seconds}s"
  run_one "$name" &
done
wait

failed=0
for name in "${targets[@]}"; do
  rc=$(cat "$work/$name.rc")
  log=$work/$name.log
  echo "== $name (exit $rc)"
  # libFuzzer's last status line (coverage, features, corpus) and stats.
  grep -E '^#[0-9]+' "$log" | tail -1 || true
  grep -E '^(Done |stat::)' "$log" || true
  echo "new corpus inputs: $(find "$work/$name" -type f | wc -l)"
  if [ "$rc" != 0 ]; then
    failed=1
    tail -40 "$log"
    for crash in $(grep -oE "artifacts/$name/[a-z-]+-[0-9a-f]+" "$log" | sort -u); do
      echo "crashing input: fuzz/$crash ($(wc -c <"$crash") bytes)"
      od -An -tx1 "$crash" | head -32 || true
      echo "reproduce: cargo fuzz run --dev --sanitizer none $name fuzz/$crash"
    done
  elif [ "${FUZZ_KEEP:-}" = 1 ]; then
    "$bin_dir/$name" -merge=1 "corpus/$name" "$work/$name" >/dev/null 2>&1
    echo "corpus/$name: $(find "corpus/$name" -type f | wc -l) inputs, $(du -sk "corpus/$name" | cut -f1) KB"
  fi
done
echo "fuzzing: $(($(date +%s) - start)) s in all"
exit "$failed"
