#!/usr/bin/env python3
"""Extract the ONNX backend conformance test data into the standard on-disk layout.

Usage:
    python tests/conformance/extract.py OUT_DIR [--force]

Writes
    OUT_DIR/node/<case>/model.onnx
    OUT_DIR/node/<case>/test_data_set_<i>/input_<j>.pb    (serialized TensorProto)
    OUT_DIR/node/<case>/test_data_set_<i>/output_<j>.pb   (serialized TensorProto)
for every case of ``onnx.backend.test.case.node.collect_testcases()``, i.e. the
same layout as the ONNX repository's ``onnx/backend/test/data/node``.  Cases
whose inputs or outputs are not plain tensors (sequences, optionals, maps,
sparse tensors) cannot be stored as TensorProto: for those the model is still
written, but instead of a data set the folder holds a file ``SKIP`` with a
one-line reason.

The package's shipped ``onnx/backend/test/data/{simple,pytorch-operator,
pytorch-converted}`` folders (already in that layout) are copied to
``OUT_DIR/simple`` etc.

When everything is written, ``OUT_DIR/.complete`` records the onnx version,
the layout version of this script and the case counts.  A later run whose
stamp matches does nothing (use --force to regenerate).

Needs only ``onnx`` and ``numpy`` (see requirements.txt); no torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# Bump when the on-disk layout written by this script changes.
LAYOUT_VERSION = 2
SHIPPED_DIRS = ("simple", "pytorch-operator", "pytorch-converted")


def stamp_header() -> str:
    return f"onnx {onnx.__version__}\nlayout {LAYOUT_VERSION}\n"


def stamp_matches(out_dir: str) -> bool:
    path = os.path.join(out_dir, ".complete")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    if not text.startswith(stamp_header()):
        return False
    # Cheap sanity check: the recorded node case count is what is on disk.
    for line in text.splitlines():
        if line.startswith("node_cases "):
            want = int(line.split()[1])
            node_dir = os.path.join(out_dir, "node")
            if not os.path.isdir(node_dir):
                return False
            have = sum(
                1 for e in os.scandir(node_dir) if e.is_dir(follow_symlinks=False)
            )
            return have == want
    return False


class NotATensor(Exception):
    """Raised when a value cannot be stored as a TensorProto."""


def to_tensor_proto(value, value_info: onnx.ValueInfoProto, role: str) -> TensorProto:
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise NotATensor(f"{role} {value_info.name!r} is of {kind} (not a tensor)")
    if isinstance(value, TensorProto):
        tp = TensorProto()
        tp.CopyFrom(value)
        tp.name = value_info.name
        return tp
    if value is None:
        raise NotATensor(f"{role} {value_info.name!r} has no value (None)")
    if isinstance(value, (list, tuple, dict)):
        raise NotATensor(
            f"{role} {value_info.name!r} holds a {type(value).__name__}, not an array"
        )
    arr = np.asarray(value)
    return numpy_helper.from_array(arr, value_info.name)


def write_case(case, case_dir: str) -> str | None:
    """Write one node case. Returns a skip reason or None."""
    os.makedirs(case_dir, exist_ok=True)
    model = case.model
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())

    graph = model.graph
    # Convert everything first so that a case is either fully written or SKIPped.
    converted: list[tuple[list[bytes], list[bytes]]] = []
    try:
        for i, (inputs, outputs) in enumerate(case.data_sets):
            if len(inputs) != len(graph.input):
                raise NotATensor(
                    f"data set {i} has {len(inputs)} inputs but graph has "
                    f"{len(graph.input)}"
                )
            if len(outputs) != len(graph.output):
                raise NotATensor(
                    f"data set {i} has {len(outputs)} outputs but graph has "
                    f"{len(graph.output)}"
                )
            ins = [
                to_tensor_proto(v, vi, "input").SerializeToString()
                for v, vi in zip(inputs, graph.input)
            ]
            outs = [
                to_tensor_proto(v, vi, "output").SerializeToString()
                for v, vi in zip(outputs, graph.output)
            ]
            converted.append((ins, outs))
    except NotATensor as e:
        reason = f"non-tensor value: {e}"
    except Exception as e:  # conversion failure of an exotic dtype etc.
        reason = f"cannot store as TensorProto: {type(e).__name__}: {e}"
    else:
        reason = None

    if reason is not None:
        reason = " ".join(reason.split())  # keep it on one line
        with open(os.path.join(case_dir, "SKIP"), "w", encoding="utf-8") as f:
            f.write(reason + "\n")
        return reason

    for i, (ins, outs) in enumerate(converted):
        ds_dir = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds_dir, exist_ok=True)
        for j, data in enumerate(ins):
            with open(os.path.join(ds_dir, f"input_{j}.pb"), "wb") as f:
                f.write(data)
        for j, data in enumerate(outs):
            with open(os.path.join(ds_dir, f"output_{j}.pb"), "wb") as f:
                f.write(data)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="output directory (e.g. tests/conformance/cache)")
    ap.add_argument(
        "--force", action="store_true", help="regenerate even if the stamp matches"
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="less output")
    args = ap.parse_args(argv)

    out_dir = os.path.abspath(args.out_dir)
    if not args.force and stamp_matches(out_dir):
        if not args.quiet:
            print(f"{out_dir}: up to date (onnx {onnx.__version__}), nothing to do")
        return 0

    t0 = time.monotonic()
    os.makedirs(out_dir, exist_ok=True)
    stamp = os.path.join(out_dir, ".complete")
    if os.path.exists(stamp):
        os.remove(stamp)
    for sub in ("node",) + SHIPPED_DIRS:
        p = os.path.join(out_dir, sub)
        if os.path.exists(p):
            shutil.rmtree(p)

    # The case generators are noisy (overflow in casts etc.); that is expected.
    # The ImageDecoder cases re-encode their images with Pillow when it is
    # importable (and the bytes then depend on Pillow's codec versions) and use
    # frozen data shipped with onnx otherwise; hide Pillow so that the output
    # is the same on every machine.
    saved_pil = {k: v for k, v in sys.modules.items() if k == "PIL" or k.startswith("PIL.")}
    for k in saved_pil:
        del sys.modules[k]
    sys.modules["PIL"] = None  # makes `import PIL.Image` raise ImportError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx.backend.test.case.node import collect_testcases

            cases = collect_testcases()
    finally:
        del sys.modules["PIL"]
        sys.modules.update(saved_pil)

    node_dir = os.path.join(out_dir, "node")
    os.makedirs(node_dir)
    seen: set[str] = set()
    skipped: list[tuple[str, str]] = []
    for case in cases:
        if case.name in seen:
            raise SystemExit(f"duplicate node test case name {case.name!r}")
        seen.add(case.name)
        reason = write_case(case, os.path.join(node_dir, case.name))
        if reason is not None:
            skipped.append((case.name, reason))

    data_root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    shipped_counts = {}
    for sub in SHIPPED_DIRS:
        src = os.path.join(data_root, sub)
        if not os.path.isdir(src):
            print(f"warning: {src} not found in the onnx package", file=sys.stderr)
            shipped_counts[sub] = 0
            continue
        shutil.copytree(src, os.path.join(out_dir, sub))
        shipped_counts[sub] = sum(
            1 for e in os.scandir(src) if e.is_dir(follow_symlinks=False)
        )

    elapsed = time.monotonic() - t0
    lines = [
        f"node_cases {len(cases)}",
        f"node_with_data {len(cases) - len(skipped)}",
        f"node_skipped {len(skipped)}",
    ] + [f"{sub}_cases {n}" for sub, n in shipped_counts.items()]
    with open(stamp + ".tmp", "w", encoding="utf-8") as f:
        f.write(stamp_header() + "\n".join(lines) + "\n")
    os.replace(stamp + ".tmp", stamp)

    if not args.quiet:
        print(
            f"{out_dir}: wrote {len(cases)} node cases "
            f"({len(cases) - len(skipped)} with data, {len(skipped)} SKIP), "
            + ", ".join(f"{n} {sub}" for sub, n in shipped_counts.items())
            + f" in {elapsed:.1f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
