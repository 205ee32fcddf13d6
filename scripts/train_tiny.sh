#!/usr/bin/env bash
# The shipped default model's training recipe (docs/training.md), in phases that each fit a time-limited GPU call.
# Run from the repository root on a CUDA machine:
#   scripts/train_tiny.sh data   SECONDS   # procedural shards into data/tiny (seeds from SEED_OFFSET, default 0)
#   scripts/train_tiny.sh vaes   MINUTES   # the three VAEs, side by side on the one GPU (resumable)
#   scripts/train_tiny.sh flows  MINUTES   # the three flows + the two cross-attention-only ablation flows
#   scripts/train_tiny.sh assemble DIR     # runs/ -> pipeline folder DIR (float16)
# Fine-tuning the shipped model (pixal3d/weights/default; its VAEs and encoder stay frozen):
#   scripts/train_tiny.sh finetune-data SECONDS MESH_DIR  # ingest MESH_DIR, then procedural seeds from SEED_OFFSET
#                                                        # (default 2155), into data/tiny_mix
#   scripts/train_tiny.sh finetune MINUTES                 # the three flows from the shipped weights, side by side
#   scripts/train_tiny.sh finetune-assemble DIR            # shipped VAEs + encoder + the fine-tuned flows -> DIR
# The depth-aware lift (issue 14, item 2): the three flows widened with depth_lift, from the shipped weights:
#   scripts/train_tiny.sh depthlift MINUTES                # on data/tiny_mix (finetune-data), side by side
#   scripts/train_tiny.sh depthlift-assemble DIR           # shipped VAEs + encoder + heads + depth-lift flows -> DIR
# Fidelity round (issues 14-16): the decoders fine-tuned with their encoders frozen (the latent spaces, and so the
# shipped flows, stay valid), the shape decoder widened to the "corners" target, and the depth-lift flows:
#   scripts/train_tiny.sh fidelity-data SECONDS            # procedural seeds from SEED_OFFSET (default 2155) -> data/tiny_mix
#   scripts/train_tiny.sh fidelity MINUTES                 # the six runs side by side (resumable)
#   scripts/train_tiny.sh fidelity-assemble DIR            # shipped encoder + heads + fine-tuned decoders + depth-lift flows
# Round 2 of it: the corners shape decoder (lr_scale on its output layer) and the three depth-lift flows, continued
# from a candidate pipeline folder (INIT=DIR passes --init-weights DIR to every run; default: the configs' own):
#   INIT=DIR scripts/train_tiny.sh round MINUTES            # the four runs side by side (resumable)
#   scripts/train_tiny.sh round-assemble DIR               # shipped encoder, heads, structure and texture VAEs +
#                                                           # the shape VAE + the depth-lift flows -> DIR
# round-assemble writes the corners run's shape decoder as an "edges" decoder (assemble --shape-decoder edges): its
# edge rows, trained on every voxel beside the corner target, measured far better than its corner rows
# (docs/results.md "Round 2"); SHAPE_DECODER=trained keeps the corners decoder.
# Round 3 (issue 14: the depth head is the weak link): the three depth-lift flows continued from the shipped model
# with the lift reading the frozen shipped head's map for half the samples (lift_depth_head_fraction), beside the
# shipped depth head continued on the same shards (configs/depth_head_tiny.json). The round of 2026-12-03 trained the
# head from scratch instead (configs/depth_head_tiny_scratch.json, the dilated head that ships since):
#   scripts/train_tiny.sh round3 MINUTES                   # the four runs side by side (resumable)
#   scripts/train_tiny.sh round3-assemble DIR              # shipped VAEs, encoder + the three flows + the head -> DIR
# Round 4 (issue 15: the FoV head is the weak link for real photos): round 3 continued, beside a FoV head that also
# reads a convolutional summary of the /4 map (configs/fov_head_tiny_scratch.json, from scratch on the frozen encoder):
#   scripts/train_tiny.sh round4 MINUTES                   # the five runs side by side (resumable)
#   scripts/train_tiny.sh round4-assemble DIR              # round3-assemble + the new FoV head -> DIR
# Round 5: round 4 continued, the FoV head included (configs/fov_head_tiny.json starts from the shipped head):
#   scripts/train_tiny.sh round5 MINUTES                   # the five runs side by side (resumable)
#   scripts/train_tiny.sh round5-assemble DIR              # round3-assemble + the continued FoV head -> DIR
# Every phase resumes where the last one stopped; held-out evaluation seeds start at 1000000.
set -uo pipefail
phases="data | vaes | flows | assemble | finetune-data | finetune | finetune-assemble | depthlift | depthlift-assemble |
 fidelity-data | fidelity | fidelity-assemble | round | round-assemble | round3 | round3-assemble |
 round4 | round4-assemble | round5 | round5-assemble"
