#!/usr/bin/env bash
# The GPU path run for real, in one call on a lent GPU machine (issue: CUDA tests and the speed bars).
#   bash scripts/gpu_check.sh [--rehearse]
# Writes env.txt, tests.log, bench_*.json and bench.log under $OUT (default ./gpu_out). Installs nothing
# from the network: missing packages come from runs/gpu_wheels (carried; made on a networked machine with
# `pip download` for the device's Python). --rehearse runs the same steps on the CPU (tiny bench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
rehearse=${1:-}
[ -e vaecli/configs ] || ln -s ../configs vaecli/configs   # the package's configs as an installed wheel has them
export PYTHONPATH=$PWD:$PWD/tests
{ nvidia-smi || true; python -V; python -c "import torch; print(torch.__version__, torch.cuda.is_available())"; pip list 2>/dev/null; } > "$OUT/env.txt" 2>&1
py=$(python -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
for m in diffusers typer rich imageio safetensors yaml requests pytest PIL huggingface_hub; do
  python -c "import $m" 2>/dev/null && continue
  pkg=${m/yaml/pyyaml}; pkg=${pkg/PIL/pillow}
  python -m pip install -q --no-index --find-links runs/gpu_wheels/common --find-links "runs/gpu_wheels/py$py" "$pkg" >> "$OUT/env.txt" 2>&1 || echo "could not install $pkg" >> "$OUT/env.txt"
done
if [ "$rehearse" = --rehearse ]; then
  dev=cpu; export VAECLI_CUDA_TESTS_DEVICE=cpu; bench_args=(--sizes 64 --batch-sizes 1 --dtypes fp32 --repeats 1 --warmup 1)
else
  dev=cuda; bench_args=(--sizes 512 --batch-sizes 8 --dtypes bf16 --repeats 10 --warmup 3)
fi
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/tests.log" 2>&1; echo "tests rc=$?" >> "$OUT/tests.log"
timeout 120 python scripts/bench.py --device $dev "${bench_args[@]}" --json "$OUT/bench_eager.json" > "$OUT/bench.log" 2>&1; echo "eager rc=$?" >> "$OUT/bench.log"
timeout 200 python scripts/bench.py --device $dev "${bench_args[@]}" --channels-last --compile --json "$OUT/bench_compile.json" >> "$OUT/bench.log" 2>&1; echo "compile rc=$?" >> "$OUT/bench.log"
python - "$OUT" <<'PY' >> "$OUT/bench.log" 2>&1
import sys, time, torch
if torch.cuda.is_available():  # the card's measured bf16 matmul peak, for achieved TFLOP/s
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter(); n = 20
    for _ in range(n): a @ b
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"bf16 matmul peak: {2 * 8192**3 * n / dt / 1e12:.1f} TFLOP/s")
PY
tail -3 "$OUT/tests.log"; tail -25 "$OUT/bench.log"
