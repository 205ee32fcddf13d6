#!/usr/bin/env bash
# The speed measurements of issues 16 (training steps) and 18 (the GPU export) in one GPU call of about 7 minutes;
# small text and JSON files only (never GLBs) into OUT:   scripts/measure_speed.sh OUT
#   train_before.*   the trainer's step at the configs' batches (docs/training.md "Benchmark", before)
#   train_after.*    4x batches, fused AdamW, the flows' latent cache (the atomic-free sparse conv is always on)
#   train_profile.txt  top kernels and host syncs of the shape VAE and the shape flow at those settings
#   cuda_tests.txt   the CUDA-only tests of the PyTorch export path
#   gpu_export.*     both export paths: sub-step times, texel efficiency, colour / normal differences, a batch of 64
#   bench_2048.*     `pixal3d bench` image -> GLB with the GPU export at 2048^2, 100k faces
# PARTS="train_after gpu_export" (names as above) runs only those, in the order below; default: all.
# After a training call, `python scripts/sustained_rate.py runs/* --bench OUT/train_after.json` says how much of
# each step's isolated rate the runs sustained with their data.
set -uo pipefail
out=${1:?OUT folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
batches=(--batch structure_vae=128 shape_vae=32 texture_vae=32 structure_flow=128 shape_flow=64 texture_flow=64)
parts=${PARTS:-train_before train_after train_profile cuda_tests gpu_export bench_2048}
run() {  # run SECONDS NAME COMMAND... : the command's output into OUT/NAME.txt, its last lines to the terminal
    local seconds=$1 name=$2
    shift 2
    [[ " $parts " == *" $name "* ]] || return 0
    timeout "$seconds" "$@" >"$out/$name.txt" 2>&1 || echo "$name: exit $? (see $name.txt)"
    grep -v -i warning "$out/$name.txt" | tail -n 12
}
run 150 train_before python bench/train_bench.py --steps 10 --json "$out/train_before.json"
run 150 train_after python bench/train_bench.py --steps 10 --optimizer-impl fused "${batches[@]}" --latent-cache 1000 \
    --json "$out/train_after.json"
run 100 train_profile python bench/train_bench.py --steps 5 --optimizer-impl fused "${batches[@]}" --latent-cache 1000 \
    --profile --profile-steps 2 --models shape_vae shape_flow
run 60 cuda_tests python -m pytest -q tests/test_torch_export.py -k cuda -rs
run 200 gpu_export python bench/gpu_export_bench.py --device cuda --faces 100000 --texture-size 2048 4096 --pipeline \
    --batch 64 --output "$out/gpu_export.json"
run 90 bench_2048 python -m pixal3d bench --device cuda --export --export-device cuda --faces 100000 \
    --texture-size 2048 --runs 3 -o "$out/bench_2048.json"