phase=${1:?phase: $phases}
limit=${2:?seconds (data), minutes (vaes, flows, finetune) or a folder (assemble)}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
mkdir -p runs logs

train_all() {  # train_all MINUTES CONFIG... : one process per config, all at once, each resuming its run
    local minutes=$1 pids=() config name init=()
    shift
    [ -n "${INIT:-}" ] && init=(--init-weights "$INIT")
    for config in "$@"; do
        name=$(basename "$config" .json)
        python -m pixal3d train "$config" --resume --max-minutes "$minutes" "${init[@]}" >"logs/$name.log" 2>&1 &
        pids+=($!)
    done
    local status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    for config in "$@"; do tail -n 1 "logs/$(basename "$config" .json).log"; done
    return $status
}

# Round 3's runs, which rounds 4 and 5 continue: the three depth-lift flows and the depth head.
round3_runs=(configs/structure_flow_tiny_depthlift.json configs/shape_flow_tiny_depthlift.json
    configs/texture_flow_tiny_depthlift.json configs/depth_head_tiny.json)
sizes=(--views 4 --size 256 --resolution 128 --coarse 32 --workers "${WORKERS:-14}" --device cuda)

generate_for() {  # generate_for SECONDS DIR SEED_OFFSET : procedural shards into DIR for SECONDS, then a count
    # Shards are written unit by unit with an atomic index, so stopping the writer loses at most the units in flight.
    # FAMILIES=all adds the Zeroverse-style families to the classic ones (docs/training.md, "Data").
    setsid python -m pixal3d data generate --procedural "${ASSETS:-1000000}" --seed-offset "$3" -o "$2" "${sizes[@]}" \
        --families "${FAMILIES:-classic}" >logs/data.log 2>&1 &
    local writer=$!
    sleep "$1"
    kill -TERM -- "-$writer" 2>/dev/null
    wait "$writer"
    python -c "import json, sys; i=json.load(open(sys.argv[1] + '/index.json')); print(sum(len(u.get('samples', [])) for u in i['units'].values()), 'samples in', sys.argv[1])" "$2"
}

case $phase in
data)
    generate_for "$limit" data/tiny "${SEED_OFFSET:-0}"
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
finetune-data)
    meshes=${3:?finetune-data needs MESH_DIR, a folder of .glb/.gltf/.obj meshes}
    start=$SECONDS
    python -m pixal3d data ingest "$meshes" -o data/tiny_mix "${sizes[@]}" >logs/ingest.log 2>&1
    tail -n 2 logs/ingest.log
    left=$((limit - (SECONDS - start)))
    [ "$left" -gt 0 ] && generate_for "$left" data/tiny_mix "${SEED_OFFSET:-2155}"
    ;;
finetune)
    train_all "$limit" configs/structure_flow_tiny_finetune.json configs/shape_flow_tiny_finetune.json \
        configs/texture_flow_tiny_finetune.json
    ;;
finetune-assemble)
    shipped=pixal3d/weights/default
    python -m pixal3d assemble -o "$limit" --structure-vae $shipped/structure_vae --shape-vae $shipped/shape_vae \
        --texture-vae $shipped/texture_vae --structure-flow runs/structure_flow_tiny_ft \
        --shape-flow runs/shape_flow_tiny_ft --texture-flow runs/texture_flow_tiny_ft
    ;;
