#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (run by hand or on a lent
# GPU machine; CI machines have none): the node must find every GPU that
# nvidia-smi lists, tag itself cuda/optix/gpu, run --slots-per-gpu N slots,
# and show each GPU's memory in its telemetry.
#   tests/gpu/check.sh [SWARM_BINARY]
set -euo pipefail
swarm=${1:-target/release/swarm}
fail() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }
get() { # GET a URL: curl, else python3, else bash's /dev/tcp
  if command -v curl >/dev/null; then curl -sf "$1"; return; fi
  if command -v python3 >/dev/null; then python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; return; fi
  local hostport=${1#http://}; hostport=${hostport%%/*}; local path=/${1#http://*/}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
  printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$path" >&3
  sed '1,/^\r$/d' <&3; exec 3>&-
}
command -v nvidia-smi >/dev/null || fail "nvidia-smi is not here: not a GPU machine"
nvidia-smi -L
want=$(nvidia-smi -L | grep -c '^GPU ')
echo "== swarm gpus"
"$swarm" gpus
json=$("$swarm" gpus --json)
found=$(grep -o '"vendor": "nvidia"' <<<"$json" | wc -l)
[ "$found" = "$want" ] || fail "nvidia-smi lists $want GPUs, swarm found $found"
for tag in cuda optix gpu; do grep -q "\"$tag\"" <<<"$json" || fail "tag $tag missing: $json"; done
echo "== a node with --slots-per-gpu 2"
data=$(mktemp -d); port=$((20000 + RANDOM % 20000))
"$swarm" node --data "$data" --web "127.0.0.1:$port" --no-mdns --listen /ip4/127.0.0.1/tcp/0 \
  --slots-per-gpu 2 >"$data/log" 2>&1 &
node=$!; trap 'kill $node 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  nodes=$(get "http://127.0.0.1:$port/api/v1/nodes" 2>/dev/null || true)
  grep -q '"memory_total"' <<<"$nodes" && grep -q '"gpus":\[{' <<<"$nodes" && break
  sleep 0.3
done
echo "$nodes"
grep -q "\"slots\":$((2 * want))," <<<"$nodes" || fail "expected $((2 * want)) slots"
grep -q '"tags":\[[^]]*"cuda"' <<<"$nodes" || fail "the node is not tagged cuda"
gpus_shown=$(grep -o '"gpus":\[[^]]*\]' <<<"$nodes" | grep -o '"name"' | wc -l)
[ "$gpus_shown" = "$want" ] || fail "telemetry shows $gpus_shown GPUs, not $want"
echo "detection: $want GPU(s) found, tagged, $((2 * want)) slots, telemetry shown"

# A Cycles render on the GPU, where Blender is here (Blender's own build:
# Debian's has no CUDA kernels). With --device optix the engine's Python
# raises when Cycles finds no OptiX device (and Blender exits 1), so frames
# that come back were rendered on the GPU.
blender=${BLENDER:-$(command -v blender || true)}
if [ -z "$blender" ]; then
  echo "GPU CHECK PASSED (detection only: no Blender here for the GPU render)"
  exit 0
fi
scene="$data/gpu.blend"
"$blender" -b --factory-startup --python-exit-code 1 --python-expr "
import bpy
s = bpy.context.scene
s.render.engine = 'CYCLES'; s.cycles.samples = 16
s.render.resolution_x, s.render.resolution_y = 128, 96
s.frame_start, s.frame_end = 1, 2
bpy.ops.wm.save_as_mainfile(filepath='$scene')" >/dev/null
SWARM_API="http://127.0.0.1:$port" "$swarm" submit "$scene" --frames 1-2 --device optix \
  --out "$data/frames" --wait --json > "$data/job.json" || fail "the OptiX render failed"
for f in 1 2; do [ -s "$data/frames/frame_000$f.png" ] || fail "frame $f missing"; done
echo "GPU CHECK PASSED: detection and an OptiX render of 2 frames"
