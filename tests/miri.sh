#!/usr/bin/env bash
# Runs the runtime's tests that exercise `unsafe` code under Miri, when a
# nightly toolchain with Miri is installed (it is not on every machine; the
# script says so and succeeds without it). Filters name the test modules.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "miri: nightly toolchain with Miri not installed; skipping the Miri run"
  exit 0
fi
# Isolation off: the pool's tests read the CPU topology from /sys.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
# The thread pool, the arena, the GEMM core (and its vector helpers), the
# depthwise kernel (SIMD over padded strips), the conv and Winograd kernels
# (disjoint output views shared by threads), the scratch buffers and the
# native ABI (hooks, model loader, C API, with a hand-written run function). `--skip kernels::pool::`
# keeps the safe pooling kernel (whose module is also named pool) out.
cargo +nightly miri test -p d2nn-runtime --lib -- pool:: arena:: gemm:: kernels::conv:: kernels::winograd:: kernels::depthwise:: kernels::scratch:: abi:: --skip kernels::pool::
