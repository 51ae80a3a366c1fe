#!/usr/bin/env bash
# Runs every test of the repository on a fresh machine.
#
# 1. A Python venv (target/ci-venv) with the pinned `onnx` package, which holds
#    the ONNX backend conformance cases; they are written once to
#    target/onnx-conformance (a stamp file skips the work next time).
# 2. `cargo test --workspace`: unit tests, golden tests, fixtures, bad-input
#    tests, the conformance run against tests/conformance/expected.txt (every
#    case also through the Cranelift JIT), and the C example linked with the
#    system C compiler (compiler/tests/c_api.rs).
# 3. The example applications of the Rust back end (generated crate, dynamic_net!).
# 4. The runtime's unsafe code under Miri (tests/miri.sh), where Miri exists.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ci-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import onnx, numpy, sys; sys.exit(onnx.__version__ != "1.23.2")' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
fi
"$venv/bin/python" tests/conformance/extract.py target/onnx-conformance

cargo test --workspace --locked
# The example applications: one links a crate `d2nnc compile` generated, one uses dynamic_net!.
cargo run --release --locked -p compiled-app
cargo run --release --locked -p macro-app
bash tests/miri.sh
