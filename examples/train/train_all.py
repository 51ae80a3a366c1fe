"""Train, export and check every model of examples/train/ (one command, deterministic).

    target/venv/bin/python examples/train/train_all.py              # every model
    target/venv/bin/python examples/train/train_all.py d2nn_chain   # only the named ones

The data (data/val.npz, data/test.npz) is always regenerated, identically.
d2nnc is built first (cargo, release) unless $D2NNC names a binary.
Each trainer (d2nn.py, exits.py) trains its model on
the digits, exports dynamic.onnx and if.onnx, stores the ONNX Runtime
references, checks the files with d2nnc and writes models/<name>/model.json.
A summary table is printed at the end.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import d2nn  # noqa: E402
import exits  # noqa: E402
from data import load_splits, write_data  # noqa: E402
from export import MODELS_DIR  # noqa: E402

SEED = 0


def all_trainers() -> dict:
    return {**d2nn.TRAINERS, **exits.TRAINERS}


def build_d2nnc() -> None:
    """Builds the d2nnc binary the exports are checked with (unless $D2NNC names one)."""
    if "D2NNC" not in os.environ:
        subprocess.run(["cargo", "build", "--release", "-p", "d2nnc", "--quiet"], cwd=HERE.parents[1], check=True)


def make_deterministic() -> None:
    # One thread: the machine is shared, and results must not depend on thread scheduling.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    np.random.seed(SEED)  # nothing should use the global generator; this only guards against it


def pick(results: dict, *keys, default=None):
    """A nested value of a trainer's metadata, or default when it is missing."""
    value = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def percent(value) -> str:
    if isinstance(value, dict):
        value = value.get("overall")
    return f"{100 * value:6.2f}" if isinstance(value, (int, float)) else "     -"


def print_summary(rows: list[tuple[str, dict, float]]) -> None:
    print()
    print(f"{'model':<18} {'acc full %':>10} {'acc dyn %':>10} {'easy %':>7} {'hard %':>7} {'cost %':>7} {'time s':>7}")
    for name, meta, seconds in rows:
        res = meta.get("results", {})
        print(
            f"{name:<18} {percent(res.get('test_accuracy_full')):>10} {percent(res.get('test_accuracy')):>10} "
            f"{percent(pick(res, 'test_accuracy', 'easy')):>7} {percent(pick(res, 'test_accuracy', 'hard')):>7} "
            f"{percent(res.get('mean_cost')):>7} {seconds:7.1f}"
        )


def main(argv: list[str]) -> int:
    started = time.time()
    make_deterministic()
    trainers = all_trainers()
    names = argv or list(trainers)
    unknown = [n for n in names if n not in trainers]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {sorted(trainers)}", file=sys.stderr)
        return 2

    build_d2nnc()
    write_data(HERE / "data", seed=SEED)
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        print(f"training {name} ...", flush=True)
        t0 = time.time()
        meta = trainers[name](load_splits(SEED), MODELS_DIR)
        rows.append((name, meta, time.time() - t0))
    print_summary(rows)
    print(f"\ntotal {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
