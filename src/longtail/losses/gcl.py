"""GCL: Gaussian clouded logit loss on the cosine head (SPEC section 3)."""
from __future__ import annotations

import torch

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_param, focal_mean

# SPEC's "eps ~ N(0, 1/3)" follows the released code (Keke921/GCLLoss, losses.py), which draws
# from torch.distributions.normal.Normal(0, 1/3): the second argument is the standard deviation,
# so eps = 1/3 * N(0, 1), clipped to [-1, 1] (3 sigma).
NOISE_STD = 1.0 / 3.0


class GCL(LongTailLoss):
    """GCL ("gcl"): every logit j gets
    s * (cos_j - noise_mul * |eps_ij| * (log n_max - log n_j) / (log n_max - log n_min)),
    eps_ij ~ N(0, std 1/3) clipped to [-1, 1], fresh per sample, class and call; then CE.

    Expects cosine-head logits z = scale * cos. Pass a `torch.Generator` (or set `.generator`) for
    reproducible noise. With all counts equal there is no imbalance and no noise is added
    (the released code would divide 0 by 0 there).

    `margin` and `focal_gamma` (both 0 in SPEC's GCL, the first stage) are the settings of GCL's
    second stage, classifier re-training (released code: m=0.1, gamma=1, scale 20): the target
    cosine also loses `margin`, and each sample's CE_i is weighted by (1 - exp(-CE_i))^gamma before
    the plain batch mean. As in the GCL release (and unlike LDAM-DRW's focal loss, `Focal`), that
    weight is a constant for the gradient: p = exp(-CE_i) is detached.
    """

    cosine_head = True

    def __init__(self, class_counts, scale: float = 30.0, noise_mul: float = 0.5, margin: float = 0.0,
                 focal_gamma: float = 0.0, generator: torch.Generator | None = None, check_values: bool = True):
        super().__init__(class_counts, check_values=check_values)
        self.scale = check_param("scale", scale, positive=True)
        self.noise_mul = check_param("noise_mul", noise_mul, non_negative=True)
        self.margin = check_param("margin", margin, non_negative=True)
        self.focal_gamma = check_param("focal_gamma", focal_gamma, non_negative=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        log_n = torch.log(self.class_counts.double())
        spread = log_n.max() - log_n.min()
        rel = (log_n.max() - log_n) / spread if spread > 0 else torch.zeros_like(log_n)
        self.register_buffer("noise_scale", rel.float(), persistent=False)

    def sample_noise(self, shape, device: torch.device | str | None = None) -> torch.Tensor:
        """eps: float32, N(0, std 1/3) clipped to [-1, 1], drawn from `self.generator` if set."""
        gen = self.generator
        draw_on = gen.device if gen is not None else device
        eps = torch.randn(shape, generator=gen, device=draw_on, dtype=torch.float32) * NOISE_STD
        eps = eps.clamp_(-1.0, 1.0)
        return eps if device is None else eps.to(device)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = at_least_float32(logits)
        eps = self.sample_noise(z.shape, z.device).to(z.dtype)
        # s * (cos - d) = z - s * d, with cos = z / s.
        shift = (self.scale * self.noise_mul) * eps.abs() * self.noise_scale.to(z.dtype)
        z = z - shift
        if self.margin:
            z = z.scatter_add(1, target[:, None], z.new_full((len(target), 1), -self.scale * self.margin))
        if not self.focal_gamma:
            return self.cross_entropy(z, target)
        return focal_mean(self.cross_entropy(z, target, reduction="none"), self.focal_gamma, detach_weight=True)

    def extra_repr(self) -> str:
        extra = f", margin={self.margin}, focal_gamma={self.focal_gamma}" if self.margin or self.focal_gamma else ""
        return f"{super().extra_repr()}, scale={self.scale}, noise_mul={self.noise_mul}{extra}"
