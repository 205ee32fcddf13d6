#!/usr/bin/env bash
# docs/results.md's "Pixel-exact assets" evaluation in one GPU call: the default model on 200 held-out procedural
# seeds (true FoV) and the dev assets (both FoV modes), and the ablation of the silhouette rule and the image texels
# on the first 25 seeds, side by side on one GPU (16 host cores):  scripts/pixel_exact_eval.sh MODEL DEV_DIR OUT SECONDS
set -uo pipefail
model=$1 dev=$2 out=$3 seconds=${4:-480}
mkdir -p "$out"
scripts/eval_tiny.sh "$model" "$out/main" 1000000 1000200 10 5 true "$seconds" >"$out/main.log" 2>&1 &
python -m pixal3d eval --model "$model" --data "$dev" --views 1 --fov-mode both -o "$out/dev" >"$out/dev.log" 2>&1 &
EVAL_FLAGS="--no-image-texels" scripts/eval_tiny.sh "$model" "$out/sil" 1000000 1000025 2 5 true "$seconds" \
    >"$out/sil.log" 2>&1 &
EVAL_FLAGS="--no-silhouette" scripts/eval_tiny.sh "$model" "$out/tex" 1000000 1000025 2 5 true "$seconds" \
    >"$out/tex.log" 2>&1 &
EVAL_FLAGS="--no-silhouette --no-image-texels" scripts/eval_tiny.sh "$model" "$out/off" 1000000 1000025 2 5 true \
    "$seconds" >"$out/off.log" 2>&1 &
wait
tail -n 3 "$out"/*.log
