#!/usr/bin/env python3
"""Every d2nnc back end next to ONNX Runtime, in one run: for each model and
input, the Cranelift JIT (`d2nnc bench --backend jit`), the plan executor
(`--backend plan`), the Rust back end (the crate `d2nnc compile` writes,
its `run_npy --iters`) and ONNX Runtime (in this process) are timed on the
same input, alternately, for a few rounds. Prints the median latency of each
and the ratios JIT ÷ Rust crate (target: within 5%), JIT ÷ plan, and ONNX
Runtime ÷ JIT (above 1: d2nnc is faster). Also prints the JIT's code
generation time and what `cargo build --release` of the Rust crate took.

    target/venv/bin/python tests/bench/backends.py [--rounds 3] [--iters 50] [--threads 2] [--models a,b] [--no-rust]

Models: small fixtures, and the bench models of
`tests/bench/make_dynamic_models.py` when present (ResNet-18 with exits at
batch 1 and 64, ResNet-50, MobileNetV2).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
D2NNC = ROOT / "target/release/d2nnc"
WORK = ROOT / "target/bench-backends"

MODELS = {
    "mlp_dynamic_batch": ("tests/fixtures/mlp_dynamic_batch/model.onnx", "input", "tests/fixtures/mlp_dynamic_batch/input_0.npy"),
    "early_exit_where": ("tests/fixtures/early_exit_where/model.onnx", "input", "tests/fixtures/early_exit_where/input_0.npy"),
    "skip_chain": ("tests/fixtures/skip_chain/model.onnx", "input", "tests/fixtures/skip_chain/input_0.npy"),
    "resnet_tiny": ("tests/fixtures/resnet_tiny/model.onnx", "input", "tests/fixtures/resnet_tiny/input_0.npy"),
    "resnet18_exit_b1": ("target/bench-models/resnet18_exit_where/model.onnx", "input", "target/bench-models/resnet18_exit_where/input_b1.npy"),
    "resnet18_exit_b64": ("target/bench-models/resnet18_exit_where/model.onnx", "input", "target/bench-models/resnet18_exit_where/input_b64.npy"),
    "resnet50": ("target/bench-models/resnet50/model.onnx", "input", "target/bench-models/resnet50/input_0.npy"),
    "mobilenetv2": ("target/bench-models/mobilenetv2/model.onnx", "input", "target/bench-models/mobilenetv2/input_0.npy"),
}


def run(cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{out.stderr}")
    return out


def d2nnc_bench(backend, model, input_name, data, args):
    out = run([D2NNC, "bench", ROOT / model, "--backend", backend, "--input", f"{input_name}={ROOT / data}", "--threads", args.threads, "--iters", args.iters, "--json"])
    codegen = re.search(r"jit: Cranelift code generation ([0-9.]+) ms", out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"], (float(codegen.group(1)) if codegen else None)


def ort_session(model, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(ROOT / model), options, providers=["CPUExecutionProvider"])


def ort_median(session, input_name, data, iters):
    import numpy as np

    x = np.load(ROOT / data)
    for _ in range(3):
        session.run(None, {input_name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, {input_name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-rust", action="store_true", help="skip the Rust back end (no cargo builds)")
    args = ap.parse_args()
    run(["cargo", "build", "--release", "-p", "d2nnc"], cwd=ROOT)
    rows = []
    for name in args.models.split(","):
        model, input_name, data = MODELS[name]
        if not (ROOT / model).exists():
            print(f"{name}: {model} missing (tests/bench/make_dynamic_models.py makes it); skipped")
            continue
        exe, build_s = None, None
        if not args.no_rust:
            crate = WORK / name.rsplit("_b", 1)[0]
            run([D2NNC, "compile", ROOT / model, "-o", crate])
            env = {**os.environ, "CARGO_TARGET_DIR": str(WORK / "target")}
            # The runtime is built once; this times the model crate's own build.
            run(["cargo", "build", "--release", "--example", "run_npy"], cwd=crate, env=env)
            run(["touch", crate / "src/lib.rs"])
            t = time.perf_counter()
            run(["cargo", "build", "--release", "--example", "run_npy"], cwd=crate, env=env)
            build_s = time.perf_counter() - t
            exe = WORK / "target/release/examples/run_npy"
        session = ort_session(model, args.threads)
        jit, plan, rust, ort, codegen = [], [], [], [], []
        for _ in range(args.rounds):
            m, c = d2nnc_bench("jit", model, input_name, data, args)
            jit.append(m)
            codegen.append(c)
            plan.append(d2nnc_bench("plan", model, input_name, data, args)[0])
            if exe:
                out = run([exe, "--input", f"{input_name}={ROOT / data}", "--output-dir", WORK / "out", "--threads", args.threads, "--iters", args.iters])
                rust.append(float(re.search(r"time: median ([0-9.]+) ms", out.stdout).group(1)))
            ort.append(ort_median(session, input_name, data, args.iters))
        med = {k: statistics.median(v) if v else None for k, v in [("jit", jit), ("plan", plan), ("rust", rust), ("ort", ort)]}
        row = dict(name=name, **med, codegen_ms=statistics.median([c for c in codegen if c is not None]), build_s=build_s)
        rows.append(row)
        rust_txt = f"rust {med['rust']:9.3f} ms  jit/rust {med['jit'] / med['rust']:.3f}  " if med["rust"] else ""
        print(f"{name:18s} jit {med['jit']:9.3f} ms  plan {med['plan']:9.3f} ms  {rust_txt}ort {med['ort']:9.3f} ms  ort/jit {med['ort'] / med['jit']:.2f}  jit codegen {row['codegen_ms']:.1f} ms" + (f"  cargo build {build_s:.1f} s" if build_s else ""), flush=True)
    print(f"\n{args.threads} thread(s), medians of {args.rounds} rounds of {args.iters} calls\n")
    print("| model | JIT | plan | Rust crate | ONNX Runtime | JIT ÷ Rust | JIT ÷ plan | ORT ÷ JIT | JIT codegen | crate `cargo build --release` |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rust = f"{r['rust']:.3f} ms" if r["rust"] else "–"
        jr = f"{r['jit'] / r['rust']:.3f}" if r["rust"] else "–"
        build = f"{r['build_s']:.1f} s" if r["build_s"] else "–"
        print(f"| {r['name']} | {r['jit']:.3f} ms | {r['plan']:.3f} ms | {rust} | {r['ort']:.3f} ms | {jr} | {r['jit'] / r['plan']:.3f} | {r['ort'] / r['jit']:.2f} | {r['codegen_ms']:.0f} ms | {build} |")


if __name__ == "__main__":
    main()
