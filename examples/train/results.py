"""Reproduces the README's results: every trained model calibrated, evaluated
and timed with d2nnc, next to ONNX Runtime on the same ONNX files in the same
run.

    target/venv/bin/python examples/train/results.py [--threads 2] [--rounds 3] [MODEL ...]

For each model in examples/train/models/index.json:
  1. `d2nnc calibrate dynamic.onnx --data data/val.npz` (cheapest setting within
     one point of the full network's validation accuracy) writes
     models/<name>/knobs.toml and docs/results/<name>.svg;
  2. on data/test.npz, `d2nnc run --report` at the calibrated knobs, at the
     full network's knobs (every gate open) and densely gives accuracy and
     executed FLOPs;
  3. `d2nnc bench --cycle` times dynamic and dense execution in one run at
     batch 1 (every test sample in turn) and at batch 64 (windows of the test
     set), and ONNX Runtime runs dynamic.onnx (batch 1 and 64) and if.onnx
     (batch 1, its If executes one branch) on the same windows, alternating
     with d2nnc for --rounds rounds; medians of the per-round means. Batch 1
     runs on one thread in both engines, batch 64 on --threads.
Writes docs/results.md and docs/results/results.json. Builds d2nnc first.
"""

import argparse
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ort.set_default_logger_severity(3)
ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "train"
DOCS = ROOT / "docs"
D2NNC = ROOT / "target" / "release" / "d2nnc"


def sh(args: list, **kw) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def knob_args(knobs: dict) -> list:
    return [a for name, v in knobs.items() for a in ("--knob", f"{name}={v}")]


def evaluate(model: pathlib.Path, x_file: pathlib.Path, y: np.ndarray, tmp: pathlib.Path, extra: list) -> dict:
    """Accuracy and executed FLOPs of one d2nnc run over the whole test set."""
    out = tmp / "out"
    report = tmp / "report.json"
    sh([D2NNC, "run", model, "--input", f"input={x_file}", "-o", out, "--report", report, *extra])
    logits = np.load(out / "logits.npy")
    r = json.loads(report.read_text())
    return {
        "accuracy": float((logits.argmax(1) == y).mean()),
        "flops_per_sample": r["flops_executed"] / len(y),
        "flops_dense_per_sample": r["flops_dense"] / len(y),
    }


def d2nnc_bench(model: pathlib.Path, x_file: pathlib.Path, batch: int, threads: int, knobs: dict, seconds: float) -> dict:
    out = sh([D2NNC, "bench", model, "--input", f"input={x_file}", "--batch", batch, "--cycle", "--threads", threads,
              "--max-seconds", seconds, "--json", *knob_args(knobs)])
    return json.loads(out.strip().splitlines()[-1])


