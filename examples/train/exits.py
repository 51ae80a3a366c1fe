"""Early-exit and network-selection networks, trained for real on the digits.

Three models, each trained here, exported twice (a dynamic-batch file whose
per-sample decisions merge through `Where`, and a batch-1 file whose forward
uses `torch.cond`, i.e. ONNX `If`), checked against ONNX Runtime through d2nnc
and written to examples/train/models/<name>/:

* ``dgates_resnet`` - Shafiee et al., "Dynamic Representations Toward
  Efficient Inference on Deep Neural Networks by Decision Gates" (arXiv 2018,
  CVPR Workshops 2019). A small ResNet with a decision gate
  (d-gate, a linear SVM on pooled stage features, trained with the hinge loss
  on the frozen backbone) after stages 1 and 2. A sample leaves through a
  d-gate when the gate's top SVM score clears the gate's threshold knob.
* ``adaptive_exit`` - Bolukbasi, Wang, Dekel, Saligrama, "Adaptive Neural
  Networks for Efficient Inference" (ICML 2017), early-exit policy: a CNN
  with an exit classifier after each block and, at each exit, a policy
  gamma_k learned bottom-up as weighted binary classification (exit when that
  is cheaper, in error + lambda * computation, than what the deeper policy
  would do).
* ``adaptive_select`` - the same paper's network selection: a cheap CNN always
  runs; a policy on its class probabilities decides, per sample, whether to
  also run an expensive CNN on the image and take its answer.

Every decision compares against its own scalar buffer (a d2nnc *knob*), so
the accuracy / cost trade-off can be moved after compilation.

Run directly (trains the three models, or the ones named):

    target/venv/bin/python examples/train/exits.py [dgates_resnet adaptive_exit adaptive_select]

or through train_all.py, which calls `TRAINERS`.
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.svm import LinearSVC

import data
import export

# One seed per model, so that training one model alone gives the same result
# as training all of them (nothing depends on the order trainers run in).
SEEDS = {"dgates_resnet": 101, "adaptive_exit": 202, "adaptive_select": 303}

BATCH_SIZE = 64
# Half of every training batch is replaced by its hard variant, as in val/test.
HARD_FRACTION = 0.5
# Knob defaults closer than this to some val/test decision value are moved:
# ONNX Runtime and d2nnc round differently in the last bits, and a decision
# value that close to its threshold could flip between them.
MIN_DECISION_GAP = 1e-3
# Accuracy (a fraction: 0.01 = one point, on val) the dynamic models may give
# up against their full network when their default knobs / lambda are chosen.
ALLOWED_VAL_DROP = 0.01
# lambda (cost of running the whole network, in units of one misclassified
# sample) swept for the Bolukbasi policies.
LAMBDAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
# lambda is chosen on val by cross-validation over this many folds, and for
# each lambda the policies' regularisation C (logistic regression) from this grid.
CV_FOLDS = 5
POLICY_C_GRID = (0.05, 0.5)


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 conv+BN, plus a (1x1 conv+BN when the
    shape changes) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def global_pool(h: torch.Tensor) -> torch.Tensor:
    return h.mean(dim=(2, 3))


def policy_features(logits: torch.Tensor) -> torch.Tensor:
    """What a Bolukbasi policy sees at a decision point: the classifier's
    class probabilities and its top probability [N, 11]. (Adding the pooled
    feature maps gave policies that did worse on held-out data: with a few
    hundred validation samples to learn from, fewer features generalise
    better.)"""
    probs = torch.softmax(logits, dim=1)
    return torch.cat([probs, probs.amax(dim=1, keepdim=True)], dim=1)


def multiply_adds_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """2 x the multiply-adds of the Conv2d and Linear layers `module` runs on
    one sample x [1, ...] (what costs time; elementwise ops are ignored)."""
    total = 0

    def count(layer: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            total += 2 * output[0].numel() * per_output
        elif isinstance(layer, nn.Linear):
            total += 2 * layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return total


class Flops(nn.Module):
    """Wraps a callable so multiply_adds_per_sample can count a segment that is
    not a module of its own (e.g. pooling + a Linear head)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *modules: nn.Module):
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# --------------------------------------------------------------------------
# training and evaluation helpers
# --------------------------------------------------------------------------


