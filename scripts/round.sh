#!/usr/bin/env bash
# One training round that outlives the GPU call starting it (a machine stays while calls follow one another):
#   [ROUND=round3] setsid scripts/round.sh DATA_SECONDS TRAIN_UNTIL BRING >logs/round.log 2>&1 &
# Procedural data for DATA_SECONDS (`train_tiny.sh fidelity-data`), then `train_tiny.sh round` (INIT=DIR starts every
# run from that pipeline folder) until TRAIN_UNTIL (epoch seconds), then the candidate assembled into runs/candidate
# and packed into BRING as files of at most 16 MiB: the four components the round trains, the logs and every run's
# metrics.jsonl (loss and held-out metric per step). BRING/done marks the end; a later call waits for that file
# (never for a process name: `pgrep -f` matches the waiting command's own line).
set -uo pipefail
data_seconds=${1:?DATA_SECONDS} until=${2:?TRAIN_UNTIL (epoch seconds)} bring=${3:?BRING folder} round=${ROUND:-round}
mkdir -p "$bring" logs
trap 'touch "$bring/done"' EXIT
scripts/train_tiny.sh fidelity-data "$data_seconds"
# The runs stop after --max-minutes of training; about a minute goes to start-up (data index, latent caches, compile).
minutes=$(python3 -c "import sys, time; print(round(max(1.0, (int(sys.argv[1]) - time.time()) / 60 - 1.0), 2))" "$until")
echo "training for $minutes minutes"
scripts/train_tiny.sh "$round" "$minutes"
scripts/train_tiny.sh "$round-assemble" runs/candidate || exit 1
case $round in
round)
    tar -C runs/candidate -cf "$bring/weights_a.tar" shape_vae structure_flow pipeline.json ;;
round3)
    tar -C runs/candidate -cf "$bring/weights_a.tar" structure_flow depth_head pipeline.json ;;
round4 | round5)
    tar -C runs/candidate -cf "$bring/weights_a.tar" structure_flow depth_head fov_head pipeline.json ;;
esac
tar -C runs/candidate -cf "$bring/weights_b.tar" shape_flow texture_flow
tar -czf "$bring/logs.tgz" logs runs/*/metrics.jsonl runs/*/config.json
