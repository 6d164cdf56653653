#!/bin/bash
# Issue 11's GPU figures in one device call (about 9 minutes of its 10):
#   device run, carry [".gpu"], timeout_s 590:  bash benchmarks/gpu/checks.sh
# after `bash benchmarks/gpu/kit.sh` here. Writes to $OUT: throughput.txt (the engine against a plain
# DataLoader loop, batch 64 and 512), batched.txt (16 digit-cnns at once with torch.func against one
# at a time), zhong.txt (how far the full zhong2020 grid got in GRID_SECONDS on --device cuda, and
# the time the whole grid would take at that rate) and zhong-records.tgz (its records: carry them
# back into a records folder to resume).
set -u
OUT=${OUT:-/tmp/nnmark-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 NNMARK_DATA=$PWD/.gpu/data
nvidia-smi -L
python3 -c "import torch, nnmark.cli; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
{
  timeout 80 python3 benchmarks/train_throughput.py --device cuda --epochs 2
  timeout 80 python3 benchmarks/train_throughput.py --device cuda --epochs 2 --batch-size 512
} 2>&1 | tee "$OUT/throughput.txt"
timeout 100 python3 benchmarks/batched_training.py --device cuda --models 16 --data fashion-mnist \
  2>&1 | tee "$OUT/batched.txt"
grid=/tmp/zhong-full
mkdir -p "$grid/records"
[ -f .gpu/zhong-records.tgz ] && tar xzf .gpu/zhong-records.tgz -C "$grid"
start=$(date +%s)
timeout "${GRID_SECONDS:-240}" python3 -m nnmark.cli reproduce zhong2020 --scale full --device cuda \
  --workers "${GRID_WORKERS:-16}" --out "$grid" > "$OUT/zhong-log.txt" 2>&1
took=$(( $(date +%s) - start ))
tar czf "$OUT/zhong-records.tgz" -C "$grid" records
python3 benchmarks/gpu/grid_rate.py zhong2020 "$grid/records" "$took" --since "$start" 2>&1 | tee "$OUT/zhong.txt"
