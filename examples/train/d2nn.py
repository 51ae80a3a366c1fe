"""D2NN: the four dynamic networks of Liu & Deng (AAAI 2018), trained for real.

Liu, L. and Deng, J. "Dynamic Deep Neural Networks: Optimizing
Accuracy-Efficiency Trade-offs by Selective Execution", AAAI 2018.

A D2NN is a network of *regular modules* (convolutions, classifiers) and
*control modules* (controllers). A controller looks at the features computed
so far and decides, per sample, which of the next modules to execute. This
file trains the paper's four designs on the digits of data.py:

* d2nn_highlow   - a shared stem, then a controller picks the low- or the
                   high-capacity branch;
* d2nn_cascade   - three classifiers of increasing capacity; after each but
                   the last a controller decides to stop or to continue;
* d2nn_chain     - a chain of residual blocks, each of which its controller
                   may skip;
* d2nn_hierarchy - coarse to fine: a root module scores three groups of
                   similar digits and one controller per group decides
                   whether to expand it with that group's fine classifier.

Training follows the paper: the regular modules learn by back-propagation
through the path that was executed, the controllers by Q-learning. Each
controller outputs the Q-values of its two actions from a state (pooled
features, detached so that controllers and regular modules learn
separately); actions are chosen epsilon-greedily (epsilon decays linearly
from 1 to 0.05); at the end of an episode the reward is
    r = lambda * A + (1 - lambda) * E,
A = 1 if the final prediction is right else 0 and E = -(multiply-adds of the
executed modules / multiply-adds of the whole network). A decision followed by
another decision bootstraps from that controller's max Q (gamma = 1); the last
one regresses on r. The regular modules are pre-trained first with every
module executed (the chain with random routes), as in the paper.

Exported, each controller's decision is `(q_run - q_skip) > margin` with a
scalar buffer `margin` (default 0.0: the greedy policy of the trained
controller). Raising a margin makes the network cheaper, lowering it more
accurate; -inf runs everything. `dynamic.onnx` gates modules with `Mul` by a
0/1 `Cast` of the decision (and `Not` for the other action): the D2NN merge
g_a * a + g_b * b. `if.onnx` is the same network at batch 1 with torch.cond.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pathlib
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import IMAGE, NUM_CLASSES, Split, augment_hard
from export import d2nnc_check, export_dynamic, export_if, ort_run, save_model

PAPER = (
    "Lanlan Liu and Jia Deng. Dynamic Deep Neural Networks: Optimizing "
    "Accuracy-Efficiency Trade-offs by Selective Execution. AAAI 2018 "
    "(arXiv:1701.00299)."
)

# Training hyper-parameters shared by the four architectures.
SEED = 0
BATCH = 64
PRETRAIN_EPOCHS = 14
PRETRAIN_LR = 3e-3
JOINT_EPOCHS = 8
JOINT_LR_MODULES = 5e-4
JOINT_LR_CONTROLLERS = 3e-3
EPSILON_START = 1.0
EPSILON_END = 0.05
# Epsilon reaches its final value after this fraction of the joint steps.
EPSILON_DECAY_FRACTION = 0.75
HARD_FRACTION = 0.5
LAMBDAS = (0.5, 0.8, 0.9, 0.93, 0.96, 0.98)
# Pick the cheapest lambda whose val accuracy is within this of the best.
ACCURACY_TOLERANCE = 0.01
# A decision value closer than this to its knob could flip between back ends.
DECISION_CLEARANCE = 1e-3


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class PooledHead(nn.Module):
    """A classifier on 8x8 features: 4x4 average pooling to a 2x2 grid, then a
    Linear layer. Keeping the coarse layout (rather than pooling globally)
    matters for digits: it is what lets the cheap branches be accurate."""

    def __init__(self, channels: int, outputs: int):
        super().__init__()
        self.pool = nn.AvgPool2d(IMAGE // 4)
        self.fc = nn.Linear(channels * 4, outputs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(h), 1))


class Controller(nn.Module):
    """A D2NN control module: the Q-values [N, 2] of its two actions
    (0 = skip / stop / low, 1 = run / continue / high) from a state vector.

    The state is standardised with statistics fixed after pre-training
    (`fit_state_statistics`): features of very different scales otherwise
    make the small differences between the two Q-values hard to learn."""

    def __init__(self, state_dim: int, hidden: int = 16):
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_inv_std", torch.ones(state_dim))
        self.net = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def fit_state_statistics(self, states: torch.Tensor) -> None:
        self.state_mean.copy_(states.mean(dim=0))
        self.state_inv_std.copy_(1.0 / (states.std(dim=0) + 1e-3))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net((state - self.state_mean) * self.state_inv_std)


def pooled_state(h: torch.Tensor) -> torch.Tensor:
    """A controller's view of feature maps: per-channel mean and max. The max
    reacts to the strokes' contrast and to noise, which the mean averages out."""
    return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


def run_margin(q: torch.Tensor) -> torch.Tensor:
    """The decision value of a controller, [N, 1]: Q(run) - Q(skip)."""
    return q[:, 1:2] - q[:, 0:1]


def as_scalar(value: torch.Tensor) -> torch.Tensor:
    """A batch-1 decision value as a 0-d tensor, the condition torch.cond needs
    (a Reshape, which d2nnc looks through, rather than an indexing Gather)."""
    return value.reshape(())


# --------------------------------------------------------------------------
# cost model: multiply-adds per component, from the layer shapes
# --------------------------------------------------------------------------


