#!/usr/bin/env python3
"""The Rust back end against the plan executor, in one run: for each model,
`d2nnc compile` writes its crate, `cargo build --release` builds its
`run_npy` example (one shared target directory), and the same input is timed
through `run_npy --iters N` and `d2nnc bench --iters N` alternately for a
few rounds. Prints the median of each and the ratio (plan / generated:
above 1 means the generated crate is faster).

    target/venv/bin/python tests/bench/rust_vs_plan.py [--rounds 3] [--iters 200] [--threads 1] [--models a,b]

Models: the fixtures with an input batch, plus the bench models of
`tests/bench/make_dynamic_models.py` when present (ResNet-18 with exits).
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
D2NNC = ROOT / "target/release/d2nnc"
WORK = ROOT / "target/rust-vs-plan"

MODELS = {
    "mlp_dynamic_batch": ("tests/fixtures/mlp_dynamic_batch/model.onnx", "input", "tests/fixtures/mlp_dynamic_batch/input_0.npy"),
    "early_exit_where": ("tests/fixtures/early_exit_where/model.onnx", "input", "tests/fixtures/early_exit_where/input_0.npy"),
    "skip_chain": ("tests/fixtures/skip_chain/model.onnx", "input", "tests/fixtures/skip_chain/input_0.npy"),
    "resnet_tiny": ("tests/fixtures/resnet_tiny/model.onnx", "input", "tests/fixtures/resnet_tiny/input_0.npy"),
    "mobilenetv2_tiny": ("tests/fixtures/mobilenetv2_tiny/model.onnx", "input", "tests/fixtures/mobilenetv2_tiny/input_0.npy"),
    "resnet18_exit_b1": ("target/bench-models/resnet18_exit_where/model.onnx", "input", "target/bench-models/resnet18_exit_where/input_b1.npy"),
    "resnet18_exit_b64": ("target/bench-models/resnet18_exit_where/model.onnx", "input", "target/bench-models/resnet18_exit_where/input_b64.npy"),
}


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    run(["cargo", "build", "--release", "-p", "d2nnc"], cwd=ROOT)
    rows = []
    for name in args.models.split(","):
        model, input_name, data = MODELS[name]
        if not (ROOT / model).exists():
            print(f"{name}: {model} missing (tests/bench/make_dynamic_models.py makes it); skipped")
            continue
        crate = WORK / name.rsplit("_b", 1)[0]
        if not (crate / "Cargo.toml").exists() or crate.stat().st_mtime < (ROOT / model).stat().st_mtime:
            run([D2NNC, "compile", ROOT / model, "-o", crate])
        run(["cargo", "build", "--release", "--example", "run_npy"], cwd=crate, env={**__import__("os").environ, "CARGO_TARGET_DIR": str(WORK / "target")})
        exe = WORK / "target/release/examples/run_npy"
        gen, plan = [], []
        for _ in range(args.rounds):
            out = run([exe, "--input", f"{input_name}={ROOT / data}", "--output-dir", WORK / "out", "--threads", str(args.threads), "--iters", str(args.iters)])
            gen.append(float(re.search(r"time: median ([0-9.]+) ms", out).group(1)))
            out = run([D2NNC, "bench", ROOT / model, "--backend", "plan", "--input", f"{input_name}={ROOT / data}", "--threads", str(args.threads), "--iters", str(args.iters), "--json"])
            plan.append(json.loads(out.strip().splitlines()[-1])["median_ms"])
        g, p = statistics.median(gen), statistics.median(plan)
        ratios = [b / a for a, b in zip(gen, plan)]
        rows.append((name, g, p, p / g, min(ratios), max(ratios)))
        print(f"{name:20s} generated {g:10.4f} ms   plan {p:10.4f} ms   plan/generated {p / g:5.2f} ({min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    print("\n| model | generated crate | plan executor | plan ÷ generated (range over rounds) |\n|---|---|---|---|")
    for name, g, p, r, lo, hi in rows:
        print(f"| {name} | {g:.4f} ms | {p:.4f} ms | {r:.2f} ({lo:.2f}–{hi:.2f}) |")


if __name__ == "__main__":
    main()
