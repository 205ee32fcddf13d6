#!/usr/bin/env bash
# Every stage's training on the GPUs of one host (issue 21), in phases that each fit a 10-minute GPU call.
# Run from the repository root:
#   scripts/train_multi.sh data SECONDS       # procedural shards into $DATA: one engine per GPU (--rank g of GPUS)
#   scripts/train_multi.sh train MINUTES      # the $RUNS side by side, each one torchrun over all GPUS (resumable)
#   scripts/train_multi.sh pack OUT           # the runs assembled (float16) -> OUT/model.tar.* (<= 15 MiB parts)
#                                             # + OUT/metrics.tar (every run's metrics.jsonl and log)
#   scripts/train_multi.sh unpack DIR         # DIR/model.tar.* -> $START: the next session's runs start there
#   scripts/train_multi.sh scaling OUT        # bench/train_bench.py at 1, 2, 4, ... GPUS -> OUT/scaling_<n>.json
#                                             # and the efficiency table OUT/scaling.md
# Knobs (environment):
#   GPUS     ranks per run (default: every visible GPU; on a machine without one, 2 gloo ranks on the CPU)
#   RUNS     the configs (default: the six of the fidelity round, scripts/train_tiny.sh fidelity)
#   DATA     shard folder of every run (default data/tiny_mix, what those configs read)
#   BATCH    per-GPU batch: "config" (default) keeps each config's per-GPU batch at GPUS = 1, so the global batch
#            grows GPUS-fold; "global" keeps the config's global batch (the per-GPU batch shrinks)
#   LR_RULE  with BATCH=config: "sqrt" (default) scales lr by sqrt(GPUS), "linear" by GPUS, "none" keeps it
#   START    a pipeline folder the runs start from when they have no checkpoint yet (default out/multi_start if it
#            exists: what `unpack` restored from an earlier session), instead of each config's init_weights
#   WORKERS  data-engine processes per GPU (default: host cores / GPUS - 1)
#   SIZE, RESOLUTION, COARSE, ASSETS, SEED_OFFSET  the data phase's image size, fine and coarse grids (default the
#            tiny configs' 256, 128, 32), how many procedural objects at most (default 1000000: until SECONDS end) and
#            the first seed (default 2155, after the seeds of data/tiny)
#   ASSEMBLE pack's `pixal3d assemble` arguments (default: the fidelity round's runs, train_tiny.sh fidelity-assemble)
#   DEVICE   "cuda" or "cpu" (default: cuda when nvidia-smi lists a GPU): the engine device and the DDP backend
# The derived configs are written to runs/multi_configs/ (same out_dir as the source config, so single- and
# multi-GPU chunks of one run resume each other when the global batch is the same).
set -uo pipefail
phase=${1:?phase: data | train | pack | unpack | scaling}
arg=${2:?seconds (data), minutes (train) or a folder (pack, unpack, scaling)}
export PYTHONUNBUFFERED=1
if [ -z "${DEVICE:-}" ]; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
fi
if [ "$DEVICE" = cuda ]; then
    GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
else
    GPUS=${GPUS:-2}