def train_supervised(
    model: nn.Module,
    parameters,
    splits: dict[str, data.Split],
    loss_of_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    seed: int,
    weight_decay: float = 5e-4,
) -> None:
    """AdamW with a cosine schedule over the train split; each batch has a
    random half made hard (the same transform as the hard val/test samples)."""
    rng = np.random.default_rng(seed)
    x_train, y_train = splits["train"].x, splits["train"].y
    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            xb = torch.from_numpy(data.augment_hard(x_train[idx], rng, HARD_FRACTION))
            yb = torch.from_numpy(y_train[idx])
            loss = loss_of_batch(xb, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def in_batches(fn: Callable[[torch.Tensor], dict], x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Apply fn (returning a dict of tensors) to x in batches, without grad,
    and concatenate each entry into a NumPy array."""
    parts: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out = fn(torch.from_numpy(x[start : start + batch]))
            for k, v in out.items():
                parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def augmented_copies(split: data.Split, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean split plus `copies` re-augmented versions (half hard each)."""
    rng = np.random.default_rng(seed)
    xs = [split.x] + [data.augment_hard(split.x, rng, HARD_FRACTION) for _ in range(copies)]
    return np.concatenate(xs), np.tile(split.y, copies + 1)


def fold_standardisation(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """A linear model trained on (f - mean) / std, rewritten to act on f."""
    w = weight / std
    b = bias - (w * mean).sum(axis=1)
    return w.astype(np.float32), b.astype(np.float32)


def fit_linear_svm(features: np.ndarray, labels: np.ndarray, seed: int, c: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A one-vs-rest linear SVM (hinge loss, liblinear) on standardised
    features; returns (weight [classes, d], bias [classes]) acting on the raw
    features, so it is a plain nn.Linear."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    svm = LinearSVC(C=c, loss="hinge", dual=True, max_iter=20000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit((features - mean) / std, labels)
    return fold_standardisation(svm.coef_, svm.intercept_, mean, std)


def fit_weighted_policy(
    features: np.ndarray, labels: np.ndarray, weights: np.ndarray, c: float
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted binary classification (logistic loss, as a convex surrogate
    of the weighted 0/1 loss in Bolukbasi et al.): returns (weight [1, d],
    bias [1]) on the raw features. labels: 1 = take the action the policy
    guards (exit / run the expensive network)."""
    keep = weights > 0
    labels, weights, features = labels[keep], weights[keep], features[keep]
    if len(np.unique(labels)) < 2:
        # Every weighted sample wants the same action: a constant policy.
        constant = 8.0 if (len(labels) and labels[0] == 1) else -8.0
        return np.zeros((1, features.shape[1]), np.float32), np.array([constant], np.float32)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, max_iter=5000)
    # Normalised weights keep C meaningful whatever lambda is.
    model.fit((features - mean) / std, labels, sample_weight=weights / weights.mean())
    return fold_standardisation(model.coef_, model.intercept_, mean, std)


def set_linear(layer: nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))


def knob_clear_of_decisions(default: float, decision_values: np.ndarray) -> float:
    """The knob value to ship: `default`, unless some val/test decision value
    lies within MIN_DECISION_GAP of it; then the middle of the nearest gap
    between sorted decision values that is wide enough."""
    values = np.unique(decision_values.astype(np.float64))
    if np.abs(values - default).min() >= MIN_DECISION_GAP:
        return float(default)
    edges = np.concatenate([[values[0] - 1.0], values, [values[-1] + 1.0]])
    lows, highs = edges[:-1], edges[1:]
    wide = (highs - lows) > 2 * MIN_DECISION_GAP
    middles = (lows + highs) / 2
    best = np.argmin(np.where(wide, np.abs(middles - default), np.inf))
    return float(np.float32(middles[best]))


def knob_adjustments(chosen: dict[str, float], shipped: dict[str, float]) -> dict:
    """model.json's record of the knobs moved off a near-tie (see MIN_DECISION_GAP)."""
    moved = {
        name: {"chosen": round(chosen[name], 6), "shipped": shipped[name]}
        for name in chosen
        if abs(chosen[name] - shipped[name]) > 1e-6
    }
    return {
        "rule": f"a default within {MIN_DECISION_GAP} of a val/test decision value is moved to the middle of "
        "the nearest wide-enough gap between decision values",
        "moved": moved,
    }


def fraction(x) -> float:
    """A mean as a fraction rounded to 4 places (model.json's convention)."""
    return round(float(np.mean(x)), 4)


def accuracy_split(correct: np.ndarray, hard: np.ndarray) -> dict:
    return {"overall": fraction(correct), "easy": fraction(correct[~hard]), "hard": fraction(correct[hard])}


def route_summary(route: np.ndarray, names: list[str], hard: np.ndarray) -> dict:
    """Per route (exit / network), the share of easy and of hard test samples taking it."""
    return {
        name: {"easy": fraction(route[~hard] == k), "hard": fraction(route[hard] == k)} for k, name in enumerate(names)
    }


def cost_split(cost: np.ndarray, hard: np.ndarray) -> dict:
    return {
        "overall": round(float(cost.mean()), 4),
        "easy": round(float(cost[~hard].mean()), 4),
        "hard": round(float(cost[hard].mean()), 4),
    }


@contextlib.contextmanager
def branching(model: nn.Module, mode: str):
    """Temporarily switch a model's forward between its `Where` form
    (dynamic batch) and its `torch.cond` form (batch 1)."""
    old = model.branching
    model.branching = mode
    try:
        yield model
    finally:
        model.branching = old


@dataclass
class Exported:
    files: dict
    checks: dict
    torch_vs_ort: dict


def export_and_check(model: nn.Module, model_dir: pathlib.Path, knobs: list[str], test: data.Split) -> Exported:
    """Both ONNX forms, their ONNX Runtime references on the whole test set,
    agreement of torch / ORT / d2nnc."""
    model_dir.mkdir(parents=True, exist_ok=True)
    dynamic_path, if_path = model_dir / "dynamic.onnx", model_dir / "if.onnx"
    with branching(model, "where"):
        export.export_dynamic(model, dynamic_path)
        with torch.no_grad():
            torch_dynamic = model(torch.from_numpy(test.x)).numpy()
    with branching(model, "cond"):
        export.export_if(model, if_path)
        with torch.no_grad():
            torch_if = np.concatenate([model(torch.from_numpy(test.x[i : i + 1])).numpy() for i in range(len(test.x))])
    ref_dynamic = export.ort_run(dynamic_path, test.x, batch1=False)
    ref_if = export.ort_run(if_path, test.x, batch1=True)
    np.save(model_dir / "ref_dynamic.npy", ref_dynamic)
    np.save(model_dir / "ref_if.npy", ref_if)

    torch_vs_ort = {
        "dynamic_max_abs_diff": float(np.abs(torch_dynamic - ref_dynamic).max()),
        "if_max_abs_diff": float(np.abs(torch_if - ref_if).max()),
        "dynamic_vs_if_max_abs_diff": float(np.abs(ref_dynamic - ref_if).max()),
    }
    # The three computations must agree on every prediction; a flipped
    # decision would show up here as a large logit difference.
    for key, value in torch_vs_ort.items():
        if value > 1e-3:
            raise RuntimeError(f"{model_dir.name}: {key} = {value:.3g}")

    checks = {}
    for form, path in (("dynamic", dynamic_path), ("if", if_path)):
        report = export.d2nnc_check(path, test.x, expected_knobs=knobs)
        checks[form] = {
            "samples": report["samples"],
            "max_abs_diff_vs_ort": report["max_abs_diff"],
            "flops_executed": report["flops_executed"],
            "flops_dense": report["flops_dense"],
            "flops_ratio": round(report["flops_ratio"], 4),
            "decisions": report["decisions"],
            "regions": report["regions"],
            "onnx_bytes": path.stat().st_size,
        }
    files = {
        "dynamic": "dynamic.onnx",
        "if": "if.onnx",
        "ref_dynamic": "ref_dynamic.npy",
        "ref_if": "ref_if.npy",
        "notes": "NOTES.md",
        "val_data": "../../data/val.npz",
        "test_data": "../../data/test.npz",
    }
    return Exported(files=files, checks=checks, torch_vs_ort=torch_vs_ort)


def finish(name: str, models_dir: pathlib.Path, meta: dict, exported: Exported, segment_costs: dict) -> dict:
    """Add the cost model and file sizes, write model.json (and index.json)
    and NOTES.md; returns the metadata as written."""
    model_dir = models_dir / name
    meta["cost_model"] = {
        "unit": "2 x multiply-adds of the Conv2d and Linear layers per sample (batch 1)",
        "segments": segment_costs,
        "full_network": int(sum(segment_costs.values())),
    }
    files = dict(exported.files)
    files["sizes_bytes"] = {
        f: (model_dir / f).stat().st_size for f in ("dynamic.onnx", "if.onnx", "ref_dynamic.npy", "ref_if.npy")
    }
    export.save_model(name, models_dir, meta, files)
    meta = {"name": name, **meta, "files": files}
    (model_dir / "NOTES.md").write_text(NOTES[name](meta), encoding="utf-8")
    return meta


def log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


# --------------------------------------------------------------------------
# dgates_resnet: Shafiee et al., decision gates
# --------------------------------------------------------------------------


class DGatesResNet(nn.Module):
    """A small ResNet (stem + 3 stages of one BasicBlock, 16/24/40 channels,
    all stages at 8x8) with a d-gate after stages 1 and 2.

    A d-gate is a linear SVM (one-vs-rest, 10 classes) on the pooled stage
    output: d-gate 1 pools stage 1 to 2x2 (shallow features are only
    linearly separable with some of their layout kept: globally pooled, a
    linear SVM gets about 70% of the test digits right), d-gate 2 pools
    stage 2 globally. Its confidence is the top SVM score (the signed
    distance to the winning class's hyperplane, up to scale); when it
    exceeds the gate's threshold knob the sample exits with the SVM's scores
    as its logits. Stage 3 (the expensive part) runs only for samples that
    neither gate lets out."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(1, 16)  # 16x16
        self.stage1 = BasicBlock(16, 16, stride=2)  # -> 8x8
        self.stage2 = BasicBlock(16, 24)
        self.stage3 = BasicBlock(24, 40)
        self.head = nn.Linear(40, data.NUM_CLASSES)
        self.dgate1 = nn.Linear(16 * 4, data.NUM_CLASSES)
        self.dgate2 = nn.Linear(24, data.NUM_CLASSES)
        self.register_buffer("dgate1_threshold", torch.tensor(0.0))
        self.register_buffer("dgate2_threshold", torch.tensor(0.0))
        self.branching = "where"

    @staticmethod
    def gate1_features(h1: torch.Tensor) -> torch.Tensor:
        # 8x8 -> 2x2 average pooling keeps a little layout for the linear SVM.
        return F.avg_pool2d(h1, 4).flatten(1)

    @staticmethod
    def gate2_features(h2: torch.Tensor) -> torch.Tensor:
        return global_pool(h2)

    def analyse(self, x: torch.Tensor) -> dict:
        """Everything the training and evaluation code needs, for the whole batch."""
        h1 = self.stage1(self.stem(x))
        h2 = self.stage2(h1)
        h3 = self.stage3(h2)
        f1, f2 = self.gate1_features(h1), self.gate2_features(h2)
        s1, s2 = self.dgate1(f1), self.dgate2(f2)
        return {
            "f1": f1,
            "f2": f2,
            "s1": s1,
            "s2": s2,
            "conf1": s1.amax(dim=1),
            "conf2": s2.amax(dim=1),
            "final": self.head(global_pool(h3)),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branching == "cond":
            return self.forward_cond(x)
        h1 = self.stage1(self.stem(x))
        scores1 = self.dgate1(self.gate1_features(h1))
        exit1 = scores1.amax(dim=1) > self.dgate1_threshold  # [N]
        h2 = self.stage2(h1)
        scores2 = self.dgate2(self.gate2_features(h2))
        exit2 = scores2.amax(dim=1) > self.dgate2_threshold  # [N]
        final = self.head(global_pool(self.stage3(h2)))
        return torch.where(exit1[:, None], scores1, torch.where(exit2[:, None], scores2, final))

    def forward_cond(self, x: torch.Tensor) -> torch.Tensor:
        """Batch 1: the same decisions as scalars, the deeper stages inside
        nested torch.cond branches (ONNX If)."""
        h1 = self.stage1(self.stem(x))
        scores1 = self.dgate1(self.gate1_features(h1))
        exit1 = (scores1.amax(dim=1) > self.dgate1_threshold).reshape(())

        def leave_at_gate1(h1, scores1):
            return scores1.clone()

        def continue_to_stage2(h1, scores1):
            h2 = self.stage2(h1)
            scores2 = self.dgate2(self.gate2_features(h2))
            exit2 = (scores2.amax(dim=1) > self.dgate2_threshold).reshape(())

            def leave_at_gate2(h2, scores2):
                return scores2.clone()

            def run_stage3(h2, scores2):
                return self.head(global_pool(self.stage3(h2)))

            return torch.cond(exit2, leave_at_gate2, run_stage3, (h2, scores2))

        return torch.cond(exit1, leave_at_gate1, continue_to_stage2, (h1, scores1))

    def segment_costs(self) -> dict[str, int]:
        x = torch.zeros(1, 1, data.IMAGE, data.IMAGE)
        with torch.no_grad():
            h1 = self.stage1(self.stem(x))
            h2 = self.stage2(h1)
        return {
            "stage1": multiply_adds_per_sample(nn.Sequential(self.stem, self.stage1), x),
            "dgate1": multiply_adds_per_sample(Flops(lambda h: self.dgate1(self.gate1_features(h)), self.dgate1), h1),
            "stage2": multiply_adds_per_sample(self.stage2, h1),
            "dgate2": multiply_adds_per_sample(Flops(lambda h: self.dgate2(self.gate2_features(h)), self.dgate2), h2),
            "stage3": multiply_adds_per_sample(
                Flops(lambda h: self.head(global_pool(self.stage3(h))), self.stage3, self.head), h2
            ),
        }


def dgates_routes(conf1, conf2, t1: float, t2: float) -> np.ndarray:
    """0 = out at d-gate 1, 1 = out at d-gate 2, 2 = the full network."""
    return np.where(conf1 > t1, 0, np.where(conf2 > t2, 1, 2))


def choose_dgate_thresholds(val: dict, y: np.ndarray, path_costs: np.ndarray) -> tuple[float, float, dict]:
    """The (t1, t2) pair with the lowest mean cost on val whose accuracy is
    within ALLOWED_VAL_DROP of the full network's. Candidates are the
    midpoints between consecutive sorted val confidences (plus 'never exit')."""
    preds = np.stack([val["s1"].argmax(1), val["s2"].argmax(1), val["final"].argmax(1)])
    correct = preds == y[None]
    full_accuracy = correct[2].mean()

    def candidates(conf: np.ndarray) -> np.ndarray:
        v = np.unique(conf)
        mids = (v[:-1] + v[1:]) / 2
        # At most ~60 candidates: quantiles of the midpoints, plus 'never exit'.
        mids = np.unique(np.quantile(mids, np.linspace(0, 1, 60), method="nearest"))
        return np.concatenate([mids, [v[-1] + 1.0]])

    best = None
    for t1 in candidates(val["conf1"]):
        for t2 in candidates(val["conf2"]):
            route = dgates_routes(val["conf1"], val["conf2"], t1, t2)
            accuracy = correct[route, np.arange(len(y))].mean()
            cost = path_costs[route].mean()
            if accuracy >= full_accuracy - ALLOWED_VAL_DROP and (best is None or cost < best[0] - 1e-12):
                best = (cost, accuracy, float(t1), float(t2))
    cost, accuracy, t1, t2 = best
    return t1, t2, {"val_accuracy": fraction(accuracy), "val_accuracy_full": fraction(full_accuracy), "val_cost": fraction(cost)}


def train_dgates_resnet(splits: dict[str, data.Split], models_dir: pathlib.Path) -> dict:
    name, seed = "dgates_resnet", SEEDS["dgates_resnet"]
    started = time.time()
    torch.manual_seed(seed)
    model = DGatesResNet()
    backbone = [p for n, p in model.named_parameters() if not n.startswith("dgate")]
    epochs, lr = 30, 3e-3

    # 1. The backbone alone, cross-entropy on the final head (as in the paper,
    #    the network is trained first and the gates are added to it).
    def backbone_loss(xb, yb):
        h = model.stage3(model.stage2(model.stage1(model.stem(xb))))
        return F.cross_entropy(model.head(global_pool(h)), yb)

    train_supervised(model, backbone, splits, backbone_loss, epochs=epochs, lr=lr, seed=seed)
    log(name, f"backbone trained ({time.time() - started:.0f}s)")

    # 2. The d-gates: linear SVMs (hinge loss) on the frozen backbone's
    #    features of the training images (clean + 3 re-augmented copies).
    svm_copies, svm_c = 3, 0.05
    x_fit, y_fit = augmented_copies(splits["train"], svm_copies, seed + 1)
    feats = in_batches(model.analyse, x_fit)
    set_linear(model.dgate1, *fit_linear_svm(feats["f1"], y_fit, seed, svm_c))
    set_linear(model.dgate2, *fit_linear_svm(feats["f2"], y_fit, seed, svm_c))

    # 3. Thresholds on val: the cheapest pair within ALLOWED_VAL_DROP.
    costs = model.segment_costs()
    full_cost = sum(costs.values())
    path_costs = np.array(
        [
            costs["stage1"] + costs["dgate1"],
            costs["stage1"] + costs["dgate1"] + costs["stage2"] + costs["dgate2"],
            full_cost,
        ]
    ) / full_cost
    val = in_batches(model.analyse, splits["val"].x)
    t1, t2, choice = choose_dgate_thresholds(val, splits["val"].y, path_costs)
    test = in_batches(model.analyse, splits["test"].x)
    # Keep both thresholds clear of every val/test confidence (see MIN_DECISION_GAP).
    chosen = {"dgate1_threshold": t1, "dgate2_threshold": t2}
    model.dgate1_threshold.fill_(knob_clear_of_decisions(t1, np.concatenate([val["conf1"], test["conf1"]])))
    model.dgate2_threshold.fill_(knob_clear_of_decisions(t2, np.concatenate([val["conf2"], test["conf2"]])))
    # The float32 values the models hold are the ones evaluated and shipped.
    t1, t2 = float(model.dgate1_threshold), float(model.dgate2_threshold)

    # 4. Test results at the default thresholds (torch).
    y, hard = splits["test"].y, splits["test"].hard
    route = dgates_routes(test["conf1"], test["conf2"], t1, t2)
    preds = np.stack([test["s1"].argmax(1), test["s2"].argmax(1), test["final"].argmax(1)])
    correct = preds[route, np.arange(len(y))] == y
    full_correct = preds[2] == y
    cost = path_costs[route]
    gate_accuracy = {f"dgate{k + 1}_alone": accuracy_split(preds[k] == y, hard) for k in range(2)}

    knobs = ["dgate1_threshold", "dgate2_threshold"]
    exported = export_and_check(model, models_dir / name, knobs, splits["test"])
    results = {
        "test_accuracy": accuracy_split(correct, hard),
        "test_accuracy_full": accuracy_split(full_correct, hard),
        "test_accuracy_exit_classifiers_alone": gate_accuracy,
        "mean_cost": round(float(cost.mean()), 4),
        "mean_cost_split": cost_split(cost, hard),
        "routes": route_summary(route, ["dgate1", "dgate2", "full"], hard),
        "path_costs": {"dgate1": round(path_costs[0], 4), "dgate2": round(path_costs[1], 4), "full": 1.0},
        "full_network_flops": int(full_cost),
        "threshold_choice": {**choice, "allowed_val_drop": ALLOWED_VAL_DROP},
        "d2nnc": exported.checks,
        "torch_vs_ort": exported.torch_vs_ort,
    }
    meta = {
        "paper": "Shafiee et al., \"Dynamic Representations Toward Efficient Inference on Deep Neural Networks "
        "by Decision Gates\", arXiv 2018; CVPR Workshops 2019",
        "architecture": "ResNet: stem conv3x3 1->16 @16x16; stage1 BasicBlock 16->16 stride 2 (@8x8); "
        "stage2 BasicBlock 16->24; stage3 BasicBlock 24->40; global average pool; Linear 40->10. "
        "d-gate 1: avg-pool 2x2 of stage1 (64 features) -> Linear 64->10 (linear SVM); d-gate 2: global "
        "average pool of stage2 (24 features) -> Linear 24->10 (linear SVM).",
        "description": "Decision gates (d-gates) after stages 1 and 2. Each d-gate is a one-vs-rest linear SVM "
        "on the pooled stage features; its confidence is its top SVM score. A sample whose confidence "
        "exceeds the gate's threshold exits with the SVM scores as logits; otherwise it continues (stage 2, "
        "then stage 3 and the final head). dynamic.onnx: exit1 = ReduceMax(scores1) > dgate1_threshold "
        "([N]); logits = Where(exit1, scores1, Where(exit2, scores2, final)). if.onnx: the same decisions at "
        "batch 1 as nested If. Knobs: dgate1_threshold / dgate2_threshold - the minimum SVM score for "
        "leaving at d-gate 1 / 2 (raise a knob for accuracy, lower it for speed; a very large value "
        "disables that exit).",
        "knobs": {"dgate1_threshold": t1, "dgate2_threshold": t2},
        "knob_adjustments": knob_adjustments(chosen, {"dgate1_threshold": t1, "dgate2_threshold": t2}),
        "train": {
            "seed": seed,
            "backbone": {
                "loss": "cross-entropy (final head only)",
                "optimizer": "AdamW",
                "lr": lr,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "epochs": epochs,
                "batch_size": BATCH_SIZE,
                "hard_fraction_per_batch": HARD_FRACTION,
            },
            "dgates": {
                "loss": "hinge (sklearn LinearSVC, one-vs-rest, liblinear)",
                "C": svm_c,
                "features": "standardised; the standardisation is folded into the Linear",
                "data": f"train split, clean + {svm_copies} re-augmented copies, backbone frozen",
            },
            "thresholds": f"cheapest mean cost on val with accuracy >= full - {ALLOWED_VAL_DROP}",
        },
        "results": results,
    }
    return finish(name, models_dir, meta, exported, model.segment_costs())


# --------------------------------------------------------------------------
# Bolukbasi et al.: policies learned bottom-up as weighted binary classification
# --------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def learn_policies_bottom_up(
    features: list[np.ndarray], correct: np.ndarray, path_costs: np.ndarray, lam: float, c: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paper's reduction of the early-exit policy to a sequence of
    weighted binary classifications, learned from the deepest decision up.

    features[k]: what policy k sees [N, d_k]; correct[k]: whether classifier
    k (k = 0..K, K = the last one, which has no policy) is right [K+1, N];
    path_costs[k]: computation of stopping at classifier k (fraction of the
    full network). The cost of stopping at k is its 0/1 error plus
    lam * path_costs[k]; the cost of going on is what the already learned
    deeper policies lead to. Each sample is labelled with the cheaper action
    and weighted by how much cheaper it is; c is the logistic regression's
    inverse regularisation. Returns the exit policies (weight, bias): exit
    at k where sigmoid(f_k . w + b) > 0.5."""
    last = len(features)
    go_on = (1.0 - correct[last]) + lam * path_costs[last]
    policies: list = [None] * last
    for k in reversed(range(last)):
        stop = (1.0 - correct[k]) + lam * path_costs[k]
        labels = (stop <= go_on).astype(np.int64)
        weights = np.abs(stop - go_on)
        w, b = fit_weighted_policy(features[k], labels, weights, c)
        policies[k] = (w, b)
        exits_here = sigmoid(features[k] @ w.T.astype(np.float64) + b)[:, 0] > 0.5
        go_on = np.where(exits_here, stop, go_on)
    return policies


# --------------------------------------------------------------------------
# adaptive_exit: Bolukbasi et al., early-exit policy
# --------------------------------------------------------------------------


class AdaptiveExitCNN(nn.Module):
    """A plain CNN in three blocks (16 channels down to 8x8, then 32, then 40, all
    at 8x8) with an exit classifier after blocks 1 and 2 (a Linear on the
    block output average-pooled to 2x2) and the final classifier (global
    pool + Linear) after block 3.

    At exit k a policy gamma_k (a Linear on the exit's class probabilities
    and its top probability) decides, per sample,
    sigmoid(gamma_k) > exit{k}_threshold: exit with the exit's logits, or go
    on to the next block."""

    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(conv_bn_relu(1, 16), conv_bn_relu(16, 16, stride=2))
        self.block2 = nn.Sequential(conv_bn_relu(16, 32), conv_bn_relu(32, 32))
        self.block3 = nn.Sequential(conv_bn_relu(32, 40), conv_bn_relu(40, 40))
        self.exit1 = nn.Linear(16 * 4, data.NUM_CLASSES)
        self.exit2 = nn.Linear(32 * 4, data.NUM_CLASSES)
        self.head = nn.Linear(40, data.NUM_CLASSES)
        self.policy1 = nn.Linear(data.NUM_CLASSES + 1, 1)
        self.policy2 = nn.Linear(data.NUM_CLASSES + 1, 1)
        self.register_buffer("exit1_threshold", torch.tensor(0.5))
        self.register_buffer("exit2_threshold", torch.tensor(0.5))
        self.branching = "where"

    @staticmethod
    def exit_features(h: torch.Tensor) -> torch.Tensor:
        # 8x8 -> 2x2: an early exit on globally pooled shallow features is
        # hardly better than chance; a little layout makes it useful.
        return F.avg_pool2d(h, 4).flatten(1)

    def exit_point(self, h: torch.Tensor, exit_head: nn.Linear, policy: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """(the exit's logits, the policy's exit probability [N, 1]) at one exit."""
        logits = exit_head(self.exit_features(h))
        return logits, torch.sigmoid(policy(policy_features(logits)))

    def analyse(self, x: torch.Tensor) -> dict:
        h1 = self.block1(x)
        h2 = self.block2(h1)
        logits1, p1 = self.exit_point(h1, self.exit1, self.policy1)
        logits2, p2 = self.exit_point(h2, self.exit2, self.policy2)
        return {
            "logits1": logits1,
            "logits2": logits2,
            "final": self.head(global_pool(self.block3(h2))),
            "g1": policy_features(logits1),
            "g2": policy_features(logits2),
            "p1": p1[:, 0],
            "p2": p2[:, 0],
        }

    def all_exit_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = self.block1(x)
        h2 = self.block2(h1)
        h3 = self.block3(h2)
        return [self.exit1(self.exit_features(h1)), self.exit2(self.exit_features(h2)), self.head(global_pool(h3))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branching == "cond":
            return self.forward_cond(x)
        h1 = self.block1(x)
        logits1, p1 = self.exit_point(h1, self.exit1, self.policy1)
        exit1 = p1 > self.exit1_threshold  # [N, 1]
        h2 = self.block2(h1)
        logits2, p2 = self.exit_point(h2, self.exit2, self.policy2)
        exit2 = p2 > self.exit2_threshold  # [N, 1]
        final = self.head(global_pool(self.block3(h2)))
        return torch.where(exit1, logits1, torch.where(exit2, logits2, final))

    def forward_cond(self, x: torch.Tensor) -> torch.Tensor:
        """Batch 1: the same decisions as scalars, blocks 2 and 3 inside
        nested torch.cond branches (ONNX If)."""
        h1 = self.block1(x)
        logits1, p1 = self.exit_point(h1, self.exit1, self.policy1)
        exit1 = (p1 > self.exit1_threshold).reshape(())

        def leave_at_exit1(h1, logits1):
            return logits1.clone()

        def continue_to_block2(h1, logits1):
            h2 = self.block2(h1)
            logits2, p2 = self.exit_point(h2, self.exit2, self.policy2)
            exit2 = (p2 > self.exit2_threshold).reshape(())

            def leave_at_exit2(h2, logits2):
                return logits2.clone()

            def run_block3(h2, logits2):
                return self.head(global_pool(self.block3(h2)))

            return torch.cond(exit2, leave_at_exit2, run_block3, (h2, logits2))

        return torch.cond(exit1, leave_at_exit1, continue_to_block2, (h1, logits1))

    def segment_costs(self) -> dict[str, int]:
        x = torch.zeros(1, 1, data.IMAGE, data.IMAGE)
        with torch.no_grad():
            h1 = self.block1(x)
            h2 = self.block2(h1)
        return {
            "block1": multiply_adds_per_sample(self.block1, x),
            "exit1+policy1": multiply_adds_per_sample(
                Flops(lambda h: self.exit_point(h, self.exit1, self.policy1)[1], self.exit1, self.policy1), h1
            ),
            "block2": multiply_adds_per_sample(self.block2, h1),
            "exit2+policy2": multiply_adds_per_sample(
                Flops(lambda h: self.exit_point(h, self.exit2, self.policy2)[1], self.exit2, self.policy2), h2
            ),
            "block3": multiply_adds_per_sample(
                Flops(lambda h: self.head(global_pool(self.block3(h))), self.block3, self.head), h2
            ),
        }


def routes_from_decisions(*decisions: np.ndarray) -> np.ndarray:
    """The first decision point whose decision holds (or len(decisions))."""
    route = np.full(len(decisions[0]), len(decisions))
    for k in reversed(range(len(decisions))):
        route = np.where(decisions[k], k, route)
    return route


def evaluate_routes(route: np.ndarray, preds: np.ndarray, y: np.ndarray, path_costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: correct at its route, and its cost."""
    return preds[route, np.arange(len(y))] == y, path_costs[route]


def apply_exit_policies(policies: list, features: list[np.ndarray]) -> np.ndarray:
    """Routes (index of the classifier that answers) under learned exit policies."""
    decisions = [sigmoid(f @ w.T.astype(np.float64) + b)[:, 0] > 0.5 for (w, b), f in zip(policies, features)]
    return routes_from_decisions(*decisions)


def cross_validated_result(
    features: list[np.ndarray],
    correct: np.ndarray,
    preds: np.ndarray,
    y: np.ndarray,
    path_costs: np.ndarray,
    lam: float,
    c: float,
    seed: int,
) -> dict:
    """Accuracy and cost of the policies learned at (lam, c), estimated on the
    validation split by CV_FOLDS-fold cross-validation (each sample routed
    by policies fitted without it): the policies are fitted on val, so their
    in-sample val numbers would flatter them and pick too large a lambda."""
    route = np.empty(len(y), dtype=np.int64)
    folds = KFold(CV_FOLDS, shuffle=True, random_state=seed)
    for fit_idx, held_idx in folds.split(y):
        policies = learn_policies_bottom_up(
            [f[fit_idx] for f in features], correct[:, fit_idx].astype(np.float64), path_costs, lam, c
        )
        route[held_idx] = apply_exit_policies(policies, [f[held_idx] for f in features])
    right, cost = evaluate_routes(route, preds, y, path_costs)
    return {"val_cv_accuracy": fraction(right), "val_cv_cost": fraction(cost)}


def cross_validated_setting(
    lam: float, features: list[np.ndarray], correct: np.ndarray, preds: np.ndarray, y: np.ndarray, path_costs: np.ndarray, seed: int
) -> dict:
    """For one lambda, the regularisation C (from POLICY_C_GRID) whose
    policies have the lowest cross-validated risk, the paper's objective
    (error + lam * cost); with its cross-validated accuracy and cost."""
    best = None
    for c in POLICY_C_GRID:
        cv = cross_validated_result(features, correct, preds, y, path_costs, lam, c, seed)
        risk = (1.0 - cv["val_cv_accuracy"]) + lam * cv["val_cv_cost"]
        if best is None or risk < best[0] - 1e-12:
            best = (risk, c, cv)
    return {"lambda": lam, "C": best[1], **best[2]}


def pick_lambda(sweep: list[dict], full_val_accuracy: float) -> dict:
    """The cheapest (cross-validated on val) lambda whose cross-validated
    accuracy stays within ALLOWED_VAL_DROP of the full network; else the
    most accurate."""
    ok = [s for s in sweep if s["val_cv_accuracy"] >= full_val_accuracy - ALLOWED_VAL_DROP]
    if ok:
        return min(ok, key=lambda s: (s["val_cv_cost"], -s["val_cv_accuracy"]))
    return max(sweep, key=lambda s: (s["val_cv_accuracy"], -s["val_cv_cost"]))


def train_adaptive_exit(splits: dict[str, data.Split], models_dir: pathlib.Path) -> dict:
    name, seed = "adaptive_exit", SEEDS["adaptive_exit"]
    started = time.time()
    torch.manual_seed(seed)
    model = AdaptiveExitCNN()
    trunk = [p for n, p in model.named_parameters() if not n.startswith("policy")]
    epochs, lr, exit_loss_weights = 30, 3e-3, (1.0, 1.0, 1.0)

    # 1. The network with its exit classifiers, trained jointly (sum of the
    #    three cross-entropies).
    def multi_exit_loss(xb, yb):
        return sum(w * F.cross_entropy(z, yb) for w, z in zip(exit_loss_weights, model.all_exit_logits(xb)))

    train_supervised(model, trunk, splits, multi_exit_loss, epochs=epochs, lr=lr, seed=seed)
    log(name, f"network trained ({time.time() - started:.0f}s)")

    # 2. The policies, bottom-up, on the validation split (data the classifiers
    #    have not been fitted to, so their errors are representative), for
    #    each lambda of the sweep.
    costs = model.segment_costs()
    full_cost = sum(costs.values())
    path_costs = np.cumsum([costs["block1"] + costs["exit1+policy1"], costs["block2"] + costs["exit2+policy2"], costs["block3"]]) / full_cost
    splits_out = {s: in_batches(model.analyse, splits[s].x) for s in ("val", "test")}

    def predictions(out: dict) -> np.ndarray:
        return np.stack([out["logits1"].argmax(1), out["logits2"].argmax(1), out["final"].argmax(1)])

    val, test = splits_out["val"], splits_out["test"]
    y_val, y_test, hard = splits["val"].y, splits["test"].y, splits["test"].hard
    val_correct = predictions(val) == y_val[None]
    full_val_accuracy = fraction(val_correct[2])

    def install(policies) -> None:
        set_linear(model.policy1, *policies[0])
        set_linear(model.policy2, *policies[1])

    sweep, policies_by_lambda = [], {}
    for lam in LAMBDAS:
        features = [val["g1"], val["g2"]]
        entry = cross_validated_setting(lam, features, val_correct, predictions(val), y_val, path_costs, seed)
        policies = learn_policies_bottom_up(features, val_correct.astype(np.float64), path_costs, lam, entry["C"])
        policies_by_lambda[lam] = policies
        install(policies)
        test = in_batches(model.analyse, splits["test"].x)
        route = routes_from_decisions(test["p1"] > 0.5, test["p2"] > 0.5)
        correct, cost = evaluate_routes(route, predictions(test), y_test, path_costs)
        entry.update(test_accuracy=fraction(correct), test_cost=fraction(cost))
        sweep.append(entry)
        log(name, f"lambda {lam}: {entry}")
    chosen = pick_lambda(sweep, full_val_accuracy)
    install(policies_by_lambda[chosen["lambda"]])

    # 3. Keep the 0.5 thresholds clear of every val/test policy output.
    val, test = (in_batches(model.analyse, splits[s].x) for s in ("val", "test"))
    model.exit1_threshold.fill_(knob_clear_of_decisions(0.5, np.concatenate([val["p1"], test["p1"]])))
    model.exit2_threshold.fill_(knob_clear_of_decisions(0.5, np.concatenate([val["p2"], test["p2"]])))
    t1, t2 = float(model.exit1_threshold), float(model.exit2_threshold)

    route = routes_from_decisions(test["p1"] > t1, test["p2"] > t2)
    preds = predictions(test)
    correct, cost = evaluate_routes(route, preds, y_test, path_costs)

    knobs = ["exit1_threshold", "exit2_threshold"]
    exported = export_and_check(model, models_dir / name, knobs, splits["test"])
    results = {
        "test_accuracy": accuracy_split(correct, hard),
        "test_accuracy_full": accuracy_split(preds[2] == y_test, hard),
        "test_accuracy_exit_classifiers_alone": {f"exit{k + 1}_alone": accuracy_split(preds[k] == y_test, hard) for k in range(2)},
        "mean_cost": round(float(cost.mean()), 4),
        "mean_cost_split": cost_split(cost, hard),
        "routes": route_summary(route, ["exit1", "exit2", "full"], hard),
        "path_costs": {"exit1": round(path_costs[0], 4), "exit2": round(path_costs[1], 4), "full": 1.0},
        "full_network_flops": int(full_cost),
        "lambda_sweep": sweep,
        "lambda_default": chosen["lambda"],
        "lambda_choice": f"cheapest ({CV_FOLDS}-fold cross-validated on val) with cross-validated accuracy >= full network ({full_val_accuracy}) - {ALLOWED_VAL_DROP}",
        "d2nnc": exported.checks,
        "torch_vs_ort": exported.torch_vs_ort,
    }
    meta = {
        "paper": "T. Bolukbasi, J. Wang, O. Dekel, V. Saligrama, \"Adaptive Neural Networks for Efficient "
        "Inference\", ICML 2017 (early-exit policy)",
        "architecture": "CNN: block1 = conv3x3 1->16 @16x16, conv3x3 16->16 stride 2 (@8x8); block2 = conv3x3 "
        "16->32, 32->32 @8x8; block3 = conv3x3 32->40, 40->40 @8x8 (each conv + BN + ReLU). Exit k = average "
        "pool to 2x2 + Linear (64->10, 128->10); final = global average pool + Linear 40->10. Policy k = "
        "Linear over [softmax of exit k, its max] (11 inputs) -> 1.",
        "description": "Early exits with learned exit policies. At exit k, exit_k = Sigmoid(policy_k(...)) > "
        "exit{k}_threshold ([N, 1] per sample); logits = Where(exit1, exit1 logits, Where(exit2, exit2 logits, "
        "final logits)) in dynamic.onnx, nested If at batch 1 in if.onnx. Knobs: exit1_threshold / "
        "exit2_threshold - the policy probability needed to exit at exit 1 / 2 (0.5 = the policy as "
        "learned; raise towards 1 for accuracy, lower for speed).",
        "knobs": {"exit1_threshold": t1, "exit2_threshold": t2},
        "knob_adjustments": knob_adjustments({"exit1_threshold": 0.5, "exit2_threshold": 0.5}, {"exit1_threshold": t1, "exit2_threshold": t2}),
        "train": {
            "seed": seed,
            "network": {
                "loss": "sum of the cross-entropies of exit 1, exit 2 and the final head (joint)",
                "exit_loss_weights": list(exit_loss_weights),
                "optimizer": "AdamW",
                "lr": lr,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "epochs": epochs,
                "batch_size": BATCH_SIZE,
                "hard_fraction_per_batch": HARD_FRACTION,
            },
            "policies": {
                "method": "bottom-up weighted binary classification (exit 2 first, then exit 1 against the "
                "learned exit-2 policy); cost = 0/1 error + lambda * executed fraction of the full network; "
                "label = the cheaper action, weight = |cost difference|",
                "classifier": "sklearn LogisticRegression on standardised features (folded into the Linear); C per "
                "lambda from POLICY_C_GRID, the lowest 5-fold cross-validated error + lambda * cost",
                "C_grid": list(POLICY_C_GRID),
                "C_default": chosen["C"],
                "data": "validation split",
                "lambdas": list(LAMBDAS),
                "lambda_default": chosen["lambda"],
            },
        },
        "results": results,
    }
    return finish(name, models_dir, meta, exported, model.segment_costs())


# --------------------------------------------------------------------------
# adaptive_select: Bolukbasi et al., network selection
# --------------------------------------------------------------------------


class AdaptiveSelection(nn.Module):
    """A cheap CNN (conv 1->16 stride 2, conv 16->32, both at 8x8, then a
    Linear on the output average-pooled to 2x2) always runs; an expensive CNN
    (conv 1->24 @16x16, 24->32 stride 2, 32->32, 32->48 @8x8, global pool,
    Linear), which reads the image itself, runs only for the samples the
    policy sends to it: use_expensive = sigmoid(policy) > expensive_threshold,
    the policy being a Linear on the cheap network's class probabilities and
    top probability."""

    def __init__(self):
        super().__init__()
        self.cheap = nn.Sequential(conv_bn_relu(1, 16, stride=2), conv_bn_relu(16, 32))
        self.cheap_head = nn.Linear(32 * 4, data.NUM_CLASSES)
        self.expensive = nn.Sequential(
            conv_bn_relu(1, 24), conv_bn_relu(24, 32, stride=2), conv_bn_relu(32, 32), conv_bn_relu(32, 48)
        )
        self.expensive_head = nn.Linear(48, data.NUM_CLASSES)
        self.policy = nn.Linear(data.NUM_CLASSES + 1, 1)
        self.register_buffer("expensive_threshold", torch.tensor(0.5))
        self.branching = "where"

    def cheap_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cheap_head(F.avg_pool2d(self.cheap(x), 4).flatten(1))

    def expensive_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.expensive_head(global_pool(self.expensive(x)))

    def cheap_and_policy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cheap logits, policy features, probability of using the expensive network [N, 1])."""
        h = self.cheap(x)
        logits = self.cheap_head(F.avg_pool2d(h, 4).flatten(1))
        g = policy_features(logits)
        return logits, g, torch.sigmoid(self.policy(g))

    def analyse(self, x: torch.Tensor) -> dict:
        cheap, g, p = self.cheap_and_policy(x)
        return {"cheap": cheap, "expensive": self.expensive_logits(x), "g": g, "p": p[:, 0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branching == "cond":
            return self.forward_cond(x)
        cheap, _, p = self.cheap_and_policy(x)
        use_expensive = p > self.expensive_threshold  # [N, 1]
        return torch.where(use_expensive, self.expensive_logits(x), cheap)

    def forward_cond(self, x: torch.Tensor) -> torch.Tensor:
        """Batch 1: the expensive network inside a torch.cond branch (ONNX If)."""
        cheap, _, p = self.cheap_and_policy(x)
        use_expensive = (p > self.expensive_threshold).reshape(())

        def run_expensive(x, cheap):
            return self.expensive_logits(x)

        def keep_cheap(x, cheap):
            return cheap.clone()

        return torch.cond(use_expensive, run_expensive, keep_cheap, (x, cheap))

    def segment_costs(self) -> dict[str, int]:
        x = torch.zeros(1, 1, data.IMAGE, data.IMAGE)
        return {
            "cheap+policy": multiply_adds_per_sample(
                Flops(lambda x: self.cheap_and_policy(x)[2], self.cheap, self.cheap_head, self.policy), x
            ),
            "expensive": multiply_adds_per_sample(Flops(self.expensive_logits, self.expensive, self.expensive_head), x),
        }


def train_adaptive_select(splits: dict[str, data.Split], models_dir: pathlib.Path) -> dict:
    name, seed = "adaptive_select", SEEDS["adaptive_select"]
    started = time.time()
    torch.manual_seed(seed)
    model = AdaptiveSelection()
    epochs, lr = 30, 3e-3

    # 1. The two networks, each trained on its own (the paper selects among
    #    independently pre-trained networks).
    cheap_params = list(model.cheap.parameters()) + list(model.cheap_head.parameters())
    train_supervised(model, cheap_params, splits, lambda xb, yb: F.cross_entropy(model.cheap_logits(xb), yb), epochs=epochs, lr=lr, seed=seed)
    log(name, f"cheap network trained ({time.time() - started:.0f}s)")
    expensive_params = list(model.expensive.parameters()) + list(model.expensive_head.parameters())
    train_supervised(
        model, expensive_params, splits, lambda xb, yb: F.cross_entropy(model.expensive_logits(xb), yb), epochs=epochs, lr=lr, seed=seed + 1
    )
    log(name, f"expensive network trained ({time.time() - started:.0f}s)")

    # 2. The policy on the validation split, for each lambda: the weighted
    #    binary problem "stop at the cheap network" vs "also run the
    #    expensive one" (the one-decision case of the early-exit reduction).
    costs = model.segment_costs()
    full_cost = sum(costs.values())
    path_costs = np.array([costs["cheap+policy"], full_cost]) / full_cost
    val = in_batches(model.analyse, splits["val"].x)
    y_val, y_test, hard = splits["val"].y, splits["test"].y, splits["test"].hard

    def predictions(out: dict) -> np.ndarray:
        return np.stack([out["cheap"].argmax(1), out["expensive"].argmax(1)])

    val_correct = predictions(val) == y_val[None]
    full_val_accuracy = fraction(val_correct[1])

    def install(stop_policy) -> None:
        # The learned policy says when to *stop* at the cheap network; the
        # exported decision is its negation, "use the expensive network".
        w, b = stop_policy
        set_linear(model.policy, -w, -b)

    sweep, policies_by_lambda = [], {}
    for lam in LAMBDAS:
        entry = cross_validated_setting(lam, [val["g"]], val_correct, predictions(val), y_val, path_costs, seed)
        (stop_policy,) = learn_policies_bottom_up([val["g"]], val_correct.astype(np.float64), path_costs, lam, entry["C"])
        policies_by_lambda[lam] = stop_policy
        install(stop_policy)
        test = in_batches(model.analyse, splits["test"].x)
        route = (test["p"] > 0.5).astype(np.int64)
        correct, cost = evaluate_routes(route, predictions(test), y_test, path_costs)
        entry.update(test_accuracy=fraction(correct), test_cost=fraction(cost))
        sweep.append(entry)
        log(name, f"lambda {lam}: {entry}")
    chosen = pick_lambda(sweep, full_val_accuracy)
    install(policies_by_lambda[chosen["lambda"]])

    val, test = (in_batches(model.analyse, splits[s].x) for s in ("val", "test"))
    model.expensive_threshold.fill_(knob_clear_of_decisions(0.5, np.concatenate([val["p"], test["p"]])))
    threshold = float(model.expensive_threshold)
    route = (test["p"] > threshold).astype(np.int64)
    preds = predictions(test)
    correct, cost = evaluate_routes(route, preds, y_test, path_costs)

    knobs = ["expensive_threshold"]
    exported = export_and_check(model, models_dir / name, knobs, splits["test"])
    results = {
        "test_accuracy": accuracy_split(correct, hard),
        "test_accuracy_full": accuracy_split(preds[1] == y_test, hard),
        "test_accuracy_cheap_alone": accuracy_split(preds[0] == y_test, hard),
        "mean_cost": round(float(cost.mean()), 4),
        "mean_cost_split": cost_split(cost, hard),
        "routes": route_summary(route, ["cheap", "expensive"], hard),
        "path_costs": {"cheap": round(path_costs[0], 4), "cheap+expensive": 1.0},
        "expensive_over_cheap_flops": round(costs["expensive"] / costs["cheap+policy"], 2),
        "full_network_flops": int(full_cost),
        "lambda_sweep": sweep,
        "lambda_default": chosen["lambda"],
        "lambda_choice": f"cheapest ({CV_FOLDS}-fold cross-validated on val) with cross-validated accuracy >= expensive network ({full_val_accuracy}) - {ALLOWED_VAL_DROP}",
        "d2nnc": exported.checks,
        "torch_vs_ort": exported.torch_vs_ort,
    }
    meta = {
        "paper": "T. Bolukbasi, J. Wang, O. Dekel, V. Saligrama, \"Adaptive Neural Networks for Efficient "
        "Inference\", ICML 2017 (network selection)",
        "architecture": "cheap CNN: conv3x3 1->16 stride 2, conv3x3 16->32 (@8x8), average pool to 2x2, Linear "
        "128->10; expensive CNN on the image: conv3x3 1->24 @16x16, 24->32 stride 2, 32->32, 32->48 (@8x8), "
        "global average pool, Linear 48->10 (each conv + BN + ReLU); policy: Linear over [cheap softmax, "
        "its max] (11 inputs) -> 1.",
        "description": "Network selection. The cheap network always runs; use_expensive = Sigmoid(policy(...)) > "
        "expensive_threshold ([N, 1] per sample); logits = Where(use_expensive, expensive(x), cheap logits) "
        "in dynamic.onnx, an If at batch 1 in if.onnx. Knob: expensive_threshold - the policy probability "
        "needed to run the expensive network (0.5 = the policy as learned; lower it for accuracy, raise it "
        "for speed).",
        "knobs": {"expensive_threshold": threshold},
        "knob_adjustments": knob_adjustments({"expensive_threshold": 0.5}, {"expensive_threshold": threshold}),
        "train": {
            "seed": seed,
            "networks": {
                "loss": "cross-entropy, each network on its own",
                "optimizer": "AdamW",
                "lr": lr,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "epochs": epochs,
                "batch_size": BATCH_SIZE,
                "hard_fraction_per_batch": HARD_FRACTION,
            },
            "policy": {
                "method": "weighted binary classification: cost of stopping = cheap 0/1 error + lambda * cheap "
                "cost, cost of going on = expensive 0/1 error + lambda * (cheap + expensive) cost; label = the "
                "cheaper action, weight = |cost difference|",
                "classifier": "sklearn LogisticRegression on standardised features (folded into the Linear); C per "
                "lambda from POLICY_C_GRID, the lowest 5-fold cross-validated error + lambda * cost",
                "C_grid": list(POLICY_C_GRID),
                "C_default": chosen["C"],
                "data": "validation split",
                "lambdas": list(LAMBDAS),
                "lambda_default": chosen["lambda"],
            },
        },
        "results": results,
    }
    return finish(name, models_dir, meta, exported, model.segment_costs())


TRAINERS: dict[str, Callable[[dict[str, data.Split], pathlib.Path], dict]] = {
    "dgates_resnet": train_dgates_resnet,
    "adaptive_exit": train_adaptive_exit,
    "adaptive_select": train_adaptive_select,
}


# --------------------------------------------------------------------------
# NOTES.md per model (numbers filled in from the run, so they never go stale)
# --------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def points(x: float) -> str:
    """An accuracy difference in percentage points."""
    return f"{100 * x:.1f} percentage point" + ("" if abs(100 * x - 1) < 1e-9 else "s")


def results_table(meta: dict, route_names: list[str]) -> str:
    r = meta["results"]
    acc, full, cost = r["test_accuracy"], r["test_accuracy_full"], r["mean_cost_split"]
    lines = [
        "| test samples | accuracy, default knobs | accuracy, full network | mean cost (of full) | "
        + " | ".join(f"take {n}" for n in route_names)
        + " |",
        "|---|---|---|---|" + "---|" * len(route_names),
    ]
    for part in ("overall", "easy", "hard"):
        shares = [
            pct((r["routes"][n]["easy"] + r["routes"][n]["hard"]) / 2) if part == "overall" else pct(r["routes"][n][part])
            for n in route_names
        ]
        lines.append(f"| {part} | {pct(acc[part])} | {pct(full[part])} | {pct(cost[part])} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


def d2nnc_lines(meta: dict) -> str:
    d = meta["results"]["d2nnc"]
    sizes = meta["files"]["sizes_bytes"]
    return (
        f"d2nnc reproduces ONNX Runtime on both files (max |diff| {d['dynamic']['max_abs_diff_vs_ort']:.2g} on "
        f"{d['dynamic']['samples']} test samples batched, {d['if']['max_abs_diff_vs_ort']:.2g} on "
        f"{d['if']['samples']} one by one) and executes {pct(d['dynamic']['flops_ratio'])} of the dense FLOPs "
        f"on that batch. dynamic.onnx is {sizes['dynamic.onnx'] / 1024:.0f} KB, if.onnx "
        f"{sizes['if.onnx'] / 1024:.0f} KB."
    )


def sweep_table(meta: dict) -> str:
    lines = [
        "| lambda | C | val accuracy (cross-validated) | val cost (cross-validated) | test accuracy | test cost |",
        "|---|---|---|---|---|---|",
    ]
    for s in meta["results"]["lambda_sweep"]:
        mark = " (default)" if s["lambda"] == meta["results"]["lambda_default"] else ""
        lines.append(
            f"| {s['lambda']}{mark} | {s['C']} | {pct(s['val_cv_accuracy'])} | {pct(s['val_cv_cost'])} | "
            f"{pct(s['test_accuracy'])} | {pct(s['test_cost'])} |"
        )
    return "\n".join(lines)


def knob_lines(meta: dict) -> str:
    knobs = ", ".join(f"`{k}` = {v:.6g}" for k, v in meta["knobs"].items())
    moved = meta["knob_adjustments"]["moved"]
    note = (
        " Moved off a near-tie with a val/test decision value: "
        + ", ".join(f"`{k}` {v['chosen']:.6g} -> {v['shipped']:.6g}" for k, v in moved.items())
        + "."
        if moved
        else " No default needed moving off a near-tie (every val/test decision value is at least 1e-3 away)."
    )
    return f"Knobs (defaults): {knobs}.{note}"


def notes_dgates_resnet(meta: dict) -> str:
    r = meta["results"]
    choice = r["threshold_choice"]
    return f"""# dgates_resnet - decision gates (Shafiee et al.)

**Paper**: {meta["paper"]}.

**What it is.** A small ResNet (stem at 16x16, then three one-block stages at
8x8 with 16/24/40 channels) with a *decision gate* (d-gate) after stages 1
and 2. A d-gate is a linear SVM on the stage's pooled feature maps (stage 1
average-pooled to 2x2, stage 2 globally); its confidence is its top SVM
score. If the confidence clears the gate's
threshold, the sample leaves with the SVM's scores as logits; otherwise it
goes on. Leaving at d-gate 1 costs {pct(r["path_costs"]["dgate1"])} of the full
network, at d-gate 2 {pct(r["path_costs"]["dgate2"])}
({r["full_network_flops"]:,} FLOPs for the whole network, convolutions and
Linear layers).

dynamic.onnx: `exit_k = ReduceMax(scores_k) > dgate{{k}}_threshold` per sample,
merged by `Where(exit1, scores1, Where(exit2, scores2, final))`; if.onnx: the
same at batch 1 as nested `If` (stage 2 inside the first else branch, stage
3 inside the second).

**How it was trained.** The backbone alone first (cross-entropy on the final
head, {meta["train"]["backbone"]["epochs"]} epochs AdamW, half of each batch
made hard). Then, with the backbone frozen, each d-gate is fitted as a
one-vs-rest linear SVM with the hinge loss (scikit-learn LinearSVC,
C={meta["train"]["dgates"]["C"]}) on the pooled features of the training images (clean plus
three re-augmented copies). The two thresholds are then chosen together on
the validation split: the pair with the lowest mean cost whose accuracy is
within {points(ALLOWED_VAL_DROP)} of the full network (val: {pct(choice["val_accuracy"])} against
{pct(choice["val_accuracy_full"])}, cost {pct(choice["val_cost"])}).

**Results** (test split, computed in torch; "take ..." is the share of samples leaving there):

{results_table(meta, ["dgate1", "dgate2", "full"])}

The d-gates on their own would score {pct(r["test_accuracy_exit_classifiers_alone"]["dgate1_alone"]["overall"])}
(gate 1) and {pct(r["test_accuracy_exit_classifiers_alone"]["dgate2_alone"]["overall"])} (gate 2) on all test
samples; the thresholds let out only the samples they are sure of.
{d2nnc_lines(meta)}

{knob_lines(meta)} Raising a threshold sends more samples deeper (more
accurate, slower); a very large value disables that gate.

**Differences from the paper.** The paper adds d-gates to large pre-trained
networks (ResNet-101 and DenseNet-201 on CIFAR-10) and fits them on the
output of intermediate layers; here the network is a 3-stage toy on 16x16
digits. d-gate 1 reads stage 1 average-pooled to 2x2 rather than globally
pooled: globally pooled stage-1 features leave a linear SVM at about 70%
test accuracy, too weak to let anything out. The d-gate
confidence is the top one-vs-rest SVM score, the thresholds are picked on
validation data for an accuracy drop of at most {points(ALLOWED_VAL_DROP)} (the paper reports
drops of about 1-2%).
"""


def notes_adaptive_exit(meta: dict) -> str:
    r = meta["results"]
    return f"""# adaptive_exit - adaptive early exits (Bolukbasi et al.)

**Paper**: {meta["paper"]}.

**What it is.** A plain CNN in three blocks (16 channels down to 8x8, then 32,
then 40 at 8x8) with an exit classifier (the block output average-pooled to
2x2, then a Linear) after blocks 1 and 2. At each exit a policy gamma_k - a
Linear over the exit's class probabilities and its top probability - decides
per sample whether to stop: `Sigmoid(gamma_k) > exit{{k}}_threshold`. Stopping at exit 1
costs {pct(r["path_costs"]["exit1"])} of the full network, at exit 2
{pct(r["path_costs"]["exit2"])} ({r["full_network_flops"]:,} FLOPs in all).
dynamic.onnx merges the exits with nested `Where`, if.onnx with nested `If`.

**How it was trained.** The network and its two exits jointly (sum of the
three cross-entropies, {meta["train"]["network"]["epochs"]} epochs AdamW, half of each batch made hard).
The policies follow the paper's reduction to weighted binary classification,
learned bottom-up on the validation split: for the last decision (exit 2),
the cost of stopping is the exit's 0/1 error + lambda x its cost and the cost
of going on is the final classifier's error + lambda x 1; each sample is
labelled with the cheaper action, weighted by the cost difference, and a
weighted logistic regression is fitted. Exit 1 is then learned the same way
against what the learned exit-2 policy does. lambda was swept (for each
lambda the regularisation C with the lowest cross-validated error + lambda x
cost); the default is the cheapest lambda whose validation accuracy,
estimated by {CV_FOLDS}-fold cross-validation on the validation split (in-sample
numbers would flatter the policies), is within {points(ALLOWED_VAL_DROP)} of the full network's
(or the most accurate lambda if none is). The exported policies are then
fitted on the whole validation split:

{sweep_table(meta)}

**Results** at lambda = {r["lambda_default"]} and the default thresholds (test split, computed in torch; "take ..." is the share of samples leaving there):

{results_table(meta, ["exit1", "exit2", "full"])}

The exit classifiers alone score {pct(r["test_accuracy_exit_classifiers_alone"]["exit1_alone"]["overall"])} (exit 1) and
{pct(r["test_accuracy_exit_classifiers_alone"]["exit2_alone"]["overall"])} (exit 2).
{d2nnc_lines(meta)}

{knob_lines(meta)} A threshold is the policy probability needed to stop at
that exit: 0.5 is the policy as learned, higher is more accurate and slower.

**Differences from the paper.** The paper attaches exits to pre-trained
ImageNet networks; here the small network and its exits are trained jointly
(the sum of the exits' losses), so that the shallow exits are worth taking.
The paper's weighted 0/1 problem is solved with a logistic surrogate, and the
policies see only the exit's class probabilities and their maximum (with the
pooled feature maps added they did worse on held-out data). The policies are
fitted on the validation split rather than the training split: the networks
were fitted to the training images, so their errors there would not be
representative.
"""


def notes_adaptive_select(meta: dict) -> str:
    r = meta["results"]
    return f"""# adaptive_select - adaptive network selection (Bolukbasi et al.)

**Paper**: {meta["paper"]}.

**What it is.** Two separately trained CNNs: a cheap one (two convolutions at
8x8, {pct(r["path_costs"]["cheap"])} of the cost of running both) that always runs, and an expensive
one ({r["expensive_over_cheap_flops"]}x the cheap network's FLOPs: four convolutions, the first at 16x16)
that reads the image itself. A policy on the cheap network's class
probabilities and their maximum decides per sample whether to run the
expensive network too: `use_expensive = Sigmoid(policy) > expensive_threshold`.
dynamic.onnx: `Where(use_expensive, expensive(x), cheap_logits)`, so d2nnc
runs the expensive network only on the rows that need it; if.onnx: an `If` at
batch 1.

**How it was trained.** Each network on its own (cross-entropy,
{meta["train"]["networks"]["epochs"]} epochs AdamW, half of each batch made hard), as the paper selects among
independently trained networks. The policy is the paper's weighted binary
classification on the validation split: stopping costs the cheap network's
0/1 error + lambda x its cost, going on costs the expensive network's error
+ lambda x (cheap + expensive); label = the cheaper action, weight = the
cost difference (so the samples that matter are those the cheap network gets
wrong and the expensive one right); weighted logistic regression. lambda was
swept (for each lambda the regularisation C with the lowest cross-validated
error + lambda x cost); the default is the cheapest lambda whose validation
accuracy, estimated by {CV_FOLDS}-fold cross-validation on the validation split,
is within {points(ALLOWED_VAL_DROP)} of the expensive network alone (or the most accurate lambda
if none is). The exported policy is then fitted on the whole validation
split:

{sweep_table(meta)}

**Results** at lambda = {r["lambda_default"]} and the default threshold (test split, computed in torch; "take ..." is the share of samples answered by that network):

{results_table(meta, ["cheap", "expensive"])}

The cheap network alone scores {pct(r["test_accuracy_cheap_alone"]["overall"])}
(easy {pct(r["test_accuracy_cheap_alone"]["easy"])}, hard {pct(r["test_accuracy_cheap_alone"]["hard"])}); "full network" above is the
expensive network's answer for every sample.
{d2nnc_lines(meta)}

{knob_lines(meta)} Lower the threshold to send more samples to the expensive
network (more accurate, slower), raise it to keep more on the cheap one.

**Differences from the paper.** The paper selects among AlexNet, GoogLeNet and
ResNet-50 on ImageNet with a chain of policies; here there are two small
networks and one policy. The weighted 0/1 problem is solved with a logistic
surrogate, on the validation split.
"""


NOTES: dict[str, Callable[[dict], str]] = {
    "dgates_resnet": notes_dgates_resnet,
    "adaptive_exit": notes_adaptive_exit,
    "adaptive_select": notes_adaptive_select,
}


def main(names: list[str]) -> int:
    """Train the named models (default: all three) as train_all.py would."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    unknown = [n for n in names if n not in TRAINERS]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {sorted(TRAINERS)}", file=sys.stderr)
        return 2
    data_dir = pathlib.Path(__file__).resolve().parent / "data"
    if not (data_dir / "test.npz").exists():
        # train_all.py normally writes it; the bytes are the same either way.
        data.write_data(data_dir)
    export.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    for name in names or list(TRAINERS):
        started = time.time()
        meta = TRAINERS[name](data.load_splits(), export.MODELS_DIR)
        r = meta["results"]
        print(
            f"{name}: test accuracy {r['test_accuracy']['overall']:.4f} (full {r['test_accuracy_full']['overall']:.4f}), "
            f"easy {r['test_accuracy']['easy']:.4f}, hard {r['test_accuracy']['hard']:.4f}, "
            f"mean cost {r['mean_cost']:.3f}, {time.time() - started:.0f}s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
