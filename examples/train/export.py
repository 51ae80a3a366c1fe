"""Export, reference and check helpers shared by the trainers in examples/train/.

Each trained model is exported twice:

* `export_dynamic` - the TorchScript exporter (opset 17) with a dynamic batch
  dimension: the per-sample decisions appear as `Mul` by a 0/1 gate or as
  `Where`, the form d2nnc executes batched (each branch on the rows that need
  it);
* `export_if` - the dynamo exporter (opset 18) at batch 1: the forward uses
  `torch.cond`, so the file holds ONNX `If` nodes.

`ort_run` computes the ONNX Runtime reference outputs committed beside the
models, `d2nnc_check` runs the d2nnc binary on the file and compares it with
ONNX Runtime, and `save_model` writes model.json and the shared index.json.

API (shared by d2nn.py and exits.py):
    export_dynamic(model, path)
    export_if(model, path)
    ort_run(path, x, batch1) -> np.ndarray
    d2nnc_check(path, x, expected_knobs=None) -> dict (the d2nnc report + max_abs_diff)
    save_model(name, out_dir, meta, files)
    write_json(obj, path)            # indent 2, scalar lists on one line
    knob_names(path) -> list[str]    # what d2nnc calls the model's knobs

Suggested `results` keys in model.json (train_all.py's summary reads them):
    "test_accuracy": {"overall", "easy", "hard"}          # default knobs
    "test_accuracy_full": {"overall", "easy", "hard"}     # all gates on / no exit
    "mean_cost": float                                    # executed / full multiply-adds, test set
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

from data import IMAGE

# The d2nnc binary that checks each export ($D2NNC, else this workspace's
# release build; train_all.py builds it first).
D2NNC = os.environ.get("D2NNC", str(pathlib.Path(__file__).resolve().parents[2] / "target" / "release" / "d2nnc"))
MODELS_DIR = pathlib.Path(__file__).resolve().parent / "models"

# d2nnc must reproduce ONNX Runtime's logits to |diff| <= ATOL + RTOL * |ref|.
ATOL = 1e-4
RTOL = 1e-4
# Samples checked through d2nnc: one batch for dynamic files, one by one for If files.
CHECK_BATCH = 64
CHECK_SINGLE = 8


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporters' progress chatter and warnings (shown on failure)."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
        except BaseException:
            sys.stdout.write(out.getvalue())
            sys.stderr.write(err.getvalue())
            raise
        finally:
            logging.disable(logging.NOTSET)


def _example_input(batch: int) -> torch.Tensor:
    # A fixed, non-degenerate input; the exported graph does not depend on its values.
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 1, IMAGE, IMAGE, generator=g)


def export_dynamic(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """TorchScript export, opset 17, input `input` [batch,1,16,16] -> `logits` [batch,10]."""
    model = model.eval()
    with quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            model,
            (_example_input(2),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


@contextlib.contextmanager
def scalar_initializers_kept_apart():
    """Keep the dynamo exporter from merging scalar initializers.

    Its optimiser de-duplicates initializers with equal values, so two knobs
    with the same default (say `block2_margin` = `block3_margin` = 0.0) would
    become one initializer, i.e. one knob for two decisions. While exporting,
    the de-duplication skips every one-element initializer (the weights are
    still de-duplicated: the If branches would otherwise carry copies)."""
    from onnx_ir.passes.common import initializer_deduplication as dedup

    original = dedup._should_skip_initializer

    def skip_scalars_too(initializer, size_limit):
        value = initializer.const_value
        return original(initializer, size_limit) or (value is not None and value.size == 1)

    dedup._should_skip_initializer = skip_scalars_too
    try:
        yield
    finally:
        dedup._should_skip_initializer = original


def strip_node_metadata(graph: onnx.GraphProto) -> None:
    """Drop the per-node metadata the dynamo exporter records (module paths,
    rewrite-rule names, class hierarchies): it is most of the file's bytes
    and nothing reads it."""
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                strip_node_metadata(attribute.g)
            for subgraph in attribute.graphs:
                strip_node_metadata(subgraph)


def export_if(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Dynamo export at batch 1, opset 18, the same names; `torch.cond` in the
    forward becomes ONNX `If`. The file is self-contained (no external data).
    Scalar initializers (the knobs) are not de-duplicated (see
    scalar_initializers_kept_apart)."""
    model = model.eval()
    with quiet_exporter(), torch.no_grad(), scalar_initializers_kept_apart():
        program = torch.onnx.export(
            model,
            (_example_input(1),),
            dynamo=True,
            external_data=False,
            opset_version=18,
            input_names=["input"],
            output_names=["logits"],
            verbose=False,
        )
        program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    strip_node_metadata(proto.graph)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)
    if not any(n.op_type == "If" for n in proto.graph.node):
        raise RuntimeError(f"{path}: the dynamo export holds no If node (did the forward use torch.cond?)")


def ort_session(path: str | os.PathLike) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_run(path: str | os.PathLike, x: np.ndarray, batch1: bool) -> np.ndarray:
    """ONNX Runtime `logits` for x (CPU EP, no graph optimisations, 1 thread);
    with batch1 the samples run one at a time and are stacked."""
    session = ort_session(path)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batch1:
        rows = [session.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(len(x))]
        return np.concatenate(rows, axis=0).astype(np.float32)
    return session.run(["logits"], {"input": x})[0].astype(np.float32)


def _has_if(path: str | os.PathLike) -> bool:
    proto = onnx.load(str(path))
    return any(n.op_type == "If" for n in proto.graph.node)


