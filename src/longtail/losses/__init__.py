"""Losses for long-tailed classification, built by name.

    loss = longtail.losses.build("gala", class_counts=counts, lambda1=1.2)
    value = loss(logits, target)
"""
from __future__ import annotations

from longtail.losses.ala import ALA
from longtail.losses.base import LongTailLoss, check_class_counts, check_inputs, class_balanced_weights
from longtail.losses.ce import ClassBalancedCE, CrossEntropy, Focal
from longtail.losses.gala import GALA
from longtail.losses.gcl import GCL
from longtail.losses.ldam import LDAM
from longtail.losses.logit_adjustment import BalancedSoftmax, LogitAdjusted

REGISTRY: dict[str, type[LongTailLoss]] = {
    "ce": CrossEntropy,
    "focal": Focal,
    "cb": ClassBalancedCE,
    "ldam": LDAM,
    "bs": BalancedSoftmax,
    "la": LogitAdjusted,
    "gcl": GCL,
    "ala": ALA,
    "gala": GALA,
}

# Losses defined on the cosine head (SPEC section 2): the trainer picks that head for them.
COSINE_HEAD_LOSSES = frozenset({"ldam", "gcl", "ala"})


def available() -> list[str]:
    return sorted(REGISTRY)


def build(name: str, class_counts, **params) -> LongTailLoss:
    """Build a loss by registry name with its own hyper-parameters."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(available())}") from None
    try:
        return cls(class_counts=class_counts, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for loss {name!r}: {exc}") from None


__all__ = ["LongTailLoss", "build", "available", "REGISTRY", "COSINE_HEAD_LOSSES", "check_class_counts",
           "check_inputs", "class_balanced_weights", "CrossEntropy", "Focal", "ClassBalancedCE", "LDAM",
           "BalancedSoftmax", "LogitAdjusted", "GCL", "ALA", "GALA"]
