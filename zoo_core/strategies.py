"""Transfer-learning policy: named strategies, discriminative parameter groups, LR schedule.

Strategies (``--strategy``):

- ``feature-extraction`` — backbone frozen, only the new head trains; no augmentation by default, so the
  backbone runs once and the head trains on cached features.
- ``finetune`` — the head plus the last ``trainable_stages`` stages train (default 1).
- ``full`` — every layer trains.
- ``gradual`` — fastai's ``fine_tune``: the head alone for ``head_epochs`` epochs, then every layer.
- ``auto`` — short LP-FT trials choose which stages train (:mod:`zoo_core.training.surgical`): the last
  stage, the last half, all, the first stage, or all with Auto-RGN learning rates.

Backbone stages get a fraction of the head's learning rate (``backbone_lr_mult``), decaying by
``layer_decay`` per stage towards the input (discriminative learning rates). Norm layers and biases get
no weight decay. The schedule is a linear warm-up followed by a cosine decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .backbones.adapter import BackboneAdapter
from .backbones.freezing import Stages, lock_norm_statistics, stage_index, unfreeze_all
from .errors import ZooError


@dataclass(frozen=True)
class Strategy:
    """A named rule for how many backbone stages train at a given epoch."""

    name: str
    summary: str
    stages_at: Callable[[int, int, int, int], int]  # (epoch, n_stages, trainable_stages, head_epochs) → k
    default_augment: bool

    def trainable_stages(self, epoch: int, n_stages: int, trainable_stages: int, head_epochs: int) -> int:
        """Number of top backbone stages that train during ``epoch``."""
        return self.stages_at(epoch, n_stages, trainable_stages, head_epochs)

    def backbone_frozen_throughout(self) -> bool:
        """True when no backbone stage ever trains (features can be cached)."""
        return self.name == "feature-extraction"

    def trains_backbone(self) -> bool:
        """True when some backbone stage trains at some epoch (LP-FT applies: :mod:`zoo_core.training.probe`)."""
        return not self.backbone_frozen_throughout()


STRATEGIES: dict[str, Strategy] = {  # strategy name → policy
    "feature-extraction": Strategy(
        "feature-extraction", "frozen backbone, new head only", lambda e, n, k, h: 0, False
    ),
    "finetune": Strategy(
        "finetune", "head + last k stages (--trainable-stages)", lambda e, n, k, h: min(k, n), True
    ),
    "full": Strategy("full", "every layer trains", lambda e, n, k, h: n, True),
    "gradual": Strategy(
        "gradual", "head only for --head-epochs, then every layer", lambda e, n, k, h: 0 if e < h else n, True
    ),
    "auto": Strategy("auto", "short trials choose which stages fine-tune (surgical LP-FT)", lambda e, n, k, h: n,
                     True),
}
ALIASES = {"linear": "feature-extraction", "freeze": "feature-extraction", "fe": "feature-extraction",
           "last-k": "finetune", "no-freeze": "full", "fine-tune": "finetune", "freeze-unfreeze": "gradual"}


def get_strategy(name: str) -> Strategy:
    """Look up a strategy by name or alias; unknown names list the valid ones."""
    key = ALIASES.get(name, name)
    if key not in STRATEGIES:
        raise ZooError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[key]


def apply_stages(model: nn.Module, adapter: BackboneAdapter, k: int, n_stages: int, *,
                 freeze_bn_stats: bool = False) -> None:
    """Freeze all but the head and the top ``k`` stages (everything trains when ``k >= n_stages``);
    ``freeze_bn_stats`` keeps the BatchNorm statistics of the trainable stages too."""
    if k >= n_stages:
        unfreeze_all(model)
    else:
        adapter.freeze(model, k)
    if freeze_bn_stats:
        lock_norm_statistics(model)


def _no_decay_names(model: nn.Module) -> set[str]:
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    out = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(module, norm_types) or p.ndim <= 1 or pname.endswith("bias"):
                out.add(full)
    return out


def param_groups(
    model: nn.Module, stages: Stages, head: str, *, lr: float, weight_decay: float,
    backbone_lr_mult: float, layer_decay: float,
) -> list[dict]:
    """Optimizer groups of the *trainable* parameters: the head at ``lr``; stage ``i`` of ``n`` at
    ``lr * backbone_lr_mult * layer_decay**(n-1-i)``; no weight decay on norms and biases.

    ``head=""`` means ``model`` is the head itself (every parameter at ``lr``)."""
    where = stage_index(stages)
    n = len(stages)
    no_decay = _no_decay_names(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not head or name == head or name.startswith(head + "."):
            gname, scale = "head", 1.0
        elif name in where:
            i = where[name]
            gname, scale = stages[i][0], backbone_lr_mult * layer_decay ** (n - 1 - i)
        else:
            gname, scale = "backbone", backbone_lr_mult
        decay = name not in no_decay
        g = groups.setdefault((gname, decay), {
            "name": gname, "params": [], "lr": lr * scale, "initial_lr": lr * scale,
            "weight_decay": weight_decay if decay else 0.0,
        })
        g["params"].append(p)
    return list(groups.values())


def make_optimizer(groups: list[dict], name: str = "adamw", momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with momentum over the given parameter groups."""
    if name == "adamw":
        return torch.optim.AdamW(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum)
    raise ZooError(f"unknown optimizer {name!r}; choose 'adamw' or 'sgd'")


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``floor``."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Scale every group's ``initial_lr`` by ``factor``."""
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
