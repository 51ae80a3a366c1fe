#!/usr/bin/env python3
"""Dynamic execution against dense execution and ONNX Runtime, in rounds.

On the ResNet-18 early-exit models of `make_dynamic_models.py` (created
first if missing), each round times ONNX Runtime (the `compare_ort.py`
worker: CPU EP, same thread count, all graph optimisations) and then
`d2nnc bench --iters K --json`, which times dynamic and then dense execution
of the same model in one process. The machine this runs on is shared and
noisy, so a figure is the median over rounds of the same-round values, and
each ratio is shown with its range:

  - time ratio / FLOP ratio: d2nnc dynamic time over dense time, divided by
    executed FLOPs over dense FLOPs (issue 4's target: at most 1.05);
  - ORT / d2nnc: ONNX Runtime's time over d2nnc's dynamic time (target at
    batch 64: at least dense FLOPs over executed FLOPs).

Usage:
    target/venv/bin/python tests/bench/dynamic_vs_ort.py [--rounds 5] [--iters 10] [--threads N]
        [--cases where64,where1,if1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_ort import BENCH_MODELS, D2NNC, ensure_d2nnc, last_json, log  # noqa: E402

# case -> (model folder, input, whether dense execution computes every exit:
# an `If` model's dense run takes one branch too, so its time ratio is ~1
# and says nothing).
CASES = {
    "where64": ("resnet18_exit_where", "input_b64.npy", True),
    "where1": ("resnet18_exit_where", "input_b1.npy", True),
    "if1": ("resnet18_exit_if", "input_b1.npy", False),
}


def one_round(model: Path, inputs: Path, iters: int, threads: int | None) -> dict:
    cmd = [str(D2NNC), "bench", str(model), "--input", f"input={inputs}", "--iters", str(iters), "--json"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    d = subprocess.run(cmd, capture_output=True, text=True)
    j = last_json(d.stdout)
    if d.returncode != 0 or j is None:
        raise SystemExit(f"d2nnc bench failed on {model}: {d.stderr.strip()[-500:]}")
    cfg = {"model": str(model), "inputs": {"input": str(inputs)}, "threads": j["threads"], "batch": None, "iters": iters,
           "max_seconds": None}
    o = subprocess.run([sys.executable, str(HERE / "compare_ort.py"), "--ort-worker", json.dumps(cfg)], capture_output=True, text=True)
    oj = last_json(o.stdout)
    if o.returncode != 0 or oj is None:
        raise SystemExit(f"ONNX Runtime failed on {model}: {o.stderr.strip()[-500:]}")
    return {"ort_ms": oj["median_ms"], "d2nnc_ms": j["median_ms"], "dense_ms": j.get("dense_median_ms"),
            "time_ratio": j.get("time_ratio"), "flops_ratio": j.get("flops_ratio"), "threads": j["threads"], "batch": j["batch"]}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed calls per side and round")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    args = ap.parse_args()
    if args.rounds < 1 or args.iters < 1:
        ap.error("--rounds and --iters must be at least 1")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if not all((BENCH_MODELS / folder / "model.onnx").exists() for folder, _, _ in CASES.values()):
        log("creating the ResNet-18 early-exit models (tests/bench/make_dynamic_models.py, about 1.5 minutes)")
        subprocess.run([sys.executable, str(HERE / "make_dynamic_models.py")], check=True)
    ensure_d2nnc(False)
    print("| case | batch | threads | d2nnc dynamic ms | d2nnc dense ms | ONNX Runtime ms | time ratio / FLOP ratio | ORT / d2nnc |")
    print("|---|--:|--:|--:|--:|--:|---|---|")
    for case in cases:
        folder, file, dense_computes_all = CASES[case]
        rounds = []
        for r in range(args.rounds):
            log(f"[{case}] round {r + 1} of {args.rounds}")
            rounds.append(one_round(BENCH_MODELS / folder / "model.onnx", BENCH_MODELS / folder / file, args.iters, args.threads))
        med = lambda key: statistics.median(x[key] for x in rounds)  # noqa: E731
        ort_over = [x["ort_ms"] / x["d2nnc_ms"] for x in rounds]
        over_flops = [x["time_ratio"] / x["flops_ratio"] for x in rounds if x["time_ratio"] and x["flops_ratio"] and dense_computes_all]
        dense = f"{med('dense_ms'):.1f}" if all(x["dense_ms"] for x in rounds) else "-"
        print(f"| {case} | {rounds[0]['batch']} | {rounds[0]['threads']} | {med('d2nnc_ms'):.1f} | {dense} | {med('ort_ms'):.1f} | "
              f"{spread(over_flops) if over_flops else '-'} | {spread(ort_over)} |")
        if rounds[0]["flops_ratio"] and dense_computes_all:
            print(f"|   FLOP ratio {rounds[0]['flops_ratio']:.3f} (ORT computes every exit: ORT / d2nnc ≥ {1 / rounds[0]['flops_ratio']:.2f} "
                  f"is the batch-64 target) | | | | | | | |")
    print(f"\nmedians over {args.rounds} rounds of {args.iters} timed calls per side; ratios: median (min-max) of the same-round values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