depthlift)
    train_all "$limit" configs/structure_flow_tiny_depthlift.json configs/shape_flow_tiny_depthlift.json \
        configs/texture_flow_tiny_depthlift.json
    ;;
depthlift-assemble)  # the structure run carries the shipped FoV and depth heads unchanged (weights 0)
    shipped=pixal3d/weights/default
    python -m pixal3d assemble -o "$limit" --structure-vae $shipped/structure_vae --shape-vae $shipped/shape_vae \
        --texture-vae $shipped/texture_vae --structure-flow runs/structure_flow_tiny_depthlift \
        --shape-flow runs/shape_flow_tiny_depthlift --texture-flow runs/texture_flow_tiny_depthlift
    ;;
fidelity-data)
    generate_for "$limit" data/tiny_mix "${SEED_OFFSET:-2155}"
    ;;
fidelity)
    train_all "$limit" configs/shape_vae_tiny_corners_ft.json configs/shape_vae_tiny_decoder_ft.json \
        configs/texture_vae_tiny_decoder_ft.json configs/structure_flow_tiny_depthlift.json \
        configs/shape_flow_tiny_depthlift.json configs/texture_flow_tiny_depthlift.json
    ;;
fidelity-assemble)  # SHAPE_VAE=runs/shape_vae_tiny_decoder_ft picks the edges decoder instead of the corners one
    shipped=pixal3d/weights/default
    python -m pixal3d assemble -o "$limit" --structure-vae $shipped/structure_vae \
        --shape-vae "${SHAPE_VAE:-runs/shape_vae_tiny_corners_ft}" --texture-vae runs/texture_vae_tiny_decoder_ft \
        --structure-flow runs/structure_flow_tiny_depthlift --shape-flow runs/shape_flow_tiny_depthlift \
        --texture-flow runs/texture_flow_tiny_depthlift
    ;;
round)
    train_all "$limit" configs/shape_vae_tiny_corners_ft.json configs/structure_flow_tiny_depthlift.json \
        configs/shape_flow_tiny_depthlift.json configs/texture_flow_tiny_depthlift.json
    ;;
round-assemble)
    shipped=pixal3d/weights/default
    decoder=()
    [ "${SHAPE_DECODER:-edges}" = edges ] && decoder=(--shape-decoder edges)
    python -m pixal3d assemble -o "$limit" "${decoder[@]}" --structure-vae $shipped/structure_vae \
        --shape-vae runs/shape_vae_tiny_corners_ft --texture-vae $shipped/texture_vae \
        --structure-flow runs/structure_flow_tiny_depthlift --shape-flow runs/shape_flow_tiny_depthlift \
        --texture-flow runs/texture_flow_tiny_depthlift
    ;;
round3)
    train_all "$limit" "${round3_runs[@]}"
    ;;
round3-assemble)
    shipped=pixal3d/weights/default
    python -m pixal3d assemble -o "$limit.flows" --structure-vae $shipped/structure_vae \
        --shape-vae $shipped/shape_vae --texture-vae $shipped/texture_vae \
        --structure-flow runs/structure_flow_tiny_depthlift --shape-flow runs/shape_flow_tiny_depthlift \
        --texture-flow runs/texture_flow_tiny_depthlift || exit 1
    python -m pixal3d assemble --add-heads runs/depth_head_tiny --base "$limit.flows" -o "$limit"
    ;;
round4)
    train_all "$limit" "${round3_runs[@]}" configs/fov_head_tiny_scratch.json
    ;;
round5)
    train_all "$limit" "${round3_runs[@]}" configs/fov_head_tiny.json
    ;;
round4-assemble | round5-assemble)
    fov=runs/fov_head_scratch
    [ "$phase" = round5-assemble ] && fov=runs/fov_head_tiny
    "$0" round3-assemble "$limit.depth" || exit 1
    python -m pixal3d assemble --add-heads "$fov" --base "$limit.depth" -o "$limit"
    ;;
*)
    echo "unknown phase $phase ($phases)" >&2
    exit 2
    ;;
esac
