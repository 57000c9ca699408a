"""The optimiser: SGD as the recipes set it, SAM, MaxNorm.

- `build_optimizer`: SGD with the recipe's learning rate, momentum, Nesterov flag and weight decay.
- `SAM` (Foret et al., ICLR 2021): ascend to w + rho * g / |g|, take the gradient there, step the base
  optimiser from w with it. As the released code (davda54/sam, sam.py), `adaptive=True` is ASAM's
  (Kwon et al., ICML 2021) scaling by |w| without ASAM's eta.
- `MaxNorm` (weight balancing, Alshammari et al., CVPR 2022): after a step, every class vector w_j of
  the classifier weight with |w_j| > t is scaled to norm t, a projection onto the norm ball.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

# The released SAM adds this to |g| before dividing: a zero gradient then gives a zero ascent, not 0/0.
GRAD_NORM_EPS = 1e-12


def build_optimizer(params: Iterable, lr: float, momentum: float, nesterov: bool, weight_decay: float,
                    fused: bool = False) -> torch.optim.SGD:
    """SGD with the recipe's lr, momentum, Nesterov flag and weight decay; `fused` picks torch's fused
    kernel (under fp16, GradScaler then hands it the overflow flag as a device tensor instead of reading
    it back to the host every step). The updates are the same either way."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           **({"fused": True} if fused else {}))


class SAM:
    """Sharpness-aware minimisation around a base optimiser, in two passes per step:

        loss(model(x), y).backward(); sam.first_step()    # w -> w + e(w), gradients zeroed
        loss(model(x), y).backward(); sam.second_step()   # w restored, base step with the gradient at w + e(w)

    e(w) = rho * g / |g|, |g| the L2 norm over all parameters that have a gradient (one norm for the whole
    model, as released); with `adaptive`, e(w) = rho * w^2 g / |w g| (elementwise products). A step costs
    two forward and two backward passes, about twice a plain step, and one copy of the parameters.

    The base optimiser's weight decay and momentum act in `second_step` only, at w, on the gradient taken
    at w + e(w). Under DDP both backward passes average the gradient over ranks, so every rank ascends
    along the same global gradient. Parameters hold their own dtype (fp32 under bf16 autocast); fp16
    with a GradScaler is not supported: the first gradient would be scaled and could hold inf.

    `param_groups`, `state_dict` and `load_state_dict` are the base optimiser's, so a learning-rate
    schedule and a checkpoint treat it as the base optimiser (the saved w lives only between the passes).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if not rho >= 0:
            raise ValueError(f"SAM rho must be non-negative, got {rho}")
        self.base = base
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self._saved: dict[torch.Tensor, torch.Tensor] = {}  # w before the ascent, between the two passes

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    @property
    def defaults(self) -> dict:
        return self.base.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)

    def _with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def _grad_norm(self, params: list[torch.Tensor]) -> torch.Tensor:
        """|g| (|w g| with `adaptive`) over all params, on the first one's device; stays on the device."""
        device = params[0].device
        scaled = [p.grad * p.abs() if self.adaptive else p.grad for p in params]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(device) for g in scaled]))

    @torch.no_grad()
    def first_step(self) -> None:
        """Save w, move to w + e(w) and zero the gradients for the second pass."""
        if self._saved:
            raise RuntimeError("SAM.first_step called twice without second_step in between")
        params = self._with_grad()
        if params:
            scale = self.rho / (self._grad_norm(params) + GRAD_NORM_EPS)
            for p in params:
                self._saved[p] = p.detach().clone()
                ascent = p.grad * p * p if self.adaptive else p.grad
                p.add_(ascent * scale.to(p))
        self.zero_grad()

    @torch.no_grad()
    def second_step(self) -> None:
        """Restore w exactly and step the base optimiser with the gradient taken at w + e(w)."""
        if not self._saved and self._with_grad():
            raise RuntimeError("SAM.second_step called without first_step: the gradient is not from w + e(w)")
        for p, w in self._saved.items():
            p.copy_(w)
        self._saved.clear()
        self.base.step()

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A whole SAM step: `closure` runs forward and backward and returns the loss; it runs twice, on
        zeroed gradients each time, and the first pass's loss (at w) is returned."""
        self.zero_grad()
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss


def max_norm_(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Scale every row w_j (a class vector: weight[j] flattened) with |w_j| > threshold to norm threshold,
    in place; other rows are left exactly as they are. Returns `weight`."""
    with torch.no_grad():
        norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)
        # threshold / |w_j| is 1 or more for rows within the ball (inf for a zero row): clamped to 1, a no-op
        scale = (threshold / norms).clamp_(max=1.0)
        weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
    return weight


def relative_threshold(weight: torch.Tensor, fraction: float) -> float:
    """min_j |w_j| + fraction * (max_j |w_j| - min_j |w_j|): the released code's per-layer threshold
    (MaxNorm_via_PGD.setPerLayerThresh), taken once from the classifier that stage two starts from."""
    norms = torch.linalg.vector_norm(weight.detach().flatten(1), dim=1)
    return float(norms.min() + fraction * (norms.max() - norms.min()))


class MaxNorm:
    """MaxNorm on a classifier weight (C x d): call `step()` after the optimiser's step.

    The released code (ShadeAlsha/LTR-weight-balancing, utils/regularizers.py, MaxNorm_via_PGD)
    constrains only the classifier weight (`fc.weight`: its bias gets an infinite threshold), per row,
    in L2, with a threshold relative to the stage-two start (`relative`, the demo's fraction 0.1), and
    projects once per epoch, after the training phase (utils/trainval.py); SPEC's PGD projects after
    every step. `step()` is one projection: the caller picks when. The released `tau` (a power on the
    norms) is 1 there and is not kept. On a cosine head the logits do not see |w_j|: MaxNorm is moot.
    """

    def __init__(self, weight: nn.Parameter, threshold: float):
        if not threshold > 0:
            raise ValueError(f"MaxNorm threshold must be positive, got {threshold}")
        if weight.dim() < 2:
            raise ValueError(f"MaxNorm constrains a classifier weight (classes x features), got shape "
                             f"{tuple(weight.shape)}; the bias is not constrained")
        self.weight = weight
        self.threshold = float(threshold)

    @classmethod
    def relative(cls, weight: nn.Parameter, fraction: float = 0.1) -> MaxNorm:
        """The threshold set as released: `fraction` of the way from the smallest class-vector norm to the largest."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"MaxNorm fraction must lie in [0, 1], got {fraction}")
        return cls(weight, relative_threshold(weight, fraction))

    def step(self) -> None:
        max_norm_(self.weight, self.threshold)

    def state_dict(self) -> dict:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        self.threshold = float(state["threshold"])
