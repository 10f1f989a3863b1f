#!/usr/bin/env bash
# Issue 27's GPU checks in one go, for a machine with one CUDA GPU: each step has its own time
# limit, 7.5 minutes in all (so it ends within 8 minutes on an H100). Run from anywhere:
#
#     bash benchmarks/gpu_check.sh            # writes gpu-check/ (figures, logs, results.csv files)
#
# 1. bench_gpu.py: tent, eata and cema with a ResNet-18 edge and a ResNet-101 cloud on a generated
#    4,096-image ImageNet-C JPEG tree: float32, then bf16 with channels_last (end-to-end and steady
#    img/s, the model floor, the data path, the share of time waiting for data, GPU memory, the
#    hours for 15 x 50,000 images);
# 2. pytest -m cuda: CUDA against the CPU (tests/test_cuda.py states the tolerances);
# 3. fp16 (loss-scaled) against bf16 against float32: accuracy on the embedded default (source,
#    tent, eata, cema on gaussian_noise and contrast, all 2,500 digits, severity 5).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {  # step SECONDS LOG COMMAND...: run with a time limit, keep the output, remember a failure
    local limit=$1 log=$2
    shift 2
    echo "== $* (limit ${limit} s)" | tee "$OUT/$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "!! exit $rc: $*" | tee -a "$OUT/$log"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
nproc | sed 's/^/cores: /' | tee -a "$OUT/gpu.txt"

step 140 bench_fp32.txt python benchmarks/bench_gpu.py --methods tent,eata,cema --images 4096 --data-rounds 2 --tree "$OUT/tree"
step 70 bench_bf16.txt python benchmarks/bench_gpu.py --methods tent,eata,cema --images 4096 --amp bf16 --channels-last --tree "$OUT/tree"
step 105 pytest_cuda.txt python -m pytest -m cuda -q -rA -p no:cacheprovider tests/test_cuda.py

for amp in none bf16 fp16; do
    flag=(); [ "$amp" = none ] || flag=(--amp "$amp")
    step 45 "embedded_$amp.txt" python -m cema_cli compare --methods source,tent,eata,cema --corruption gaussian_noise,contrast \
        --device cuda "${flag[@]}" --out "$OUT/embedded-$amp" --force
done
python - "$OUT" <<'EOF' | tee "$OUT/embedded_accuracy.txt"
import sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
frames = {amp: pd.read_csv(out / f"embedded-{amp}" / "results.csv") for amp in ("none", "bf16", "fp16") if (out / f"embedded-{amp}" / "results.csv").is_file()}
table = pd.concat({amp: f.set_index(["method", "corruption"])["accuracy"] * 100 for amp, f in frames.items()}, axis=1)
print("accuracy % on the embedded default (2,500 digits per domain, severity 5), by --amp:")
print(table.round(1).to_string())
print("statuses:", {amp: sorted(set(f["status"])) for amp, f in frames.items()})
EOF
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo a step failed, see $OUT/)"
exit $status
