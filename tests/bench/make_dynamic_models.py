#!/usr/bin/env python3
"""Export the ResNet-18-sized early-exit models of the issue-4 benchmark.

Writes two models with the same weights into target/bench-models/ (under
$CARGO_TARGET_DIR when it is set, like compare_ort.py):

- resnet18_exit_where/: a torchvision ResNet-18 (BasicBlocks, 3x224x224
  input, 10 classes) with early-exit heads (global average pool + Linear)
  after layer1, layer2 and layer3 and the final head after layer4. Each exit
  takes a sample whose max softmax probability clears the initializer
  `threshold` (0.5); the per-sample decisions are [N, 1] and the output is
  where(exit1, logits1, where(exit2, logits2, where(exit3, logits3, logits4))).
  Dynamic batch; exported by the TorchScript exporter, opset 17 (like the
  early_exit_where fixture). Files: model.onnx, input_b1.npy, input_b64.npy,
  output_b1.npy, output_b64.npy, meta.json.
- resnet18_exit_if/: the same network at batch 1 written with torch.cond,
  exported by the dynamo exporter at opset 18 (like the early_exit_cond
  fixture) into nested ONNX If nodes, so a sample that exits early skips the
  later stages. Files: model.onnx, input_b1.npy, output_b1.npy, meta.json (a
  batch-1 model has no batch-64 case).

The weights are random and seeded, but the model is made to behave like a
trained early-exit network on the stored inputs, so that the exit mix is
controlled and documented:

1. Data: 10 classes, each a smooth random colour pattern (its prototype);
   a sample is `easiness * prototype + white noise`, with the easiness
   spread evenly over [0.1, 2.0]. BatchNorm statistics are calibrated on
   samples of that distribution (train-mode passes), so activations stay
   near unit scale.
2. Heads: every head (the three exits and the final one) is a linear
   classifier of its stage's pooled features f: the logit of class c is the
   projection of (f - mu_0) / s on the unit direction of (m_c - mu_0) / s,
   where mu_0 is the mean over pure-noise inputs, m_c the class mean and s
   the within-class standard deviation (fitted on separate samples). A
   sample without class signal scores about 0 everywhere (not confident);
   a strongly class-aligned one scores high for its class.
3. Temperatures: each exit head's weights are scaled by one factor, so that
   on input_b64 about 26 of the 64 samples (40%) exit at exit 1, 16 (25%) at
   exit 2 and 10 (15%) at exit 3, leaving 12 (20%) for full depth. Each
   factor sits where the last sample to leave and the first to stay are
   equally far from the threshold; when that margin would be under 0.01 in
   probability, the count may move by one sample to widen it. The seeded
   result is 27 / 15 / 11 / 11 (42% / 23% / 17% / 17%), every decision at
   least 0.009 from the threshold, and the easier samples leave earlier
   (mean easiness 1.38, 1.25, 0.73, 0.29 per exit). input_b1 is the sample
   of input_b64 that exits at exit 2 with the widest margin (0.13).

meta.json gives every sample's exit (1, 2, 3, or 4 for full depth) as ONNX
Runtime decides it (from an auxiliary export that outputs the exit
confidences, checked against torch and against the model's own output), the
per-exit cumulative FLOPs (convolution and Linear multiply-adds times 2, the
heads passed on the way included), and the FLOP fraction the mix implies.
The reference outputs are ONNX Runtime's (CPU EP, graph optimisations
disabled).

Usage (from anywhere; seeded, and idempotent: existing outputs are kept):
    target/venv/bin/python tests/bench/make_dynamic_models.py [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BENCH_MODELS = TARGET / "bench-models"
WHERE_DIR = BENCH_MODELS / "resnet18_exit_where"
IF_DIR = BENCH_MODELS / "resnet18_exit_if"

SEED = 4
RESOLUTION = 224
NUM_CLASSES = 10
THRESHOLD = 0.5
BATCH = 64
# Samples of the batch of 64 that exit at exits 1, 2, 3 and at full depth:
# 40% / 25% / 15% / 20%.
TARGET_EXIT_COUNTS = (26, 16, 10, 12)
EXIT_OF_B1 = 2
EASINESS_RANGE = (0.1, 2.0)
CALIBRATION_SAMPLES = 32  # BatchNorm statistics
HEAD_FIT_SAMPLES_PER_CLASS = 4  # class means and variances of the heads
NOISE_FIT_SAMPLES = 8  # the heads' origin: features of inputs without class signal
# Tolerance of ORT against torch on the logits (deep float32 network).
ATOL, RTOL = 1e-3, 1e-3
# A decision closer than this to the threshold would be fragile across
# backends; the script refuses to write such a model.
MIN_MARGIN = 1e-3
# An exit keeps its target count when the decisions next to the threshold
# are at least this far from it (in probability); otherwise the count within
# one sample of the target with the widest margin is taken.
GOOD_MARGIN = 1e-2

EXPECTED_FILES = {
    WHERE_DIR: ["model.onnx", "input_b1.npy", "input_b64.npy", "output_b1.npy", "output_b64.npy", "meta.json"],
    IF_DIR: ["model.onnx", "input_b1.npy", "output_b1.npy", "meta.json"],
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
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


# ---------------------------------------------------------------- the network


class ExitHead(nn.Module):
    """Global average pool + Linear, as torchvision's final classifier."""

    def __init__(self, fc: nn.Linear):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet18Exits(nn.Module):
    """torchvision's ResNet-18 cut into its stem and four stages, with an exit
    head after each of the first three stages and its own head after the last."""

    def __init__(self):
        super().__init__()
        tv = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
        self.stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
        self.stages = nn.ModuleList([tv.layer1, tv.layer2, tv.layer3, tv.layer4])
        self.heads = nn.ModuleList(
            [ExitHead(nn.Linear(c, NUM_CLASSES)) for c in (64, 128, 256)] + [ExitHead(tv.fc)]
        )

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            outs.append(h)
        return outs

    def all_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [head(h) for head, h in zip(self.heads, self.stage_outputs(x))]


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per sample, [N, 1]."""
    return torch.softmax(logits, dim=1).amax(dim=1, keepdim=True)


class ExitWhere(nn.Module):
    """d-gates form: every stage runs for every sample; per-sample [N, 1]
    decisions pick the first confident exit through nested Where."""

    def __init__(self, net: ResNet18Exits):
        super().__init__()
        self.net = net
        self.register_buffer("threshold", torch.tensor(THRESHOLD))

    def forward(self, x):
        l1, l2, l3, l4 = self.net.all_logits(x)
        exit1 = confidence(l1) > self.threshold
        exit2 = confidence(l2) > self.threshold
        exit3 = confidence(l3) > self.threshold
        return torch.where(exit1, l1, torch.where(exit2, l2, torch.where(exit3, l3, l4)))


class ExitIf(nn.Module):
    """Batch-1 form with torch.cond: each exit returns at once when confident,
    otherwise the next stage runs inside the else branch (nested If)."""

    def __init__(self, net: ResNet18Exits):
        super().__init__()
        self.net = net
        self.register_buffer("threshold", torch.tensor(THRESHOLD))

    def confident(self, logits):
        return torch.softmax(logits, dim=1).max() > self.threshold

    def forward(self, x):
        h1 = self.net.stages[0](self.net.stem(x))
        l1 = self.net.heads[0](h1)

        def exit_now(logits, h):
            return logits.clone()

        def after_exit3(l3, h3):
            return self.net.heads[3](self.net.stages[3](h3))

        def after_exit2(l2, h2):
            h3 = self.net.stages[2](h2)
            l3 = self.net.heads[2](h3)
            return torch.cond(self.confident(l3), exit_now, after_exit3, (l3, h3))

        def after_exit1(l1, h1):
            h2 = self.net.stages[1](h1)
            l2 = self.net.heads[1](h2)
            return torch.cond(self.confident(l2), exit_now, after_exit2, (l2, h2))

        return torch.cond(self.confident(l1), exit_now, after_exit1, (l1, h1))


class ExitProbe(nn.Module):
    """Auxiliary export: the four heads' logits and the three exit
    confidences, so the decisions can be read from ONNX Runtime itself."""

    def __init__(self, net: ResNet18Exits):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net.all_logits(x)
        confidences = torch.cat([confidence(l) for l in logits[:3]], dim=1)
        return (confidences, *logits)


# ---------------------------------------------------------------- data and weights


def class_prototypes(rng: np.random.Generator) -> torch.Tensor:
    """One smooth random colour pattern per class (coarse blobs plus finer
    texture), unit standard deviation, [classes, 3, R, R]."""
    coarse = torch.from_numpy(rng.standard_normal((NUM_CLASSES, 3, 7, 7)).astype(np.float32))
    fine = torch.from_numpy(rng.standard_normal((NUM_CLASSES, 3, 28, 28)).astype(np.float32))
    size = (RESOLUTION, RESOLUTION)
    protos = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    protos = protos + 0.5 * F.interpolate(fine, size=size, mode="bilinear", align_corners=False)
    return protos / protos.std(dim=(1, 2, 3), keepdim=True)


def draw_samples(rng: np.random.Generator, protos: torch.Tensor, classes: np.ndarray, easiness: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((len(classes), 3, RESOLUTION, RESOLUTION)).astype(np.float32)
    signal = protos[torch.from_numpy(classes)].numpy() * easiness.astype(np.float32)[:, None, None, None]
    return (signal + noise).astype(np.float32)


def calibrate_batchnorm(net: ResNet18Exits, x: np.ndarray) -> None:
    """Running statistics = the exact mean/variance over x (momentum None
    gives a cumulative average), in 8-sample passes."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for chunk in np.array_split(x, max(1, len(x) // 8)):
            net.stage_outputs(torch.from_numpy(chunk))
    net.eval()


