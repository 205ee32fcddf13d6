#!/usr/bin/env bash
# The shipped default model's training recipe (docs/training.md), in phases that each fit a time-limited GPU call.
# Run from the repository root on a CUDA machine:
#   scripts/train_tiny.sh data   SECONDS   # procedural shards into data/tiny (seeds from SEED_OFFSET, default 0)
#   scripts/train_tiny.sh vaes   MINUTES   # the three VAEs, side by side on the one GPU (resumable)
#   scripts/train_tiny.sh flows  MINUTES   # the three flows + the two cross-attention-only ablation flows
#   scripts/train_tiny.sh assemble DIR     # runs/ -> pipeline folder DIR (float16)
# Every phase resumes where the last one stopped; held-out evaluation seeds start at 1000000.
set -uo pipefail
phase=${1:?phase: data | vaes | flows | assemble}
limit=${2:?seconds (data), minutes (vaes, flows) or a folder (assemble)}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
mkdir -p runs logs

train_all() {  # train_all MINUTES CONFIG... : one process per config, all at once, each resuming its run
    local minutes=$1 pids=() config name
    shift
    for config in "$@"; do
        name=$(basename "$config" .json)
        python -m pixal3d train "$config" --resume --max-minutes "$minutes" >"logs/$name.log" 2>&1 &
        pids+=($!)
    done
    local status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    for config in "$@"; do tail -n 1 "logs/$(basename "$config" .json).log"; done
    return $status
}

case $phase in
data)
    # Shards are written unit by unit with an atomic index, so stopping the writer loses at most the units in flight.
    setsid python -m pixal3d data generate --procedural "${ASSETS:-1000000}" --views 4 --size 256 --resolution 128 --coarse 32 \
        --workers "${WORKERS:-14}" --device cuda --seed-offset "${SEED_OFFSET:-0}" -o data/tiny >logs/data.log 2>&1 &
    writer=$!
    sleep "$limit"
    kill -TERM -- "-$writer" 2>/dev/null
    wait "$writer"
    python -c "import json; i=json.load(open('data/tiny/index.json')); print(sum(len(u.get('samples', [])) for u in i['units'].values()), 'samples in data/tiny')"
    ;;
vaes)
    train_all "$limit" configs/structure_vae_tiny.json configs/shape_vae_tiny.json configs/texture_vae_tiny.json
    ;;
flows)
    [ -d runs/encoder_tiny ] || python -m pixal3d assemble --make-encoder runs/encoder_tiny
    train_all "$limit" configs/structure_flow_tiny.json configs/shape_flow_tiny.json configs/texture_flow_tiny.json \
        configs/structure_flow_tiny_cross.json configs/shape_flow_tiny_cross.json
    ;;
assemble)
    python -m pixal3d assemble runs -o "$limit"
    ;;
*)
    echo "unknown phase $phase (data | vaes | flows | assemble)" >&2
    exit 2
    ;;
esac