def _d2nnc(*args: str) -> str:
    result = subprocess.run([D2NNC, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"d2nnc rejected the model: `{' '.join([D2NNC, *args])}` exited with "
            f"{result.returncode}:\n{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def parse_inspect(text: str) -> dict:
    """The knobs (name -> value), guarded regions and decisions `d2nnc inspect` lists."""
    knobs = dict(re.findall(r"^  (\S+) = (\S+) \(model value", text, flags=re.M))
    regions = re.findall(r"^\s+R\d+\b[^\n]*?: (if .*?) — ", text, flags=re.M)
    decisions = re.search(r"^controllers \((\d+) decisions?\)", text, flags=re.M)
    return {
        "knobs": {k: float(v) for k, v in knobs.items()},
        "regions": regions,
        "decisions": int(decisions.group(1)) if decisions else 0,
    }


def knob_names(path: str | os.PathLike) -> list[str]:
    """The knob names d2nnc finds in a model (its initializers' names)."""
    return sorted(parse_inspect(_d2nnc("inspect", str(path)))["knobs"])


def d2nnc_check(path: str | os.PathLike, x: np.ndarray, expected_knobs=None) -> dict:
    """Check that d2nnc compiles the file into real branches and reproduces ONNX Runtime.

    `d2nnc inspect` must report at least one guarded region and (if given)
    exactly the `expected_knobs`; then `d2nnc run` on the first 64 samples of
    x as one batch (dynamic files) or on the first 8 one at a time (If files)
    must match ONNX Runtime to 1e-4 + 1e-4 * |ref|. Returns the d2nnc run
    report (for If files the per-sample reports summed: flops_executed,
    flops_dense, flops_ratio, samples) plus `max_abs_diff`, `knobs`,
    `regions` (the guards) and `decisions`. Raises RuntimeError with d2nnc's
    message when it rejects the model or disagrees."""
    path = pathlib.Path(path)
    info = parse_inspect(_d2nnc("inspect", str(path)))
    if not info["regions"]:
        raise RuntimeError(f"d2nnc found no guarded region in {path}: every node would run for every sample")
    if expected_knobs is not None and sorted(info["knobs"]) != sorted(expected_knobs):
        raise RuntimeError(f"{path}: d2nnc knobs {sorted(info['knobs'])} != expected {sorted(expected_knobs)}")
    if_file = _has_if(path)
    x = np.ascontiguousarray(x[: CHECK_SINGLE if if_file else CHECK_BATCH], dtype=np.float32)
    batches = [x[i : i + 1] for i in range(len(x))] if if_file else [x]
    reference = ort_run(path, x, batch1=if_file)
    got, reports = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, batch in enumerate(batches):
            in_path = os.path.join(tmp, f"input_{k}.npy")
            np.save(in_path, batch)
            report_path = os.path.join(tmp, f"report_{k}.json")
            _d2nnc("run", str(path), "--input", f"input={in_path}", "-o", tmp, "--report", report_path, "--threads", "1")
            got.append(np.load(os.path.join(tmp, "logits.npy")))
            with open(report_path, encoding="utf-8") as f:
                reports.append(json.load(f))
    got = np.concatenate(got, axis=0)
    if got.shape != reference.shape:
        raise RuntimeError(f"{path}: d2nnc logits {got.shape} != ONNX Runtime {reference.shape}")
    diff = np.abs(got.astype(np.float64) - reference)
    bad = diff > ATOL + RTOL * np.abs(reference)
    if bad.any():
        rows = sorted(set(np.nonzero(bad)[0].tolist()))
        raise RuntimeError(f"{path}: d2nnc differs from ONNX Runtime on samples {rows} (max |diff| {diff.max():.3g})")
    if if_file:
        report = {
            "mode": reports[0].get("mode"),
            "samples": len(reports),
            "flops_executed": int(sum(r["flops_executed"] for r in reports)),
            "flops_dense": int(sum(r["flops_dense"] for r in reports)),
        }
        report["flops_ratio"] = report["flops_executed"] / report["flops_dense"]
    else:
        report = dict(reports[0])
        report["samples"] = len(x)
    report.update(max_abs_diff=float(diff.max()), knobs=info["knobs"], regions=info["regions"], decisions=info["decisions"])
    return report


def write_json(obj, path: str | os.PathLike) -> None:
    """json with indent 2, lists of scalars kept on one line (readable diffs)."""
    text = json.dumps(obj, indent=2)
    scalar = r"(?:-?[0-9.eE+-]+|\"[^\"\n]*\"|null|true|false)"
    text = re.sub(
        rf"\[\s*((?:{scalar}\s*,\s*)*{scalar})\s*\]",
        lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]",
        text,
    )
    pathlib.Path(path).write_text(text + "\n", encoding="utf-8")


def save_model(name: str, out_dir: str | os.PathLike, meta: dict, files: dict) -> pathlib.Path:
    """Write out_dir/<name>/model.json (meta with `name` and `files` set) and
    add name to out_dir/index.json.

    Trainers may run at the same time, so the index is updated under an
    exclusive lock on the models directory: re-read, merge, write sorted,
    atomically replaced."""
    out_dir = pathlib.Path(out_dir)
    model_dir = out_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, **{k: v for k, v in meta.items() if k not in ("name", "files")}, "files": files}
    write_json(meta, model_dir / "model.json")

    lock_fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        index_path = out_dir / "index.json"
        names = set(json.loads(index_path.read_text(encoding="utf-8"))) if index_path.exists() else set()
        names.add(name)
        tmp_path = out_dir / f".index.json.{os.getpid()}"
        write_json(sorted(names), tmp_path)
        os.replace(tmp_path, index_path)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    return model_dir / "model.json"
