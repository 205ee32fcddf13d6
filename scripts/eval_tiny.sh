#!/usr/bin/env bash
# docs/results.md's evaluation, split into chunks that run side by side on one GPU and fit a time-limited call:
#   [EVAL_FLAGS="--no-silhouette ..."] scripts/eval_tiny.sh MODEL OUT START END [LANES] [CHUNK] [FOV_MODE] [SECONDS]
# evaluates procedural seeds START..END-1 (one view each) in LANES parallel processes, CHUNK seeds per report,
# then merges the finished chunks into OUT (chunks cut off by SECONDS are left out, and the merged count says so).
set -uo pipefail
model=$1 out=$2 start=$3 end=$4 lanes=${5:-4} chunk=${6:-10} mode=${7:-both} seconds=${8:-480}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
parts=$out.parts
mkdir -p "$parts"
lane() {  # lane L: chunks L, L+lanes, ... one after another
    local s
    for ((s = start + $1 * chunk; s < end; s += lanes * chunk)); do
        local e=$((s + chunk < end ? s + chunk : end))
        python -m pixal3d eval --model "$model" --procedural "$s:$e" --views 1 --fov-mode "$mode" \
            ${EVAL_FLAGS:-} -o "$parts/$s" >"$parts/$s.log" 2>&1 || rm -rf "$parts/$s"
    done
}
pids=()
for ((l = 0; l < lanes; l++)); do
    setsid bash -c "$(declare -f lane); EVAL_FLAGS=\"${EVAL_FLAGS:-}\" start=$start end=$end chunk=$chunk lanes=$lanes model=$model mode=$mode parts=$parts; lane $l" &
    pids+=($!)
done
( sleep "$seconds"; for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done ) &
timer=$!
for p in "${pids[@]}"; do wait "$p"; done
kill "$timer" 2>/dev/null
done_parts=$(ls -d "$parts"/*/ 2>/dev/null | while read -r d; do [ -f "$d/metrics.json" ] && echo "$d"; done)
python -m pixal3d eval --merge $done_parts -o "$out"
