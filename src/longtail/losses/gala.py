"""GALA: Gradient-Aware Logit Adjustment loss (SPEC section 3, "GALA").

The loss keeps two per-class statistics of the gradient that cross-entropy sends to the
(adjusted) logits, accumulated over the whole of training:

- theta_j: positive gradient received by classifier j (from samples of class j);
- phi_k: negative gradient, either summed per *sample* class (``phi="sample"``, what the
  authors' code does) or received per *classifier* (``phi="classifier"``).

and adjusts the logits with them before a softmax cross-entropy. Statistics from before a
batch are used for that batch; the batch's own gradient is added afterwards (one-step lag).

Two modes:

- ``"paper"``: for a sample of class k, F_j = z_j + lambda1*log(theta_j+eps) - lambda2*log(phi_k+eps)
  for j != k and F_k = z_k; statistics are plain running sums.
- ``"reference"``: the released code (lt-project-repository, ``DotProductClassifier`` and
  ``run_networks.collect_grad``): every logit, the target included, gets
  + lambda1*log(theta_j+eps); the -lambda2*log(phi_k+eps) term is a row constant (no effect
  on softmax CE, kept for fidelity). The released code keeps a running C x C matrix and adds
  the cumulative matrix to its totals each step, so totals are *double* sums of the step
  increments. Two C-vectors per statistic reproduce that exactly (``*_running`` holds the
  cumulative increments, ``theta``/``phi`` the totals); no C x C matrix is formed.

Implementation notes:

- The statistics are registered buffers in float64: they are sums of millions of small
  terms (each <= 1/B) that grow for the whole run, and in float32 late increments would be
  rounded away relative to the total. They are saved by ``state_dict`` and restored exactly.
- The update runs only in training mode, under ``torch.no_grad``, from p = softmax of the
  adjusted logits, with g_ij = (p_ij - [j = y_i]) / B (the gradient of the *unweighted*
  mean CE, as SPEC defines it, even while DRW class weights are on). It is vectorised with
  index_add_ over the B labels, no per-sample loop and no C x C matrix. theta and the
  "sample" phi need only p_{i,y_i} = exp(-CE_i), taken from the per-sample CE the loss
  computes anyway (so their update is O(B + C)); the "classifier" phi needs the column sums
  of p (one softmax more).
- Class weights (DRW) enter through the base ``cross_entropy``, reduced as its weighted mean.
- Non-finite logits raise ValueError before the statistics change; the check looks at the
  B per-sample losses rather than all B x C logits (cheaper; -inf at a non-target entry is
  harmless and accepted).
- Data parallel: when ``torch.distributed`` is available and initialised, each worker sums
  its unscaled increments and its local batch size, one ``all_reduce`` adds them over all
  workers, and the sums are divided by the *global* batch size. Every worker therefore
  holds identical statistics, equal to what one process would accumulate from the global
  batch (the released code ran DataParallel, so it saw the whole batch at once). Every
  worker must call the loss in training mode on every step, as with DDP itself.
- Arithmetic is float32 (float64 inputs stay float64) even under bf16/fp16 autocast.
- In eval mode the loss is still the adjusted CE with the current statistics (no update);
  predictions at evaluation use the plain logits z, which this loss never alters.
- Two passes over one batch (SAM): the first inside ``with loss.frozen():`` updates nothing, so
  both passes adjust with the same statistics and the second adds the batch, once.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_inputs, check_label_range, check_param

MODES = ("paper", "reference")
PHI_DEFINITIONS = ("sample", "classifier")


class GALA(LongTailLoss):
    """Gradient-Aware Logit Adjustment loss. Call as ``loss(logits, target)`` with plain logits z."""

    def __init__(self, class_counts: Sequence[float] | torch.Tensor, lambda1: float = 1.2, lambda2: float = 0.9,
                 mode: str = "paper", phi: str = "sample", eps: float = 1e-3, check_values: bool = True):
        super().__init__(class_counts, check_values=check_values)
        if mode not in MODES:
            raise ValueError(f"GALA mode must be one of {MODES}, got {mode!r} ('paper': the published formula; "
                             "'reference': the released code)")
        if phi not in PHI_DEFINITIONS:
            raise ValueError(f"GALA phi must be one of {PHI_DEFINITIONS}, got {phi!r}")
        lambda1 = check_param("GALA lambda1", lambda1, non_negative=True)
        lambda2 = check_param("GALA lambda2", lambda2, non_negative=True)
        eps = check_param("GALA eps", eps, positive=True)  # keeps log(theta + eps) finite
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)
        self.mode = mode
        self.phi_definition = phi
        self.eps = float(eps)
        c = self.num_classes
        # Totals used in the adjustment (both modes) ...
        self.register_buffer("theta", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("phi", torch.zeros(c, dtype=torch.float64))
        # ... and, in "reference" mode, the cumulative increments that are added to them each
        # step (the row/column sums of the released code's running matrix). Zero in "paper" mode;
        # registered in both so checkpoints have the same keys.
        self.register_buffer("theta_running", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("phi_running", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ statistics
    def reset_statistics(self) -> None:
        """Zero theta, phi (and the running sums) as at the start of training."""
        for buf in (self.theta, self.phi, self.theta_running, self.phi_running, self.steps):
            buf.zero_()

    def adjusted_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The adjusted logits F (SPEC) from the current statistics; gradient flows only through z."""
        z = at_least_float32(logits)
        dtype = z.dtype
        log_theta = torch.log(self.theta.to(z.device) + self.eps)
        log_phi = torch.log(self.phi.to(z.device) + self.eps)
        col = (self.lambda1 * log_theta).to(dtype)  # per class j
        row = (self.lambda2 * log_phi).to(dtype)[target]  # per sample, from its own class k = y_i
        # Built in place on one B x C tensor: measurably faster than materialising a B x C shift.
        adjusted = z + col
        adjusted.sub_(row.unsqueeze(1))
        if self.mode == "paper":
            # take the target's shift back out (a constant, so dL/dz = dL/dF exactly; the value
            # equals z_{i,y_i} up to float rounding)
            adjusted.scatter_add_(1, target.unsqueeze(1), (row - col[target]).unsqueeze(1))
        return adjusted

    def _training_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """F for the loss: `adjusted_logits`, except that reference mode leaves out the lambda2 term.
        There it is a per-row constant, which changes neither the softmax (so neither the loss, its
        gradient nor the statistics) and would cost one more pass over the B x C logits."""
        if self.mode != "reference":
            return self.adjusted_logits(logits, target)
        z = at_least_float32(logits)
        return z + (self.lambda1 * torch.log(self.theta.to(z.device) + self.eps)).to(z.dtype)

    @torch.no_grad()
    def _update(self, adjusted: torch.Tensor, target: torch.Tensor, nll: torch.Tensor | None = None) -> None:
        """Add this batch's |dL/dF| statistics (summed over workers under torch.distributed).

        `nll` is the unweighted per-sample -log p_{i,y_i} of the softmax of `adjusted`, if at hand.
        """
        c = self.num_classes
        if nll is None:
            nll = torch.logsumexp(adjusted, 1) - adjusted.gather(1, target.unsqueeze(1)).squeeze(1)
        nll = nll.detach().double()
        # |g_{i,y_i}| * B = 1 - p_{i,y_i}; expm1 keeps it accurate when p is close to 1.
        pos = -torch.expm1(-nll)
        inc = torch.zeros(2 * c + 1, dtype=torch.float64, device=adjusted.device)
        inc[:c].index_add_(0, target, pos)  # theta_j: samples of class j
        if self.phi_definition == "sample":
            # sum_{j != k} |g_ij| * B = sum_{j != k} p_ij = 1 - p_{i,k}: equal to the theta term for softmax CE.
            inc[c:2 * c].index_add_(0, target, pos)
        else:
            # classifier k: sum over samples NOT of class k of p_ik = column sum minus the own-class part.
            p = torch.softmax(adjusted.detach(), dim=1)
            inc[c:2 * c] = p.sum(0, dtype=torch.float64)
            inc[c:2 * c].index_add_(0, target, -torch.exp(-nll))
        inc[2 * c:].fill_(target.numel())  # fill_ takes the count as an argument; inc[2c] = n would copy it over, waiting
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(inc)  # sum unscaled increments and batch sizes over workers
        step = (inc[:2 * c] / inc[2 * c].clamp(min=1)).to(self.theta.device)  # g uses the global batch size
        if self.mode == "reference":
            self.theta_running += step[:c]
            self.phi_running += step[c:]
            self.theta += self.theta_running
            self.phi += self.phi_running
        else:
            self.theta += step[:c]
            self.phi += step[c:]
        self.steps += (inc[2 * c] > 0).to(self.steps.device, torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # The two modes keep different sums under the same keys: only "reference" moves the running
        # increments, which are non-zero after its first step. Statistics of one mode loaded into the
        # other would adjust the logits wrongly without a sign, so they are refused.
        running = bool(self.theta_running.any() or self.phi_running.any())
        if self.mode == "paper" and running:
            raise ValueError("these GALA statistics come from mode='reference' (its running sums are non-zero); "
                             "build the loss with mode='reference' to load them")
        if self.mode == "reference" and int(self.steps) > 0 and not running:
            raise ValueError("these GALA statistics come from mode='paper' (no running sums after "
                             f"{int(self.steps)} steps); build the loss with mode='paper' to load them")
        # Likewise the phi definitions: "sample" phi grows by exactly theta's increments, so it always
        # equals theta (its running sum theta's, in "reference"); statistics where it does not come from
        # phi="classifier". The converse cannot be told: classifier phi can equal theta (all zero, or
        # uniform logits on a balanced batch), so a "classifier" loss accepts equal statistics.
        if self.phi_definition == "sample" and int(self.steps) > 0:
            theta, phi = (self.theta_running, self.phi_running) if running else (self.theta, self.phi)
            if not torch.allclose(phi, theta, rtol=1e-9, atol=0.0):
                raise ValueError("these GALA statistics come from phi='classifier' (phi differs from theta); "
                                 "build the loss with phi='classifier' to load them")

    # ------------------------------------------------------------------ loss
    def check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # Shapes and labels as every loss; finiteness is checked in `compute` on the B per-sample
        # losses instead of all B x C logits (a NaN or +inf logit, or -inf at the target, makes its
        # row's loss non-finite; -inf elsewhere is harmless), before the statistics are touched.
        check_inputs(logits, target, self.num_classes, check_values=False)
        if self.check_values:
            check_label_range(target, self.num_classes)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            adjusted = self._training_logits(logits, target)
            # Per-sample CE (times w_{y_i} when class weights are on), reduced as F.cross_entropy's
            # weighted mean; unweighted, it also gives p_{i,y_i} = exp(-l_i) for the update.
            per_sample = self.cross_entropy(adjusted, target, reduction="none")
            if self.check_values and not torch.isfinite(per_sample.detach().sum()):
                raise ValueError("logits contain NaN or inf (diverged model or bad input); lower the learning rate "
                                 "or check the data")
            if self.weighted:
                loss = per_sample.sum() / self.class_weights.to(per_sample)[target].sum()
                nll = None
            else:
                loss = per_sample.mean()
                nll = per_sample
            # after the loss: this batch is used from the next step on. Only in a training step: not in
            # eval(), not under no_grad (a validation pass with the criterion left in train mode), and
            # not inside frozen() (SAM's ascent pass: the step's batch is added once, by its second pass)
            if self.training and torch.is_grad_enabled() and self.updates_state:
                self._update(adjusted, target, nll)
        return loss

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, lambda1={self.lambda1}, lambda2={self.lambda2}, mode={self.mode!r}, "
                f"phi={self.phi_definition!r}, eps={self.eps}, steps={int(self.steps)}")
