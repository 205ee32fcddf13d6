#!/usr/bin/env bash
# Fine-tune the shipped default model's three flows on procedural objects plus real meshes from packages
# (docs/training.md, "Fine-tuning the shipped model"). Run from the repository root on a CUDA machine:
#   scripts/finetune_tiny.sh data SECONDS MESH_DIR  # ingest MESH_DIR, then procedural shards, into data/tiny_mix
#   scripts/finetune_tiny.sh flows MINUTES          # the three flows from pixal3d/weights/default, side by side
#   scripts/finetune_tiny.sh assemble DIR           # shipped VAEs + fine-tuned flows -> pipeline folder DIR
# The VAEs and the encoder stay frozen (the shipped ones); every phase resumes. Procedural seeds start at
# SEED_OFFSET (default 2155, after the seeds the shipped model saw); held-out evaluation seeds start at 1000000.
set -uo pipefail
phase=${1:?phase: data | flows | assemble}
limit=${2:?seconds (data), minutes (flows) or a folder (assemble)}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
mkdir -p runs logs
sizes=(--views 4 --size 256 --resolution 128 --coarse 32 --workers "${WORKERS:-14}" --device cuda)

case $phase in
data)
    meshes=${3:?data needs MESH_DIR, a folder of .glb/.gltf/.obj meshes}
    start=$SECONDS
    python -m pixal3d data ingest "$meshes" -o data/tiny_mix "${sizes[@]}" >logs/ingest.log 2>&1
    tail -n 2 logs/ingest.log
    left=$((limit - (SECONDS - start)))
    if [ "$left" -gt 0 ]; then
        setsid python -m pixal3d data generate --procedural "${ASSETS:-1000000}" --seed-offset "${SEED_OFFSET:-2155}" \
            -o data/tiny_mix "${sizes[@]}" >logs/data.log 2>&1 &
        writer=$!
        sleep "$left"
        kill -TERM -- "-$writer" 2>/dev/null
        wait "$writer"
    fi
    python -c "import json; i=json.load(open('data/tiny_mix/index.json')); print(sum(len(u.get('samples', [])) for u in i['units'].values()), 'samples in data/tiny_mix')"
    ;;
flows)
    pids=()
    for stage in structure shape texture; do
        python -m pixal3d train "configs/${stage}_flow_tiny_finetune.json" --resume --max-minutes "$limit" \
            >"logs/${stage}_flow_tiny_finetune.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    for stage in structure shape texture; do tail -n 1 "logs/${stage}_flow_tiny_finetune.log"; done
    exit $status
    ;;
assemble)
    shipped=pixal3d/weights/default
    python -m pixal3d assemble -o "$limit" --structure-vae $shipped/structure_vae --shape-vae $shipped/shape_vae \
        --texture-vae $shipped/texture_vae --structure-flow runs/structure_flow_tiny_ft \
        --shape-flow runs/shape_flow_tiny_ft --texture-flow runs/texture_flow_tiny_ft
    ;;
*)
    echo "unknown phase $phase (data | flows | assemble)" >&2
    exit 2
    ;;
esac