def pooled_features(net: ResNet18Exits, x: np.ndarray) -> list[torch.Tensor]:
    """The four heads' inputs (pooled stage outputs) for x, in 8-sample passes."""
    per_chunk = []
    with torch.no_grad():
        for chunk in np.array_split(x, max(1, len(x) // 8)):
            outs = net.stage_outputs(torch.from_numpy(chunk))
            per_chunk.append([head.features(h) for head, h in zip(net.heads, outs)])
    return [torch.cat([c[k] for c in per_chunk]) for k in range(4)]


def fit_heads(net: ResNet18Exits, feats: list[torch.Tensor], classes: np.ndarray,
              noise_feats: list[torch.Tensor]) -> None:
    """Each head scores class c by how far the sample's standardised pooled
    features have moved from those of pure noise (mean mu_0) along the
    direction of the class mean m_c: logit_c = u_c . (f - mu_0) / s, with
    u_c the unit vector along (m_c - mu_0) / s and s the within-class
    standard deviation. A sample without class signal scores about 0 for
    every class (low confidence); a strongly aligned one scores high for its
    class."""
    labels = torch.from_numpy(classes)
    with torch.no_grad():
        for head, f, f0 in zip(net.heads, feats, noise_feats):
            means = torch.stack([f[labels == c].mean(dim=0) for c in range(NUM_CLASSES)])
            mu0 = f0.mean(dim=0)
            std = ((f - means[labels]).var(dim=0) + 1e-3 * f.var(dim=0).mean()).sqrt()
            directions = (means - mu0) / std
            directions = directions / directions.norm(dim=1, keepdim=True)
            head.fc.weight.copy_(directions / std)
            head.fc.bias.copy_(-(directions / std) @ mu0)


def max_probability(logits: torch.Tensor, factor: float) -> float:
    return torch.softmax(logits.double() * factor, dim=0).max().item()


def bisect_log(increasing: Callable[[float], float], lo: float, hi: float) -> float:
    """The t in [lo, hi] where an increasing function of t crosses 0, by
    bisection on log t."""
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if increasing(mid) > 0:
            hi = mid
        else:
            lo = mid
    return (lo * hi) ** 0.5


def crossing_factor(logits: torch.Tensor) -> float:
    """The factor t at which max softmax(t * logits) reaches THRESHOLD (it
    grows with t); inf if it never does."""
    lo, hi = 1e-9, 1e9
    if max_probability(logits, hi) <= THRESHOLD:
        return float("inf")
    return bisect_log(lambda t: max_probability(logits, t) - THRESHOLD, lo, hi)


def calibrate_exit_temperatures(net: ResNet18Exits, x: np.ndarray) -> list[float]:
    """Scales each exit head by one factor so that the samples still running
    split as TARGET_EXIT_COUNTS asks; the final head gets exit 3's factor.

    Ordering the running samples by the factor at which they become
    confident, a count n puts the factor between the n-th and the (n+1)-th;
    there it is set so that both are equally far from the threshold (the
    decision margin). The target count is kept when that margin is at least
    GOOD_MARGIN, otherwise the count within one of it with the widest margin
    is taken. Returns the factors."""
    logits = [torch.cat(c) for c in zip(*(net.all_logits(torch.from_numpy(chunk))
                                          for chunk in np.array_split(x, len(x) // 8)))]
    running = np.arange(len(x))
    cumulative_target = np.cumsum(TARGET_EXIT_COUNTS[:3])
    factors = []
    for k in range(3):
        crossings = np.array([crossing_factor(logits[k][i]) for i in running])
        order = np.argsort(crossings, kind="stable")
        target = int(cumulative_target[k]) - (len(x) - len(running))

        def split(n: int) -> tuple[float, float]:
            """(margin, factor) of letting the n most confident samples exit."""
            if not 0 < n < len(running) or not np.isfinite(crossings[order[n]]):
                return -1.0, float("nan")
            leaving, staying = logits[k][running[order[n - 1]]], logits[k][running[order[n]]]
            factor = bisect_log(lambda t: max_probability(leaving, t) + max_probability(staying, t) - 1.0,
                                crossings[order[n - 1]], crossings[order[n]])
            return max_probability(leaving, factor) - THRESHOLD, factor

        options = {n: split(n) for n in (target, target - 1, target + 1)}
        n = target if options[target][0] >= GOOD_MARGIN else max(options, key=lambda m: options[m][0])
        margin, factor = options[n]
        if margin <= 0:
            raise RuntimeError(f"exit {k + 1}: cannot separate about {target} samples from the rest")
        factors.append(float(factor))
        running = np.sort(running[order[n:]])
    factors.append(factors[-1])
    with torch.no_grad():
        for head, t in zip(net.heads, factors):
            head.fc.weight.mul_(t)
            head.fc.bias.mul_(t)
    return factors


# ---------------------------------------------------------------- FLOPs


def cumulative_exit_flops(net: ResNet18Exits) -> list[int]:
    """FLOPs (2 x multiply-adds of every Conv2d and Linear) of one sample
    leaving at exit k = 1..4: the stem, stages 1..k and heads 1..k (the
    earlier heads ran to take their decisions)."""
    macs: dict[nn.Module, int] = {}

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
            macs[module] = output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            macs[module] = module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.all_logits(torch.zeros(1, 3, RESOLUTION, RESOLUTION))
    for h in hooks:
        h.remove()

    def flops_of(module: nn.Module) -> int:
        return 2 * sum(macs.get(m, 0) for m in module.modules())

    total, out = flops_of(net.stem), []
    for stage, head in zip(net.stages, net.heads):
        total += flops_of(stage) + flops_of(head)
        out.append(total)
    return out


# ---------------------------------------------------------------- export and ORT


def export_where(module: nn.Module, path: Path, output_names: list[str]) -> None:
    dyn = {"input": {0: "batch"}, **{n: {0: "batch"} for n in output_names}}
    with quiet(), torch.no_grad():
        torch.onnx.export(module, (torch.zeros(2, 3, RESOLUTION, RESOLUTION),), str(path),
                          input_names=["input"], output_names=output_names, dynamic_axes=dyn,
                          opset_version=17, dynamo=False)


def export_if(module: nn.Module, path: Path, sample: np.ndarray) -> None:
    with quiet(), torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(sample),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=18, dynamo=True,
                          external_data=False, verbose=False)


def ort_session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(sess: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    return sess.run(None, {"input": x})


def check_close(what: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape or not np.allclose(got, want, atol=ATOL, rtol=RTOL):
        diff = np.abs(got - want).max() if got.shape == want.shape else f"shape {got.shape} vs {want.shape}"
        raise RuntimeError(f"{what}: ONNX Runtime differs from the reference: max abs diff {diff}")


def exits_from_confidences(conf: np.ndarray) -> np.ndarray:
    """First exit (1..3) whose confidence clears the threshold, else 4."""
    clears = conf > THRESHOLD
    return np.where(clears.any(axis=1), clears.argmax(axis=1) + 1, 4)


def decision_margins(conf: np.ndarray, exits: np.ndarray) -> np.ndarray:
    """Per sample, the smallest |confidence - threshold| over the decisions
    it actually meets (exits 1..min(exit, 3))."""
    return np.array([np.abs(conf[i, : min(e, 3)] - THRESHOLD).min() for i, e in enumerate(exits)])


# ---------------------------------------------------------------- driver


def mix_summary(exits: np.ndarray, exit_flops: list[int]) -> dict:
    counts = [int((exits == k).sum()) for k in (1, 2, 3, 4)]
    executed = float(np.mean([exit_flops[e - 1] for e in exits]))
    return {
        "exits": [int(e) for e in exits],
        "exit_counts": counts,
        "flops_executed_mean": executed,
        "flops_fraction": executed / exit_flops[-1],
    }


def build(tmp: Path) -> None:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net = ResNet18Exits().eval()
    protos = class_prototypes(rng)

    log("calibrating BatchNorm statistics and fitting the heads ...")
    calib_classes = rng.integers(0, NUM_CLASSES, CALIBRATION_SAMPLES)
    calib_easiness = rng.uniform(*EASINESS_RANGE, CALIBRATION_SAMPLES)
    calibrate_batchnorm(net, draw_samples(rng, protos, calib_classes, calib_easiness))
    fit_classes = np.repeat(np.arange(NUM_CLASSES), HEAD_FIT_SAMPLES_PER_CLASS)
    fit_x = draw_samples(rng, protos, fit_classes, np.ones(len(fit_classes)))
    noise_x = draw_samples(rng, protos, np.zeros(NOISE_FIT_SAMPLES, dtype=np.int64), np.zeros(NOISE_FIT_SAMPLES))
    fit_heads(net, pooled_features(net, fit_x), fit_classes, pooled_features(net, noise_x))

    bench_classes = rng.permutation(np.arange(BATCH) % NUM_CLASSES)
    bench_easiness = rng.permutation(np.linspace(*EASINESS_RANGE, BATCH))
    x64 = draw_samples(rng, protos, bench_classes, bench_easiness)
    with torch.no_grad():
        factors = calibrate_exit_temperatures(net, x64)
    exit_flops = cumulative_exit_flops(net)

    log("exporting the probe and reading the decisions from ONNX Runtime ...")
    probe_path = tmp / "probe.onnx"
    export_where(ExitProbe(net).eval(), probe_path, ["confidences", "logits1", "logits2", "logits3", "logits4"])
    probe = ort_session(probe_path)
    probe_outs = ort_run(probe, x64)
    conf = probe_outs[0]
    exits = exits_from_confidences(conf)
    with torch.no_grad():
        torch_logits = [torch.cat(c).numpy() for c in zip(*(net.all_logits(torch.from_numpy(chunk))
                                                               for chunk in np.array_split(x64, BATCH // 8)))]
    torch_conf = np.concatenate([torch.from_numpy(l).softmax(dim=1).amax(dim=1, keepdim=True).numpy()
                                 for l in torch_logits[:3]], axis=1)
    if not np.array_equal(exits, exits_from_confidences(torch_conf)):
        raise RuntimeError("ONNX Runtime and torch take different exits")
    counts = np.array([int((exits == k).sum()) for k in (1, 2, 3, 4)])
    if np.abs(np.cumsum(counts) - np.cumsum(TARGET_EXIT_COUNTS)).max() > 3:
        raise RuntimeError(f"exit counts {counts}, wanted about {TARGET_EXIT_COUNTS}")
    margins = decision_margins(conf, exits)
    if margins.min() < MIN_MARGIN:
        raise RuntimeError(f"a decision is {margins.min():.2e} from the threshold")
    b1_row = int(np.flatnonzero(exits == EXIT_OF_B1)[np.argmax(margins[exits == EXIT_OF_B1])])
    x1 = x64[b1_row : b1_row + 1]
    # The selected logits, per sample, that both models must return.
    chosen = np.stack([probe_outs[e][i] for i, e in enumerate(exits)])

    where_tmp, if_tmp = tmp / WHERE_DIR.name, tmp / IF_DIR.name
    where_tmp.mkdir()
    if_tmp.mkdir()
    log("exporting resnet18_exit_where (TorchScript exporter, opset 17) ...")
    export_where(ExitWhere(net).eval(), where_tmp / "model.onnx", ["logits"])
    log("exporting resnet18_exit_if (dynamo exporter with torch.cond, opset 18) ...")
    export_if(ExitIf(net).eval(), if_tmp / "model.onnx", x1)
    for folder in (where_tmp, if_tmp):
        onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)

    log("ONNX Runtime reference outputs ...")
    where_sess, if_sess = ort_session(where_tmp / "model.onnx"), ort_session(if_tmp / "model.onnx")
    (out64,) = ort_run(where_sess, x64)
    (out1,) = ort_run(where_sess, x1)
    (out1_if,) = ort_run(if_sess, x1)
    check_close("resnet18_exit_where, batch 64", out64, chosen)
    check_close("resnet18_exit_where, batch 64 against torch", out64,
                np.stack([torch_logits[e - 1][i] for i, e in enumerate(exits)]))
    check_close("resnet18_exit_where, batch 1", out1, chosen[b1_row : b1_row + 1])
    check_close("resnet18_exit_if, batch 1", out1_if, chosen[b1_row : b1_row + 1])

    common = {
        "resolution": RESOLUTION,
        "num_classes": NUM_CLASSES,
        "knob": "threshold",
        "threshold": THRESHOLD,
        "seed": SEED,
        "exit_index": "1, 2, 3 = early exits after layer1, layer2, layer3; 4 = full depth (final head after layer4)",
        "exit_flops": exit_flops,
        "flops_dense": exit_flops[-1],
        "exit_head_temperatures": factors[:3],
        "torch_version": torch.__version__.split("+")[0],
        "onnxruntime_version": ort.__version__,
    }
    b64 = {"input": "input_b64.npy", "output": "output_b64.npy", **mix_summary(exits, exit_flops),
           "easiness": [float(e) for e in bench_easiness], "classes": [int(c) for c in bench_classes],
           "easiness_mean_per_exit": [float(bench_easiness[exits == k].mean()) for k in (1, 2, 3, 4)],
           "min_decision_margin": float(margins.min())}
    b1 = {"input": "input_b1.npy", "output": "output_b1.npy", "row_of_b64": b1_row,
          **mix_summary(exits[b1_row : b1_row + 1], exit_flops),
          "min_decision_margin": float(margins[b1_row])}
    metas = {
        where_tmp: {"model": WHERE_DIR.name, "form": "nested Where, per-sample [N, 1] decisions, dynamic batch",
                    "exporter": "torch.onnx torchscript", "opset": 17, **common,
                    "batches": {"b1": b1, "b64": b64}},
        if_tmp: {"model": IF_DIR.name, "form": "nested If (torch.cond), batch 1",
                 "exporter": "torch.onnx dynamo", "opset": 18, **common,
                 "batches": {"b1": b1}},
    }
    np.save(where_tmp / "input_b64.npy", x64)
    np.save(where_tmp / "output_b64.npy", out64)
    for folder, out in ((where_tmp, out1), (if_tmp, out1_if)):
        np.save(folder / "input_b1.npy", x1)
        np.save(folder / "output_b1.npy", out)
        (folder / "meta.json").write_text(json.dumps(metas[folder], indent=2) + "\n")

    BENCH_MODELS.mkdir(parents=True, exist_ok=True)
    for folder, dest in ((where_tmp, WHERE_DIR), (if_tmp, IF_DIR)):
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(folder), str(dest))


def complete() -> bool:
    return all((d / f).exists() for d, files in EXPECTED_FILES.items() for f in files)


def print_summary() -> None:
    print(f"{'model':<22} {'batch':>5} {'exit1':>5} {'exit2':>5} {'exit3':>5} {'full':>5} "
          f"{'FLOP frac':>9} {'margin':>7} {'MB':>6}")
    for folder in (WHERE_DIR, IF_DIR):
        meta = json.loads((folder / "meta.json").read_text())
        mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        for batch, case in meta["batches"].items():
            c = case["exit_counts"]
            print(f"{meta['model']:<22} {len(case['exits']):>5} {c[0]:>5} {c[1]:>5} {c[2]:>5} {c[3]:>5} "
                  f"{case['flops_fraction']:>9.3f} {case['min_decision_margin']:>7.3f} {mb:>6.1f}")
    meta = json.loads((WHERE_DIR / "meta.json").read_text())
    gflops = ", ".join(f"{f / 1e9:.3f}" for f in meta["exit_flops"])
    print(f"\ncumulative GFLOPs per sample at exits 1..4: {gflops} "
          f"(dense = {meta['flops_dense'] / 1e9:.3f}); input 3x{RESOLUTION}x{RESOLUTION}; in {BENCH_MODELS}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if every output exists")
    args = ap.parse_args()
    if complete() and not args.force:
        log(f"up to date (use --force to rebuild): {WHERE_DIR}, {IF_DIR}")
    else:
        torch.use_deterministic_algorithms(True)
        BENCH_MODELS.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=BENCH_MODELS) as tmp:
            build(Path(tmp))
    print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