fi
cores=$(nproc)
WORKERS=${WORKERS:-$(( cores / GPUS > 1 ? cores / GPUS - 1 : 1 ))}
DATA=${DATA:-data/tiny_mix}
RUNS=${RUNS:-"configs/shape_vae_tiny_corners_ft.json configs/shape_vae_tiny_decoder_ft.json
    configs/texture_vae_tiny_decoder_ft.json configs/structure_flow_tiny_depthlift.json
    configs/shape_flow_tiny_depthlift.json configs/texture_flow_tiny_depthlift.json"}
START=${START:-out/multi_start}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p runs/multi_configs logs

derive() {  # derive CONFIG -> path of the config for GPUS ranks (batch, lr, data root, start weights, device)
    python - "$1" "$GPUS" "${BATCH:-config}" "${LR_RULE:-sqrt}" "$DATA" "$START" "$DEVICE" <<'EOF'
import json, math, sys
from pathlib import Path
path, gpus, batch_rule, lr_rule, data, start, device = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
config = json.loads(Path(path).read_text())
if batch_rule == "config":
    scale = {"sqrt": math.sqrt(gpus), "linear": gpus, "none": 1.0}[lr_rule]
    config["batch_size"] *= gpus
    config["lr"] *= scale
    config["min_lr"] = config.get("min_lr", config["lr"] / scale / 10) * scale
elif batch_rule != "global":
    sys.exit(f"BATCH must be 'config' or 'global', got {batch_rule!r}")
if config["batch_size"] % gpus:
    sys.exit(f"{path}: batch_size {config['batch_size']} does not divide over {gpus} GPUs; use BATCH=config")
if config["data"].get("kind") == "shards":
    config["data"]["root"] = data
if Path(start, "pipeline.json").is_file():
    config["init_weights"] = start
config["device"] = "auto" if device == "cuda" else "cpu"
config["progress"] = False
out = Path("runs/multi_configs", Path(path).name)
out.write_text(json.dumps(config, indent=2) + "\n")
print(out)
EOF
}

case $phase in
data)
    pids=()
    for ((g = 0; g < GPUS; g++)); do
        visible=()
        [ "$DEVICE" = cuda ] && visible=(CUDA_VISIBLE_DEVICES="$g")
        env "${visible[@]}" setsid python -m pixal3d data generate \
            --procedural "${ASSETS:-1000000}" --seed-offset "${SEED_OFFSET:-2155}" -o "$DATA" --rank "$g" \
            --world-size "$GPUS" --views 4 --size "${SIZE:-256}" --resolution "${RESOLUTION:-128}" --coarse "${COARSE:-32}" \
            --workers "$WORKERS" \
            --device "$DEVICE" >"logs/data_rank$g.log" 2>&1 &
        pids+=($!)
    done
    sleep "$arg"
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    wait
    python -c "import json, pathlib, sys; print(sum(len(u.get('samples', [])) for p in pathlib.Path(sys.argv[1]).glob('index*.json') for u in json.loads(p.read_text())['units'].values()), 'samples in', sys.argv[1])" "$DATA"
    ;;
train)
    pids=() names=()
    for config in $RUNS; do
        derived=$(derive "$config") || exit 2
        name=$(basename "$config" .json)
        torchrun --standalone --nproc_per_node="$GPUS" -m pixal3d train "$derived" --resume --max-minutes "$arg" \
            >"logs/$name.log" 2>&1 &
        pids+=($!) names+=("$name")
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    for name in "${names[@]}"; do echo "$name: $(grep -h '^trained' "logs/$name.log" | tail -n 1)"; done
    [ $status = 0 ] || echo "a run failed: see logs/<name>.log" >&2
    exit $status
    ;;
pack)
    mkdir -p "$arg"
    if [ -n "${ASSEMBLE:-}" ]; then  # e.g. ASSEMBLE="runs" (assemble's run discovery) or explicit --<part> RUN flags
        python -m pixal3d assemble $ASSEMBLE -o out/multi >logs/assemble.log 2>&1
    else
        scripts/train_tiny.sh fidelity-assemble out/multi >logs/assemble.log 2>&1
    fi || { tail logs/assemble.log; exit 1; }
    tar cf - out/multi | split -b 15M - "$arg/model.tar."
    tar cf "$arg/metrics.tar" runs/*/metrics.jsonl logs/*.log
    ls -la "$arg"
    ;;
unpack)
    rm -rf out/multi && cat "$arg"/model.tar.* | tar xf - && rm -rf "$START" && mv out/multi "$START"
    echo "runs without a checkpoint start from $START"
    ;;
scaling)
    mkdir -p "$arg"
    n=1
    while [ "$n" -le "$GPUS" ]; do
        torchrun --standalone --nproc_per_node="$n" bench/train_bench.py --device "$DEVICE" --steps "${STEPS:-10}" \
            ${BENCH_FLAGS:-} --json "$arg/scaling_$n.json" >"$arg/scaling_$n.log" 2>&1 || tail -n 5 "$arg/scaling_$n.log"
        n=$((n * 2))
    done
    python - "$arg" <<'EOF'
import json, sys
from pathlib import Path
runs = {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("scaling_*.json")}
if 1 not in runs:
    sys.exit("no 1-GPU result to compare with")
counts = sorted(runs)
lines = ["| model | " + " | ".join(f"{n} GPU samples/s (eff.)" for n in counts) + " |", "|---" * (len(counts) + 1) + "|"]
for i, row in enumerate(runs[1]["models"]):
    base = row["samples_per_s"]
    cells = []
    for n in counts:
        rate = runs[n]["models"][i]["samples_per_s"]
        cells.append(f"{rate:,.1f} ({100 * rate / (n * base):.0f} %)")
    lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
table = "\n".join(lines)
print(f"{runs[1]['device']}, torch {runs[1]['torch']}, per-GPU batch fixed (weak scaling)\n\n{table}")
Path(sys.argv[1], "scaling.md").write_text(table + "\n")
EOF
    ;;
*)
    echo "unknown phase $phase (data | train | pack | unpack | scaling)" >&2
    exit 2
    ;;
esac