def multiply_adds(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-adds of the Conv2d and Linear layers a module runs on `inputs`
    (batch 1), counted with forward hooks from the output shapes."""
    total = 0

    def count(layer: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            total += output[0].numel() * per_output
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------
# rollouts: what one episode executed, for the losses
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Decision:
    """One controller's decision over a batch during training."""

    q: torch.Tensor  # [N, 2] Q-values (with gradient, controller parameters only)
    action: torch.Tensor  # [N] bool: True = run / continue / high
    reached: torch.Tensor  # [N] bool: the sample got to this controller
    # Q-values [N, 2] of the controller that comes next for the samples in
    # `bootstraps`; the others end their episode here and learn from r.
    next_q: torch.Tensor | None = None
    bootstraps: torch.Tensor | None = None  # [N] bool


@dataclasses.dataclass
class Rollout:
    output: torch.Tensor  # [N, 10] logits (or log-probabilities) of the executed path
    cost: torch.Tensor  # [N] executed multiply-adds / full network multiply-adds
    decisions: list[Decision]


Policy = Callable[[int, torch.Tensor], torch.Tensor]  # (controller index, Q [N, 2]) -> action [N] bool


def greedy_policy(margins: torch.Tensor) -> Policy:
    """The exported decision rule: run where Q(run) - Q(skip) > margin."""
    return lambda k, q: run_margin(q)[:, 0] > margins[k]


def epsilon_greedy_policy(epsilon: float, generator: torch.Generator) -> Policy:
    def choose(k: int, q: torch.Tensor) -> torch.Tensor:
        greedy = run_margin(q)[:, 0] > 0
        explore = torch.rand(q.shape[0], generator=generator) < epsilon
        random_action = torch.rand(q.shape[0], generator=generator) < 0.5
        return torch.where(explore, random_action, greedy)

    return choose


def fixed_policy(action: bool) -> Policy:
    return lambda k, q: torch.full((q.shape[0],), action, dtype=torch.bool)


def random_policy(p_run: float, generator: torch.Generator) -> Policy:
    return lambda k, q: torch.rand(q.shape[0], generator=generator) < p_run


# --------------------------------------------------------------------------
# the four architectures
# --------------------------------------------------------------------------


class D2NN(nn.Module):
    """What the trainer needs from an architecture.

    `rollout(x, policy)` runs every module on the whole batch but combines
    them with 0/1 masks, so that outputs, gradients and costs are those of
    the executed path (dense compute keeps training simple; the compiled
    model skips for real). `forward` is the exported network: the form
    (`"mul"` or `"cond"`) is chosen with `export_form` before export."""

    knob_names: tuple[str, ...] = ()
    export_form = "mul"

    def controllers(self) -> list[Controller]:
        raise NotImplementedError

    def rollout(self, x: torch.Tensor, policy: Policy) -> Rollout:
        raise NotImplementedError

    def margins(self) -> torch.Tensor:
        return torch.stack([getattr(self, n) for n in self.knob_names])

    def set_margins(self, values) -> None:
        for name, v in zip(self.knob_names, values):
            getattr(self, name).fill_(float(v))

    def register_knobs(self) -> None:
        for name in self.knob_names:
            self.register_buffer(name, torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_form == "cond":
            return self.forward_cond(x)
        return self.forward_mul(x)

    def component_costs(self) -> dict[str, int]:
        raise NotImplementedError

    def cost_of(self, executed: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample fraction of the full network's multiply-adds, given
        which components ran (a 0/1 or bool tensor [N] per component)."""
        costs = self._costs
        full = sum(costs.values())
        total = sum(costs[name] * mask.to(torch.float32) for name, mask in executed.items())
        return total / full

    def init_costs(self) -> None:
        self._costs = self.component_costs()


class HighLow(D2NN):
    """High-low capacity D2NN: a shared stem; a controller on the pooled stem
    features picks, per sample, the low-capacity branch (one strided conv at
    8x8) or the high-capacity one (three convs, the first at 16x16).

    Exported merge: g_high * high(h) + g_low * low(h) with
    g_high = Cast(Greater(q_high - q_low, high_margin)) and g_low = Cast(Not(...))."""

    knob_names = ("high_margin",)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(1, 16), conv_bn_relu(16, 16))
        self.controller = Controller(2 * 16)
        self.low = nn.Sequential(conv_bn_relu(16, 16, 2), PooledHead(16, NUM_CLASSES))
        self.high = nn.Sequential(
            conv_bn_relu(16, 32), conv_bn_relu(32, 32, 2), conv_bn_relu(32, 32), PooledHead(32, NUM_CLASSES)
        )
        self.register_knobs()
        self.init_costs()

    def controllers(self):
        return [self.controller]

    def component_costs(self):
        x = torch.zeros(1, 1, IMAGE, IMAGE)
        h = self.stem.eval()(x)
        return {
            "stem": multiply_adds(self.stem, (x,)),
            "controller": multiply_adds(self.controller, (torch.zeros(1, 2 * 16),)),
            "low": multiply_adds(self.low, (h,)),
            "high": multiply_adds(self.high, (h,)),
        }

    def rollout(self, x, policy):
        h = self.stem(x)
        q = self.controller(pooled_state(h).detach())
        high = policy(0, q)
        g = high.to(x.dtype)[:, None]
        output = g * self.high(h) + (1 - g) * self.low(h)
        ones = torch.ones_like(high)
        cost = self.cost_of({"stem": ones, "controller": ones, "low": ~high, "high": high})
        return Rollout(output, cost, [Decision(q, high, ones)])

    def forward_mul(self, x):
        h = self.stem(x)
        q = self.controller(pooled_state(h))
        use_high = run_margin(q) > self.high_margin
        g_high, g_low = use_high.to(x.dtype), (~use_high).to(x.dtype)
        return g_low * self.low(h) + g_high * self.high(h)

    def forward_cond(self, x):
        h = self.stem(x)
        q = self.controller(pooled_state(h))
        use_high = as_scalar(run_margin(q)) > self.high_margin
        return torch.cond(use_high, lambda h: self.high(h), lambda h: self.low(h), (h,))


class Cascade(D2NN):
    """Cascade D2NN: three independent classifiers of increasing capacity
    (about 0.16, 0.6 and 2.4 M multiply-adds). After the first and the second
    a controller, looking at that classifier's pooled features and softmax,
    decides per sample to stop there (use its prediction) or to continue.

    Exported merge: g_stop1 * y1 + g_go1 * (g_stop2 * y2 + g_go2 * y3), each
    g_go = Cast(Greater(q_go - q_stop, continueK_margin)), g_stop = Cast(Not(...))."""

    knob_names = ("continue1_margin", "continue2_margin")

    def __init__(self):
        super().__init__()
        self.features1 = nn.Sequential(conv_bn_relu(1, 16, 2), conv_bn_relu(16, 16))
        self.features2 = nn.Sequential(conv_bn_relu(1, 16), conv_bn_relu(16, 24, 2), conv_bn_relu(24, 24))
        self.features3 = nn.Sequential(
            conv_bn_relu(1, 24), conv_bn_relu(24, 24), conv_bn_relu(24, 32, 2), conv_bn_relu(32, 32)
        )
        self.head1, self.head2, self.head3 = PooledHead(16, NUM_CLASSES), PooledHead(24, NUM_CLASSES), PooledHead(32, NUM_CLASSES)
        self.controller1 = Controller(2 * 16 + NUM_CLASSES)
        self.controller2 = Controller(2 * 24 + NUM_CLASSES)
        self.register_knobs()
        self.init_costs()

    def controllers(self):
        return [self.controller1, self.controller2]

    def component_costs(self):
        x = torch.zeros(1, 1, IMAGE, IMAGE)
        costs = {}
        for k, (features, head) in enumerate(
            ((self.features1, self.head1), (self.features2, self.head2), (self.features3, self.head3)), start=1
        ):
            costs[f"classifier{k}"] = multiply_adds(nn.Sequential(features, head), (x,))
        costs["controller1"] = multiply_adds(self.controller1, (torch.zeros(1, 2 * 16 + NUM_CLASSES),))
        costs["controller2"] = multiply_adds(self.controller2, (torch.zeros(1, 2 * 24 + NUM_CLASSES),))
        return costs

    @staticmethod
    def state(h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # What the classifier saw (pooled features) and how sure it is (softmax).
        return torch.cat([pooled_state(h), torch.softmax(logits, dim=1)], dim=1)

    def stage(self, k: int, x: torch.Tensor):
        features, head = ((self.features1, self.head1), (self.features2, self.head2), (self.features3, self.head3))[k]
        h = features(x)
        return h, head(h)

    def rollout(self, x, policy):
        h1, y1 = self.stage(0, x)
        q1 = self.controller1(self.state(h1, y1).detach())
        go1 = policy(0, q1)
        h2, y2 = self.stage(1, x)
        q2 = self.controller2(self.state(h2, y2).detach())
        go2 = policy(1, q2) & go1
        _, y3 = self.stage(2, x)
        g1, g2 = go1.to(x.dtype)[:, None], go2.to(x.dtype)[:, None]
        output = (1 - g1) * y1 + g1 * ((1 - g2) * y2 + g2 * y3)
        ones = torch.ones_like(go1)
        cost = self.cost_of(
            {"classifier1": ones, "controller1": ones, "classifier2": go1, "controller2": go1, "classifier3": go2}
        )
        decisions = [
            Decision(q1, go1, ones, next_q=q2.detach(), bootstraps=go1),
            Decision(q2, go2, go1),
        ]
        return Rollout(output, cost, decisions)

    def forward_mul(self, x):
        h1, y1 = self.stage(0, x)
        go1 = run_margin(self.controller1(self.state(h1, y1))) > self.continue1_margin
        g_go1, g_stop1 = go1.to(x.dtype), (~go1).to(x.dtype)
        return g_stop1 * y1 + g_go1 * self.rest_mul(x)

    def rest_mul(self, x):
        h2, y2 = self.stage(1, x)
        go2 = run_margin(self.controller2(self.state(h2, y2))) > self.continue2_margin
        g_go2, g_stop2 = go2.to(x.dtype), (~go2).to(x.dtype)
        return g_stop2 * y2 + g_go2 * self.stage(2, x)[1]

    def forward_cond(self, x):
        h1, y1 = self.stage(0, x)
        go1 = as_scalar(run_margin(self.controller1(self.state(h1, y1)))) > self.continue1_margin
        return torch.cond(go1, self.rest_cond, lambda x, y1: y1.clone(), (x, y1))

    def rest_cond(self, x, y1):
        h2, y2 = self.stage(1, x)
        go2 = as_scalar(run_margin(self.controller2(self.state(h2, y2)))) > self.continue2_margin
        return torch.cond(go2, lambda x, y2: self.stage(2, x)[1], lambda x, y2: y2.clone(), (x, y2))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return self.body(x)


class Chain(D2NN):
    """Chain D2NN: a stem, two residual blocks at 16x16 (16 channels), a
    strided transition to 8x8 (32 channels), a third residual block at 8x8
    and a classifier. Before each block a controller on the pooled features
    decides whether to run it: x <- relu(x + g * block(x)), with
    g = Cast(Greater(q_run - q_skip, blockK_margin)) shaped [N, 1, 1, 1]."""

    knob_names = ("block1_margin", "block2_margin", "block3_margin")

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(1, 16)
        self.block1, self.block2 = ResidualBlock(16), ResidualBlock(16)
        self.transition = conv_bn_relu(16, 32, 2)
        self.block3 = ResidualBlock(32)
        self.controller1, self.controller2, self.controller3 = Controller(2 * 16), Controller(2 * 16), Controller(2 * 32)
        self.head = PooledHead(32, NUM_CLASSES)
        self.register_knobs()
        self.init_costs()

    def controllers(self):
        return [self.controller1, self.controller2, self.controller3]

    def component_costs(self):
        x16, x8 = torch.zeros(1, 16, IMAGE, IMAGE), torch.zeros(1, 32, IMAGE // 2, IMAGE // 2)
        return {
            "stem": multiply_adds(self.stem, (torch.zeros(1, 1, IMAGE, IMAGE),)),
            "block1": multiply_adds(self.block1, (x16,)),
            "block2": multiply_adds(self.block2, (x16,)),
            "transition": multiply_adds(self.transition, (x16,)),
            "block3": multiply_adds(self.block3, (x8,)),
            "head": multiply_adds(self.head, (x8,)),
            "controllers": sum(multiply_adds(c, (torch.zeros(1, c.net[0].in_features),)) for c in self.controllers()),
        }

    # The transition to 8x8 comes before the third block.
    TRANSITION_BEFORE = 2

    def stages(self):
        return ((self.controller1, self.block1), (self.controller2, self.block2), (self.controller3, self.block3))

    def rollout(self, x, policy):
        h = self.stem(x)
        qs, actions = [], []
        for k, (controller, block) in enumerate(self.stages()):
            if k == self.TRANSITION_BEFORE:
                h = self.transition(h)
            q = controller(pooled_state(h).detach())
            run = policy(k, q)
            h = F.relu(h + run.to(x.dtype)[:, None, None, None] * block(h))
            qs.append(q)
            actions.append(run)
        ones = torch.ones_like(actions[0])
        cost = self.cost_of(
            {"stem": ones, "transition": ones, "head": ones, "controllers": ones,
             "block1": actions[0], "block2": actions[1], "block3": actions[2]}
        )
        decisions = [
            Decision(qs[k], actions[k], ones, next_q=qs[k + 1].detach() if k + 1 < 3 else None,
                     bootstraps=ones if k + 1 < 3 else None)
            for k in range(3)
        ]
        return Rollout(self.head(h), cost, decisions)

    def forward_mul(self, x):
        h = self.stem(x)
        for k, (controller, block) in enumerate(self.stages()):
            if k == self.TRANSITION_BEFORE:
                h = self.transition(h)
            run = run_margin(controller(pooled_state(h))) > getattr(self, self.knob_names[k])
            g = run.to(x.dtype).reshape(-1, 1, 1, 1)
            h = F.relu(h + g * block(h))
        return self.head(h)

    def forward_cond(self, x):
        h = self.stem(x)
        for k, (controller, block) in enumerate(self.stages()):
            if k == self.TRANSITION_BEFORE:
                h = self.transition(h)
            run = as_scalar(run_margin(controller(pooled_state(h)))) > getattr(self, self.knob_names[k])
            h = torch.cond(run, lambda h, b=block: F.relu(h + b(h)), lambda h: F.relu(h), (h,))
        return self.head(h)


class Hierarchy(D2NN):
    """Hierarchical D2NN, coarse to fine. A root module (two convs, to 8x8)
    and a coarse head give log-probabilities of three groups of similar
    digits. One controller per group (state: pooled root features and the
    coarse probabilities) decides whether to expand that group; several or
    none may be expanded. An expanded group's branch (two convs at 8x8 and a
    head) gives log-probabilities of its digits given the group.

    The final output is a log-probability per digit d in group j:
        log p(j) + g_j * log p(d | j) + (1 - g_j) * (-log |G_j|),
    i.e. where a group is not expanded its probability is spread uniformly
    over its digits. It is a proper distribution whatever the controllers
    decide, and expanding a group only sharpens it. g_j = Cast(Greater(
    q_expand - q_skip, groupJ_margin)) multiplies the branch's output."""

    def __init__(self, groups: list[list[int]]):
        super().__init__()
        self.groups = [list(g) for g in groups]
        self.knob_names = tuple(f"group{j + 1}_margin" for j in range(len(groups)))
        self.root = nn.Sequential(conv_bn_relu(1, 16), conv_bn_relu(16, 32, 2))
        self.coarse = PooledHead(32, len(groups))
        self.branches = nn.ModuleList(
            nn.Sequential(conv_bn_relu(32, 20), conv_bn_relu(20, 20), PooledHead(20, len(g))) for g in groups
        )
        self.group_controllers = nn.ModuleList(Controller(2 * 32 + len(groups)) for _ in groups)
        # Output column -> position in the concatenation of the groups' digits.
        order = [d for g in groups for d in g]
        self.register_buffer("digit_order", torch.tensor([order.index(d) for d in range(NUM_CLASSES)]), persistent=False)
        self.uniform_log_prob = [-math.log(len(g)) for g in groups]
        self.register_knobs()
        self.init_costs()

    def controllers(self):
        return list(self.group_controllers)

    def component_costs(self):
        x = torch.zeros(1, 1, IMAGE, IMAGE)
        h = self.root.eval()(x)
        costs = {"root": multiply_adds(nn.Sequential(self.root, self.coarse), (x,))}
        n = len(self.groups)
        costs["controllers"] = sum(multiply_adds(c, (torch.zeros(1, 2 * 32 + n),)) for c in self.group_controllers)
        for j, branch in enumerate(self.branches):
            costs[f"group{j + 1}"] = multiply_adds(branch, (h,))
        return costs

    def trunk(self, x):
        h = self.root(x)
        coarse_log_probs = F.log_softmax(self.coarse(h), dim=1)
        state = torch.cat([pooled_state(h), coarse_log_probs.exp()], dim=1)
        return h, coarse_log_probs, state

    def merge(self, coarse_log_probs, gates, branch_log_probs):
        """Per-group columns log p(j) + g_j * log p(d|j) + (1 - g_j) * uniform, in digit order."""
        columns = []
        for j, (g, fine) in enumerate(zip(gates, branch_log_probs)):
            columns.append(coarse_log_probs[:, j : j + 1] + g * fine + (1 - g) * self.uniform_log_prob[j])
        return torch.index_select(torch.cat(columns, dim=1), 1, self.digit_order)

    def rollout(self, x, policy):
        h, coarse_log_probs, state = self.trunk(x)
        state = state.detach()
        qs, actions, fines = [], [], []
        for j, (controller, branch) in enumerate(zip(self.group_controllers, self.branches)):
            q = controller(state)
            qs.append(q)
            actions.append(policy(j, q))
            fines.append(F.log_softmax(branch(h), dim=1))
        gates = [a.to(x.dtype)[:, None] for a in actions]
        output = self.merge(coarse_log_probs, gates, fines)
        ones = torch.ones_like(actions[0])
        executed = {"root": ones, "controllers": ones}
        executed.update({f"group{j + 1}": a for j, a in enumerate(actions)})
        decisions = [Decision(q, a, ones) for q, a in zip(qs, actions)]
        return Rollout(output, self.cost_of(executed), decisions)

    def forward_mul(self, x):
        h, coarse_log_probs, state = self.trunk(x)
        gates, fines = [], []
        for j, (controller, branch) in enumerate(zip(self.group_controllers, self.branches)):
            expand = run_margin(controller(state)) > getattr(self, self.knob_names[j])
            gates.append(expand.to(x.dtype))
            fines.append(F.log_softmax(branch(h), dim=1))
        return self.merge(coarse_log_probs, gates, fines)

    def forward_cond(self, x):
        h, coarse_log_probs, state = self.trunk(x)
        columns = []
        for j, (controller, branch) in enumerate(zip(self.group_controllers, self.branches)):
            expand = as_scalar(run_margin(controller(state))) > getattr(self, self.knob_names[j])
            coarse_j = coarse_log_probs[:, j : j + 1]
            uniform = self.uniform_log_prob[j]
            columns.append(
                torch.cond(
                    expand,
                    lambda h, c, b=branch: c + F.log_softmax(b(h), dim=1),
                    lambda h, c, u=uniform, n=len(self.groups[j]): c + torch.full((1, n), u),
                    (h, coarse_j),
                )
            )
        return torch.index_select(torch.cat(columns, dim=1), 1, self.digit_order)


# --------------------------------------------------------------------------
# digit groups for the hierarchy
# --------------------------------------------------------------------------


def similar_digit_groups(train: Split, count: int = 3) -> list[list[int]]:
    """Groups of visually similar digits: Ward agglomerative clustering of the
    ten class-mean images of the (clean, standardised) training split.
    Deterministic, and the groups it finds are the ones a person would
    expect to be confused (see README)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    means = np.stack([train.x[train.y == d].reshape(-1, IMAGE * IMAGE).mean(axis=0) for d in range(NUM_CLASSES)])
    labels = fcluster(linkage(means.astype(np.float64), method="ward"), t=count, criterion="maxclust")
    groups = [sorted(np.flatnonzero(labels == c).tolist()) for c in sorted(set(labels.tolist()))]
    return sorted(groups, key=lambda g: g[0])


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------


def batches(split: Split, rng: np.random.Generator, hard_fraction: float = HARD_FRACTION):
    """Shuffled training batches, each with a random fraction made hard."""
    order = rng.permutation(len(split.y))
    for start in range(0, len(order), BATCH):
        idx = order[start : start + BATCH]
        x = augment_hard(split.x[idx], rng, hard_fraction)
        yield torch.from_numpy(x), torch.from_numpy(split.y[idx])


def regular_parameters(model: D2NN) -> list[nn.Parameter]:
    controller_ids = {id(p) for c in model.controllers() for p in c.parameters()}
    return [p for p in model.parameters() if id(p) not in controller_ids]


def prediction_loss(model: D2NN, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # The hierarchy outputs log-probabilities already; log_softmax leaves them unchanged.
    return F.cross_entropy(output, y)


def pretrain(model: D2NN, train: Split, rng: np.random.Generator, generator: torch.Generator) -> dict:
    """Pre-train the regular modules with every module executed (the chain:
    random routes, each block run with probability 1/2, so that later blocks
    learn to work whether or not earlier ones ran). The high-low and the
    cascade train every branch/classifier on every sample; the hierarchy its
    merged output with every group expanded plus the coarse loss."""
    params = regular_parameters(model)
    optimizer = torch.optim.Adam(params, lr=PRETRAIN_LR)
    steps = PRETRAIN_EPOCHS * math.ceil(len(train.y) / BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, PRETRAIN_LR, total_steps=steps)
    model.train()
    for _ in range(PRETRAIN_EPOCHS):
        for x, y in batches(train, rng):
            loss = pretrain_loss(model, x, y, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return {"epochs": PRETRAIN_EPOCHS, "optimizer": "Adam, one-cycle", "lr": PRETRAIN_LR}


@torch.no_grad()
def fit_controller_states(model: D2NN, train: Split, rng: np.random.Generator, generator: torch.Generator) -> None:
    """Fix each controller's state standardisation from one pass over the
    (augmented) training set, every module executed (the chain: random routes,
    as its states depend on the earlier blocks)."""
    model.eval()
    captured: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(model.controllers()))}
    handles = [
        c.register_forward_pre_hook(lambda _m, args, k=k: captured[k].append(args[0]))
        for k, c in enumerate(model.controllers())
    ]
    policy = random_policy(0.5, generator) if isinstance(model, Chain) else fixed_policy(True)
    try:
        for x, _ in batches(train, rng):
            model.rollout(x, policy)
    finally:
        for h in handles:
            h.remove()
    for k, c in enumerate(model.controllers()):
        c.fit_state_statistics(torch.cat(captured[k]))


def pretrain_loss(model: D2NN, x, y, generator) -> torch.Tensor:
    if isinstance(model, HighLow):
        h = model.stem(x)
        return F.cross_entropy(model.low(h), y) + F.cross_entropy(model.high(h), y)
    if isinstance(model, Cascade):
        return sum(F.cross_entropy(model.stage(k, x)[1], y) for k in range(3))
    if isinstance(model, Chain):
        return F.cross_entropy(model.rollout(x, random_policy(0.5, generator)).output, y)
    if isinstance(model, Hierarchy):
        rollout = model.rollout(x, fixed_policy(True))
        group_of = torch.tensor([next(j for j, g in enumerate(model.groups) if d in g) for d in range(NUM_CLASSES)])
        coarse = model.coarse(model.root(x))
        return F.nll_loss(rollout.output, y) + F.cross_entropy(coarse, group_of[y])
    raise TypeError(type(model))


def set_batchnorm_eval(model: nn.Module) -> None:
    """Freeze the BatchNorm statistics: in the joint stage the batch is split
    over paths, and statistics mixing samples that did not take a module
    would not be the module's."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def q_learning_loss(rollout: Rollout, reward: torch.Tensor) -> torch.Tensor:
    """Squared TD error of each decision's chosen action. gamma = 1: a decision
    followed by another controller bootstraps from its max Q, one that ends
    the episode regresses on the final reward."""
    losses = []
    for d in rollout.decisions:
        target = reward
        if d.next_q is not None:
            target = torch.where(d.bootstraps, d.next_q.max(dim=1).values, reward)
        chosen = d.q.gather(1, d.action.long()[:, None])[:, 0]
        error = (chosen - target.detach()) ** 2
        reached = d.reached.to(error.dtype)
        losses.append((error * reached).sum() / reached.sum().clamp(min=1.0))
    return sum(losses)


def joint_train(model: D2NN, train: Split, lam: float, rng: np.random.Generator, generator: torch.Generator) -> None:
    """The D2NN training: controllers by Q-learning on r = lam*A + (1-lam)*E
    (epsilon-greedy), regular modules by back-propagation through the executed path."""
    optimizer = torch.optim.Adam(
        [
            {"params": regular_parameters(model), "lr": JOINT_LR_MODULES},
            {"params": [p for c in model.controllers() for p in c.parameters()], "lr": JOINT_LR_CONTROLLERS},
        ]
    )
    steps_per_epoch = math.ceil(len(train.y) / BATCH)
    total = JOINT_EPOCHS * steps_per_epoch
    decay_steps = max(1, int(EPSILON_DECAY_FRACTION * total))
    # Learning rates decay linearly to 0: the Q-values of the two actions
    # differ by a few hundredths, less than the jitter of a constant-rate
    # optimiser on 0/1 rewards; the decay averages over the last batches.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / total)
    step = 0
    model.train()
    set_batchnorm_eval(model)
    for _ in range(JOINT_EPOCHS):
        for x, y in batches(train, rng):
            epsilon = max(EPSILON_END, EPSILON_START - (EPSILON_START - EPSILON_END) * step / decay_steps)
            rollout = model.rollout(x, epsilon_greedy_policy(epsilon, generator))
            correct = (rollout.output.argmax(dim=1) == y).to(torch.float32)
            reward = lam * correct - (1 - lam) * rollout.cost.detach()
            loss = prediction_loss(model, rollout.output, y) + q_learning_loss(rollout, reward)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    model.eval()


@torch.no_grad()
def evaluate(model: D2NN, split: Split, policy: Policy | None = None) -> dict:
    """Accuracy (overall / easy / hard) and mean cost of a policy (default:
    the exported greedy rule with the model's margins) on a split."""
    model.eval()
    policy = policy or greedy_policy(model.margins())
    rollout = model.rollout(torch.from_numpy(split.x), policy)
    correct = (rollout.output.argmax(dim=1).numpy() == split.y)
    cost = rollout.cost.numpy().astype(np.float64)
    return {
        "accuracy": {
            "overall": round(float(correct.mean()), 4),
            "easy": round(float(correct[~split.hard].mean()), 4),
            "hard": round(float(correct[split.hard].mean()), 4),
        },
        "mean_cost": {
            "overall": round(float(cost.mean()), 4),
            "easy": round(float(cost[~split.hard].mean()), 4),
            "hard": round(float(cost[split.hard].mean()), 4),
        },
        "run_rates": [round(float(d.action[d.reached].float().mean()), 4) if d.reached.any() else 0.0 for d in rollout.decisions],
    }


@torch.no_grad()
def decision_values(model: D2NN, x: np.ndarray) -> list[np.ndarray]:
    """Every controller's Q(run) - Q(skip) on x (all samples, whatever the route)."""
    rollout = model.rollout(torch.from_numpy(x), fixed_policy(True))
    # With every module run, each controller still sees exactly the state it
    # sees in the exported network (states never depend on earlier decisions
    # except in the chain, handled below).
    if isinstance(model, Chain):
        rollout = model.rollout(torch.from_numpy(x), greedy_policy(model.margins()))
    return [run_margin(d.q)[:, 0].numpy() for d in rollout.decisions]


def clear_margins(model: D2NN, x: np.ndarray) -> list[dict]:
    """Move any margin whose decision values come within DECISION_CLEARANCE of
    it (where rounding could flip a decision between ONNX Runtime and d2nnc)
    to the middle of the nearest gap of width >= 2 * DECISION_CLEARANCE
    between sorted decision values. Returns what was moved (for model.json)."""
    moved = []
    for _ in range(len(model.knob_names)):  # the chain's later states depend on earlier margins
        changed = False
        for name, values in zip(model.knob_names, decision_values(model, x)):
            margin = float(getattr(model, name))
            if np.abs(values - margin).min() >= DECISION_CLEARANCE:
                continue
            v = np.sort(values.astype(np.float64))
            gaps = [(lo, hi) for lo, hi in zip(v[:-1], v[1:]) if hi - lo >= 2 * DECISION_CLEARANCE]
            lo, hi = min(gaps, key=lambda g: abs((g[0] + g[1]) / 2 - margin))
            new = float(np.float32((lo + hi) / 2))
            model.set_margins([new if n == name else float(getattr(model, n)) for n in model.knob_names])
            moved.append({"knob": name, "from": margin, "to": new, "closest_value_before": float(values[np.abs(values - margin).argmin()])})
            changed = True
        if not changed:
            break
    return moved


def min_clearance(model: D2NN, x: np.ndarray) -> float:
    return float(min(np.abs(v - float(getattr(model, n))).min() for n, v in zip(model.knob_names, decision_values(model, x))))


# --------------------------------------------------------------------------
# one architecture end to end
# --------------------------------------------------------------------------


ARCHITECTURES = {
    "d2nn_highlow": "High-low capacity D2NN",
    "d2nn_cascade": "Cascade D2NN",
    "d2nn_chain": "Chain D2NN",
    "d2nn_hierarchy": "Hierarchical D2NN",
}


def build(name: str, splits: dict[str, Split]) -> D2NN:
    if name == "d2nn_highlow":
        return HighLow()
    if name == "d2nn_cascade":
        return Cascade()
    if name == "d2nn_chain":
        return Chain()
    if name == "d2nn_hierarchy":
        return Hierarchy(similar_digit_groups(splits["train"]))
    raise KeyError(name)


def seed_of(name: str) -> int:
    # A stable per-model seed: a model trains the same alone or with the others.
    return SEED * 1000 + sum((i + 1) * ord(c) for i, c in enumerate(name))


def train_and_export(name: str, splits: dict[str, Split], out_dir: pathlib.Path) -> dict:
    seed = seed_of(name)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build(name, splits)
    pretrain_info = pretrain(model, splits["train"], rng, generator)
    fit_controller_states(model, splits["train"], rng, generator)
    pretrained = copy.deepcopy(model.state_dict())

    sweep, trained = [], {}
    for lam in LAMBDAS:
        model.load_state_dict(pretrained)
        joint_train(model, splits["train"], lam, rng, generator)
        val = evaluate(model, splits["val"])
        sweep.append({"lambda": lam, "val_accuracy": val["accuracy"]["overall"], "val_cost": val["mean_cost"]["overall"],
                      "val_accuracy_easy": val["accuracy"]["easy"], "val_accuracy_hard": val["accuracy"]["hard"],
                      "val_cost_easy": val["mean_cost"]["easy"], "val_cost_hard": val["mean_cost"]["hard"]})
        trained[lam] = copy.deepcopy(model.state_dict())
        print(f"  {name} lambda={lam}: val accuracy {val['accuracy']['overall']:.4f} cost {val['mean_cost']['overall']:.3f} "
              f"(easy {val['mean_cost']['easy']:.3f}, hard {val['mean_cost']['hard']:.3f}) run rates {val['run_rates']}", flush=True)

    best = max(s["val_accuracy"] for s in sweep)
    chosen = min((s for s in sweep if s["val_accuracy"] >= best - ACCURACY_TOLERANCE), key=lambda s: (s["val_cost"], -s["lambda"]))
    model.load_state_dict(trained[chosen["lambda"]])
    model.eval()

    # Keep every decision clear of its knob on val and test (see clear_margins).
    checked_x = np.concatenate([splits["val"].x, splits["test"].x])
    moved = clear_margins(model, checked_x)

    test = evaluate(model, splits["test"])
    full = evaluate(model, splits["test"], fixed_policy(True))
    clearance = min_clearance(model, checked_x)

    model_dir = out_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    x_test = splits["test"].x
    model.export_form = "mul"
    export_dynamic(model, model_dir / "dynamic.onnx")
    model.export_form = "cond"
    export_if(model, model_dir / "if.onnx")
    model.export_form = "mul"
    ref_dynamic = ort_run(model_dir / "dynamic.onnx", x_test, batch1=False)
    ref_if = ort_run(model_dir / "if.onnx", x_test, batch1=True)
    np.save(model_dir / "ref_dynamic.npy", ref_dynamic)
    np.save(model_dir / "ref_if.npy", ref_if)

    # The ONNX files must agree with the torch model on the test set's predictions.
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    for label, ref in (("dynamic", ref_dynamic), ("if", ref_if)):
        if not np.allclose(ref, torch_logits, atol=1e-4, rtol=1e-3):
            raise RuntimeError(f"{name}: ORT {label}.onnx differs from torch by {np.abs(ref - torch_logits).max():.3g}")
    onnx_accuracy = float((ref_dynamic.argmax(axis=1) == splits["test"].y).mean())

    # d2nnc: the first 64 test samples as one batch, the first 8 one by one.
    knobs = list(model.knob_names)
    check_dynamic = d2nnc_check(model_dir / "dynamic.onnx", x_test, expected_knobs=knobs)
    check_if = d2nnc_check(model_dir / "if.onnx", x_test, expected_knobs=knobs)

    costs = model._costs
    meta = {
        "paper": PAPER,
        "architecture": ARCHITECTURES[name],
        "description": describe(model),
        "knobs": {n: float(getattr(model, n)) for n in knobs},
        "train": {
            "seed": seed,
            "data": "sklearn digits, 16x16, train split (1,078 images), half of each batch made hard (data.augment_hard)",
            "pretrain": pretrain_info,
            "joint": {
                "epochs": JOINT_EPOCHS,
                "optimizer": "Adam",
                "lr_regular_modules": JOINT_LR_MODULES,
                "lr_controllers": JOINT_LR_CONTROLLERS,
                "batch": BATCH,
                "epsilon": f"linear {EPSILON_START} -> {EPSILON_END} over the first {int(EPSILON_DECAY_FRACTION * 100)}% of the steps, then {EPSILON_END}",
                "gamma": 1.0,
                "reward": "lambda * A + (1 - lambda) * E, A = 1 if correct else 0, E = -(executed multiply-adds / full network multiply-adds)",
                "lr_schedule": "linear decay to 0",
                "controller_state": "per-channel mean and max of the features (cascade: + softmax, hierarchy: + coarse probabilities), standardised with statistics of the training set fixed after pre-training",
                "batchnorm": "statistics frozen after pre-training",
            },
            "lambda": chosen["lambda"],
            "lambda_choice": f"the cheapest lambda (lowest val cost) whose val accuracy is within {ACCURACY_TOLERANCE:.0%} of the best of the sweep",
        },
        "cost_model": {
            "unit": "multiply-adds of Conv2d and Linear layers per sample (batch 1)",
            "components": costs,
            "full_network": sum(costs.values()),
        },
        "results": {
            "test_accuracy": test["accuracy"],
            "test_accuracy_full": full["accuracy"],
            "mean_cost": test["mean_cost"]["overall"],
            "mean_cost_split": test["mean_cost"],
            "full_network_cost": full["mean_cost"]["overall"],
            "run_rates": test["run_rates"],
            "onnx_test_accuracy": round(onnx_accuracy, 4),
            "lambda_sweep": sweep,
            "margins_moved": moved,
            "min_decision_clearance": clearance,
            "d2nnc": {
                "dynamic": summarise_check(check_dynamic),
                "if": summarise_check(check_if),
            },
        },
    }
    if isinstance(model, Hierarchy):
        meta["groups"] = model.groups
    files = {
        "dynamic": "dynamic.onnx",
        "if": "if.onnx",
        "ref_dynamic": "ref_dynamic.npy",
        "ref_if": "ref_if.npy",
        "data": "../../data/test.npz",
        "sizes_bytes": {f: (model_dir / f).stat().st_size for f in ("dynamic.onnx", "if.onnx", "ref_dynamic.npy", "ref_if.npy")},
    }
    save_model(name, out_dir, meta, files)
    return {**meta, "name": name, "files": files}


def summarise_check(report: dict) -> dict:
    return {
        "samples": report["samples"],
        "max_abs_diff_vs_ort": report["max_abs_diff"],
        "flops_executed": report["flops_executed"],
        "flops_dense": report["flops_dense"],
        "flops_ratio": round(report["flops_ratio"], 4),
        "guarded_regions": len(report["regions"]),
    }


def describe(model: D2NN) -> str:
    knobs = ", ".join(model.knob_names)
    common = (
        f" Knobs ({knobs}): each decision is (q_run - q_skip) > margin for that controller's "
        "Q-values; 0.0 is the trained greedy policy, a larger margin skips more (cheaper, less "
        "accurate), a smaller one runs more, -inf runs the full network."
    )
    doc = " ".join((type(model).__doc__ or "").split())
    return doc + common


TRAINERS = {name: (lambda splits, out_dir, name=name: train_and_export(name, splits, out_dir)) for name in ARCHITECTURES}