def ort_session(path: pathlib.Path, threads: int, knobs: dict | None = None) -> ort.InferenceSession:
    """ONNX Runtime on the file (all graph optimisations, `threads` intra-op
    threads); `knobs` overwrite the initializers of the same names first, so
    an If model branches as d2nnc does."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if knobs and init.name in knobs:
            init.CopyFrom(numpy_helper.from_array(np.array(knobs[init.name], dtype=np.float32), init.name))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_mean_ms(session: ort.InferenceSession, x: np.ndarray, batch: int, seconds: float) -> float:
    """Mean latency of calls over windows of `batch` test samples, cycling
    (the last window wraps around), as `d2nnc bench --cycle` does."""
    n = len(x)
    windows = [x[np.arange(w * batch, w * batch + batch) % n] for w in range((n + batch - 1) // batch)]
    for w in windows[:3]:
        session.run(None, {"input": w})
    times = []
    spent = 0.0
    while spent < seconds or len(times) < len(windows):
        for w in windows:
            t = time.perf_counter()
            session.run(None, {"input": w})
            times.append(time.perf_counter() - t)
        spent += sum(times[-len(windows):])
        if len(times) >= 20 * len(windows):
            break
    return 1e3 * statistics.fmean(times)


def calibrate(name: str, model: pathlib.Path, knobs_file: pathlib.Path, threads: int) -> str:
    DOCS.joinpath("results").mkdir(parents=True, exist_ok=True)
    return sh([D2NNC, "calibrate", model, "--data", TRAIN / "data" / "val.npz", "--max-accuracy-drop", "0.01",
               "--threads", threads, "--plot", DOCS / "results" / f"{name}.svg", "-o", knobs_file])


def run_model(name: str, args, x: np.ndarray, y: np.ndarray, x_file: pathlib.Path, tmp: pathlib.Path) -> dict:
    folder = TRAIN / "models" / name
    meta = json.loads((folder / "model.json").read_text())
    dynamic, if_model = folder / "dynamic.onnx", folder / "if.onnx"
    knobs_file = folder / "knobs.toml"
    print(f"== {name}: calibrating on the validation set", flush=True)
    calibrate(name, dynamic, knobs_file, args.threads)
    chosen = tomllib.loads(knobs_file.read_text())
    knobs, full_knobs = chosen["knobs"], chosen["calibration"]["full_network_knobs"]
    defaults = meta["knobs"]
    print(f"   evaluating on the test set", flush=True)
    at = {
        "calibrated": evaluate(dynamic, x_file, y, tmp, ["--knobs-file", knobs_file]),
        "model_default": evaluate(dynamic, x_file, y, tmp, []),
        "full_network": evaluate(dynamic, x_file, y, tmp, knob_args(full_knobs)),
        "dense": evaluate(dynamic, x_file, y, tmp, ["--dense", *knob_args(knobs)]),
    }
    print(f"   timing d2nnc and ONNX Runtime ({args.rounds} rounds)", flush=True)
    # Batch 1 runs on one thread in both engines: these calls take ~0.1 ms,
    # too little to split between threads profitably.
    sessions = {
        "dynamic_b1": ort_session(dynamic, 1),
        "dynamic_b64": ort_session(dynamic, args.threads),
        "if": ort_session(if_model, 1, knobs),
    }
    rounds = []
    for _ in range(args.rounds):
        r = {}
        for batch in (1, 64):
            threads = 1 if batch == 1 else args.threads
            b = d2nnc_bench(dynamic, x_file, batch, threads, knobs, args.seconds)
            r[f"d2nnc_dynamic_b{batch}"] = b["mean_ms"]
            r[f"d2nnc_dense_b{batch}"] = b["dense_mean_ms"]
            r[f"flop_ratio_b{batch}"] = b["flops_ratio"]
            r[f"ort_b{batch}"] = ort_mean_ms(sessions[f"dynamic_b{batch}"], x, batch, args.seconds)
        r["d2nnc_if_b1"] = d2nnc_bench(if_model, x_file, 1, 1, knobs, args.seconds)["mean_ms"]
        r["ort_if_b1"] = ort_mean_ms(sessions["if"], x, 1, args.seconds)
        rounds.append(r)
    timing = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    timing["rounds"] = rounds
    return {"name": name, "paper": meta.get("paper", ""), "knobs": knobs, "full_network_knobs": full_knobs,
            "model_knobs": defaults, "test": at, "timing": timing,
            "val": {k: chosen["calibration"][k] for k in ("accuracy", "flops_fraction", "full_network_accuracy")}}


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def write_markdown(results: list, args) -> None:
    lines = [
        "# Results: the trained networks under d2nnc",
        "",
        "Generated by `target/venv/bin/python examples/train/results.py` "
        f"({args.rounds} rounds; ONNX Runtime {ort.__version__}). "
        "Models, data and training: [examples/train](../examples/train/README.md). "
        "Every figure is measured by d2nnc on the committed ONNX files and data.",
        "",
        "## Accuracy and executed FLOPs (test set, 360 digits, half of them hard)",
        "",
        "Knobs calibrated on the validation set by `d2nnc calibrate --max-accuracy-drop 0.01` "
        "(the cheapest setting within one point of the full network's validation accuracy). "
        "FLOPs are per sample, as a share of the dense graph (every node: all exits and branches); "
        "*full network* is the most expensive knob setting (every gate open, no early exit); "
        "*saving* is the full network's FLOPs over the calibrated ones.",
        "",
        "| model | full network: accuracy | FLOPs | calibrated: accuracy | FLOPs | saving | model's own knobs: accuracy | FLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["test"]
        full, cal, own = t["full_network"], t["calibrated"], t["model_default"]
        dense = cal["flops_dense_per_sample"]
        lines.append(
            f"| {r['name']} | {pct(full['accuracy'])} | {pct(full['flops_per_sample'] / dense)} | "
            f"{pct(cal['accuracy'])} | {pct(cal['flops_per_sample'] / dense)} | "
            f"{full['flops_per_sample'] / cal['flops_per_sample']:.2f}× | "
            f"{pct(own['accuracy'])} | {pct(own['flops_per_sample'] / dense)} |"
        )
    lines += [
        "",
        "## Summary (the README's table)",
        "",
        "| model | full network acc. | calibrated acc. | FLOPs (% of dense) | FLOPs saving | b1 dynamic / dense | b1 ORT (`If`) | b64 dynamic / dense | b64 ORT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, m = r["test"], r["timing"]
        full, cal = t["full_network"], t["calibrated"]
        lines.append(
            f"| {r['name']} | {pct(full['accuracy'])} | {pct(cal['accuracy'])} | "
            f"{pct(cal['flops_per_sample'] / cal['flops_dense_per_sample'])} | {full['flops_per_sample'] / cal['flops_per_sample']:.2f}× | "
            f"{1e3 * m['d2nnc_dynamic_b1']:.0f} / {1e3 * m['d2nnc_dense_b1']:.0f} µs | {1e3 * m['ort_b1']:.0f} µs ({1e3 * m['ort_if_b1']:.0f} µs) | "
            f"{m['d2nnc_dynamic_b64']:.2f} / {m['d2nnc_dense_b64']:.2f} ms | {m['ort_b64']:.2f} ms |"
        )
    lines += [
        "",
        "## Latency: d2nnc dynamic against dense, and ONNX Runtime",
        "",
        "Mean time per call over the whole test set (`d2nnc bench --cycle`: batch 1 takes every sample "
        f"in turn on one thread, batch 64 takes windows of 64 on {args.threads} threads; both engines alike), "
        "calibrated knobs; *dense* is d2nnc computing every node "
        "in the same run; *ORT* is ONNX Runtime on the same `dynamic.onnx` (it computes every branch) and, "
        "at batch 1, on `if.onnx` with the same knob values (its `If` runs one branch). Medians over rounds.",
        "",
        "| model | b1 dynamic | b1 dense | time ÷ FLOP ratio | b1 ORT | b1 d2nnc If | b1 ORT If | b64 dynamic | b64 dense | time ÷ FLOP ratio | b64 ORT | ORT ÷ d2nnc b64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["timing"]
        ratio1 = m["d2nnc_dynamic_b1"] / m["d2nnc_dense_b1"] / m["flop_ratio_b1"]
        ratio64 = m["d2nnc_dynamic_b64"] / m["d2nnc_dense_b64"] / m["flop_ratio_b64"]
        lines.append(
            f"| {r['name']} | {1e3 * m['d2nnc_dynamic_b1']:.0f} µs | {1e3 * m['d2nnc_dense_b1']:.0f} µs | {ratio1:.2f} | "
            f"{1e3 * m['ort_b1']:.0f} µs | {1e3 * m['d2nnc_if_b1']:.0f} µs | {1e3 * m['ort_if_b1']:.0f} µs | "
            f"{m['d2nnc_dynamic_b64']:.2f} ms | {m['d2nnc_dense_b64']:.2f} ms | {ratio64:.2f} | {m['ort_b64']:.2f} ms | "
            f"{m['ort_b64'] / m['d2nnc_dynamic_b64']:.2f}× |"
        )
    lines += ["", "## Accuracy–cost curves (validation set)", ""]
    for r in results:
        lines += [f"### {r['name']}", "", f"![{r['name']}](results/{r['name']}.svg)", ""]
        knobs = ", ".join(f"`{k}` = {v}" for k, v in r["knobs"].items())
        lines += [f"Calibrated knobs: {knobs}.", ""]
    (DOCS / "results.md").write_text("\n".join(lines))
    (DOCS / "results" / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="model names (default: all in models/index.json)")
    p.add_argument("--threads", type=int, default=2, help="threads at batch 64 (batch 1 runs on one)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per timed phase")
    args = p.parse_args()
    sh(["cargo", "build", "--release", "-p", "d2nnc", "--quiet"], cwd=ROOT)
    names = args.models or json.loads((TRAIN / "models" / "index.json").read_text())
    test = np.load(TRAIN / "data" / "test.npz")
    x, y = test["x"], test["y"]
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        x_file = tmp / "test_x.npy"
        np.save(x_file, x)
        results = [run_model(name, args, x, y, x_file, tmp) for name in names]
    write_markdown(results, args)
    print((DOCS / "results.md").read_text())


if __name__ == "__main__":
    main()
