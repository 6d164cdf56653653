#!/bin/bash
# Fill .gpu/ (git-ignored) with what issue 11's GPU checks need on the lent GPU machine, whose
# Python (3.12) has torch, numpy, scipy, typer, rich, PyYAML, safetensors, pillow and matplotlib but
# not pydantic or cryptography, and which reaches no registry: those wheels, and Fashion-MNIST's
# four gz files (31 MB; the whole .gpu/ must stay under the device's 64 MiB with the repo).
#   bash benchmarks/gpu/kit.sh       # here, once
# then run benchmarks/gpu/checks.sh there with carry [".gpu"] (its header says how).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data/fashion-mnist
# the versions this checkout's own environment runs (pydantic-core must match pydantic exactly)
pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null \
  | grep -i -E '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|cryptography|cffi|pycparser)==')
plat=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do plat+=(--platform "$p"); done
# shellcheck disable=SC2086
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .gpu/wheels $pins
src=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
cp "$src"/*-ubyte.gz .gpu/data/fashion-mnist/ || {
  echo "no Fashion-MNIST under $src: apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)" >&2
  exit 2
}
ls .gpu/wheels
du -sh .gpu
