#!/usr/bin/env python3
"""Latency and peak memory of `d2nnc bench` next to ONNX Runtime, model by model.

For every model: `d2nnc bench --json` (the release binary, built if missing
or older than the sources) runs first and decides the thread count, batch and
number of timed calls; then ONNX Runtime (CPU EP, intra_op_num_threads = the
same thread count, all graph optimisations) runs in a subprocess on the same
model and inputs with the same warm-up rule and the same number of timed
calls. Each side runs in its own process under GNU `time -v`, which gives
its peak RSS. The table goes to stdout when all models are done; progress
goes to stderr.

Models: every fixture in tests/fixtures/index.json with its stored inputs,
plus torchvision ResNet-50 and MobileNetV2 (random weights, 1x3x224x224,
symbolic batch), exported by torch.onnx into target/bench-models/ on first
use. torch is only needed to create those two; without it they are skipped.

Usage (from anywhere):
    target/venv/bin/python tests/bench/compare_ort.py [--models a,b] [--threads N]
        [--batch N] [--backend plan|interp] [--iters K] [--max-seconds S] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
D2NNC = TARGET / "release" / ("d2nnc.exe" if os.name == "nt" else "d2nnc")
BENCH_MODELS = TARGET / "bench-models"
TORCHVISION = {"resnet50": "resnet50", "mobilenetv2": "mobilenet_v2"}

# The warm-up rule of `d2nnc bench` (see `d2nnc bench --help`): up to 3 calls,
# stopping early once 0.5 s is spent.
WARMUP_MAX_CALLS = 3
WARMUP_SECONDS = 0.5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measuring


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    timed_out: bool


def gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (it has -v and reports the peak RSS)."""
    try:
        r = subprocess.run(["/usr/bin/time", "-v", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "/usr/bin/time" if r.returncode == 0 and "Maximum resident set size" in r.stderr else None


GNU_TIME = gnu_time()


def run_measured(cmd: list[str], timeout: float) -> Measured:
    """Runs `cmd` to completion and measures its peak RSS.

    With GNU time, `cmd` is forked by the small `time` process, so the figure
    is the command's own. Without it, ru_maxrss from wait4(2) is used, but on
    Linux a child started from this Python inherits this process's high-water
    mark at exec, so the figure is only an upper bound (the table says so)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".time") as report:
        if GNU_TIME:
            cmd = [GNU_TIME, "-v", "-o", report.name, *cmd]
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in KiB on Linux, in bytes on macOS; GNU time prints KiB.
        rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        if GNU_TIME:
            found = [ln for ln in report.read().splitlines() if "Maximum resident set size (kbytes):" in ln]
            rss = int(found[0].rsplit(":", 1)[1]) / 1024 if found else float("nan")
        return Measured(proc.returncode, out.read().decode(errors="replace"),
                        err.read().decode(errors="replace"), rss, timed_out)


def last_json(text: str) -> dict | None:
    lines = text.strip().splitlines()
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return None


def stats_ms(samples: list[float]) -> dict:
    """min / median / p90 as `d2nnc bench` computes them (median of an even
    count = mean of the middle pair; p90 = nearest rank)."""
    ms = sorted(s * 1e3 for s in samples)
    n = len(ms)
    median = ms[n // 2] if n % 2 else (ms[n // 2 - 1] + ms[n // 2]) / 2
    p90 = ms[max(1, -(-9 * n // 10)) - 1]
    return {"min_ms": ms[0], "median_ms": median, "p90_ms": p90, "iters": n}


# ------------------------------------------------------------ ORT worker


def tile_axis0(a, n: int):
    """`d2nnc bench --batch` tiling: sample i is given sample i mod G."""
    import numpy as np

    if a.shape[0] == 0:
        raise SystemExit("cannot tile an input that is empty along axis 0")
    return np.take(a, np.arange(n) % a.shape[0], axis=0)


def ort_worker(cfg: dict) -> None:
    """Runs in its own process (so its peak RSS is ONNX Runtime's): loads the
    model, applies the batch rule, warms up, times `iters` calls."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg["threads"]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(cfg["model"], so, providers=["CPUExecutionProvider"])
    feeds = {name: np.load(path) for name, path in cfg["inputs"].items()}
    batch = cfg.get("batch")
    if batch is not None:
        declared = {i.name: i.shape for i in sess.get_inputs()}
        symbolic = [n for n in feeds if declared.get(n) and not isinstance(declared[n][0], int)]
        for name in symbolic:
            if feeds[name].shape[0] != batch:
                feeds[name] = tile_axis0(feeds[name], batch)
        if not symbolic:
            first = next((n for n in feeds if feeds[n].ndim > 0), None)
            if first is not None and feeds[first].shape[0] != batch:
                raise SystemExit(f"--batch {batch}: input `{first}` has a fixed batch dimension")

    def call():
        sess.run(None, feeds)

    spent = 0.0
    for _ in range(WARMUP_MAX_CALLS):
        t0 = time.perf_counter()
        call()
        spent += time.perf_counter() - t0
        if spent >= WARMUP_SECONDS:
            break
    budget = cfg.get("max_seconds")
    samples: list[float] = []
    spent = 0.0
    for _ in range(cfg["iters"]):
        t0 = time.perf_counter()
        call()
        dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
        if budget is not None and spent >= budget:
            break
    print(json.dumps({**stats_ms(samples), "ort_version": ort.__version__}))


# ---------------------------------------------------------------- models


@dataclass
class Model:
    name: str
    path: Path
    inputs: dict[str, Path]  # graph input name -> .npy


def fixture_models() -> list[str]:
    return json.loads((FIXTURES / "index.json").read_text())


def fixture_model(name: str) -> Model:
    folder = FIXTURES / name
    manifest = json.loads((folder / "fixture.json").read_text())
    inputs = {i["name"]: folder / i["file"] for i in manifest["inputs"]}
    return Model(name, folder / "model.onnx", inputs)


def torchvision_model(name: str) -> Model | str:
    """The cached export, creating it on first use; a message if that needs
    torch and torch is missing."""
    folder = BENCH_MODELS / name
    model, x = folder / "model.onnx", folder / "input_0.npy"
    if model.exists() and x.exists():
        return Model(name, model, {"input": x})
    try:
        import numpy as np
        import torch
        import torchvision
    except ImportError as e:
        return f"skipped: creating {model.relative_to(ROOT)} needs torch and torchvision ({e})"
    log(f"[{name}] exporting torchvision {TORCHVISION[name]} (random weights) to {model.relative_to(ROOT)}")
    import warnings

    torch.manual_seed(0)
    net = getattr(torchvision.models, TORCHVISION[name])(weights=None).eval()
    sample = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.onnx.tmp"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (sample,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    np.save(x, sample.numpy())
    tmp.replace(model)  # last, so an interrupted export is redone
    return Model(name, model, {"input": x})


# ---------------------------------------------------------------- d2nnc


def ensure_d2nnc(rebuild: bool) -> None:
    sources = [p for d in ("compiler", "runtime") for p in (ROOT / d).rglob("*") if p.suffix in (".rs", ".toml")]
    sources += [ROOT / "Cargo.toml", ROOT / "Cargo.lock"]
    stale = D2NNC.exists() and max(p.stat().st_mtime for p in sources if p.exists()) > D2NNC.stat().st_mtime
    if rebuild or stale or not D2NNC.exists():
        why = "--rebuild" if rebuild else "older than the sources" if stale else "missing"
        log(f"building {D2NNC.relative_to(ROOT) if D2NNC.is_relative_to(ROOT) else D2NNC} ({why}): cargo build --release -p d2nnc")
        subprocess.run(["cargo", "build", "--release", "-p", "d2nnc"], cwd=ROOT, check=True)


# ---------------------------------------------------------------- driver


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def bench_one(m: Model, args) -> dict:
    row = {"model": m.name, "batch": None, "threads": None, "iters": None, "ort_ms": None, "d2nnc_ms": None,
           "ratio": None, "ort_rss_mb": None, "d2nnc_rss_mb": None, "note": ""}
    cmd = [str(D2NNC), "bench", str(m.path), "--json", "--backend", args.backend, "--max-seconds", str(args.max_seconds)]
    for name, path in m.inputs.items():
        cmd += ["--input", f"{name}={path}"]
    for flag, value in (("--threads", args.threads), ("--batch", args.batch), ("--iters", args.iters)):
        if value is not None:
            cmd += [flag, str(value)]
    log(f"[{m.name}] d2nnc bench ({args.backend})")
    d = run_measured(cmd, timeout=args.timeout)
    j = last_json(d.stdout)
    if d.timed_out or d.returncode != 0 or j is None:
        reason = "timed out" if d.timed_out else (d.stderr.strip().splitlines() or ["no JSON line"])[-1]
        row["note"] = f"d2nnc: {reason}"
        return row
    row.update(batch=j["batch"], threads=j["threads"], iters=j["iters"], d2nnc_ms=j["median_ms"],
               d2nnc_rss_mb=d.peak_rss_mb, d2nnc=j)
    if j.get("threads_used") != j["threads"]:
        row["note"] = f"d2nnc used {j.get('threads_used')} thread(s)"

    cfg = {"model": str(m.path), "inputs": {k: str(v) for k, v in m.inputs.items()}, "threads": j["threads"],
           "batch": args.batch, "iters": j["iters"], "max_seconds": args.max_seconds}
    log(f"[{m.name}] onnxruntime, {j['threads']} thread(s), {j['iters']} timed calls")
    o = run_measured([sys.executable, __file__, "--ort-worker", json.dumps(cfg)], timeout=args.timeout)
    oj = last_json(o.stdout)
    if o.timed_out or o.returncode != 0 or oj is None:
        reason = "timed out" if o.timed_out else (o.stderr.strip().splitlines() or ["no JSON line"])[-1]
        row["note"] = "; ".join(filter(None, [row["note"], f"ORT: {reason}"]))
        return row
    row.update(ort_ms=oj["median_ms"], ort_rss_mb=o.peak_rss_mb, ort=oj)
    if oj["iters"] != j["iters"]:
        row["note"] = "; ".join(filter(None, [row["note"], f"ORT stopped at {oj['iters']} calls (--max-seconds)"]))
    row["ratio"] = row["d2nnc_ms"] / row["ort_ms"] if row["ort_ms"] > 0 else None
    return row


def print_table(rows: list[dict]) -> None:
    head = ["model", "batch", "threads", "iters", "ORT median ms", "d2nnc median ms", "d2nnc/ORT",
            "ORT peak RSS MB", "d2nnc peak RSS MB", "note"]
    body = [[r["model"], fmt(r["batch"], "d"), fmt(r["threads"], "d"), fmt(r["iters"], "d"),
             fmt(r["ort_ms"], ".3f"), fmt(r["d2nnc_ms"], ".3f"), fmt(r["ratio"], ".1f"),
             fmt(r["ort_rss_mb"], ".1f"), fmt(r["d2nnc_rss_mb"], ".1f"), r["note"]] for r in rows]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i in (0, 9) else "--:" for i in range(len(head))) + "|")
    for line in body:
        print("| " + " | ".join(line) + " |")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--ort-worker":
        ort_worker(json.loads(sys.argv[2]))
        return 0
    every = fixture_models() + list(TORCHVISION)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help=f"comma-separated subset of: {','.join(every)}")
    ap.add_argument("--threads", type=int, help="threads for both (default: d2nnc's, the physical cores)")
    ap.add_argument("--batch", type=int, help="tile inputs with a symbolic batch to N (d2nnc bench --batch rules)")
    ap.add_argument("--backend", default="plan", help="d2nnc backend (default: plan)")
    ap.add_argument("--iters", type=int, help="timed calls (default: d2nnc's, ~3 s worth, at least 5)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="stop each side's timed calls once this many seconds are spent (default: 30)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="kill a side that takes longer than this in all, load and warm-up included (default: 1800 s)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild target/release/d2nnc first")
    ap.add_argument("--json-out", type=Path, help="also write every result as JSON to this file")
    args = ap.parse_args()
    for flag in ("threads", "batch", "iters"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1")
    if args.max_seconds <= 0:
        ap.error("--max-seconds must be positive")
    names = every if args.models is None else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in every]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(every)}")
    try:
        import onnxruntime  # noqa: F401  (the worker needs it; fail before any work)
    except ImportError:
        ap.error("onnxruntime is not installed in this Python (try target/venv/bin/python)")

    ensure_d2nnc(args.rebuild)
    rows = []
    for name in names:
        m = torchvision_model(name) if name in TORCHVISION else fixture_model(name)
        if isinstance(m, str):
            log(f"[{name}] {m}")
            rows.append({"model": name, "batch": None, "threads": None, "iters": None, "ort_ms": None,
                         "d2nnc_ms": None, "ratio": None, "ort_rss_mb": None, "d2nnc_rss_mb": None, "note": m})
            continue
        rows.append(bench_one(m, args))

    # Peak RSS of a worker that only imports numpy and onnxruntime: the part
    # of the ORT column that is the Python interpreter, not the model.
    base = run_measured([sys.executable, "-c", "import numpy, onnxruntime"], timeout=120)
    print_table(rows)
    print(f"\nmedians of per-call latency; ORT peak RSS includes the Python process "
          f"(importing numpy + onnxruntime alone peaks at {base.peak_rss_mb:.1f} MB).")
    if not GNU_TIME:
        print("GNU time (/usr/bin/time -v) was not found (apt-get install -y time): peak RSS figures are "
              "wait4(2) maxima, which on Linux include this script's own RSS and are upper bounds only.")
    if args.json_out:
        args.json_out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
