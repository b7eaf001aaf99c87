"""How task losses combine into one update (`train.loss_weighting`).

`fixed` and `uncertainty` combine the losses into one scalar that is back-propagated as usual. `pcgrad`
and `gradnorm` work on each task's own gradient: the trainer computes one gradient per task (flattened over
the trainable parameters) and hands them to `combine_gradients`, which returns the update's gradient.
"Shared" parameters are the backbone's (`backbone.*`); each head's gradient comes from its own task alone.
The learnt quantities (log-variances, GradNorm's weights) are parameters of this module, which the trainer
optimises beside the model's (no weight decay) and saves in its checkpoints, not in the model's weights.
"""

from __future__ import annotations

import torch
from torch import nn


class FixedWeighting(nn.Module):
    """Σ_i weight_i · L_i with each task's configured `weight` (the default)."""

    per_task_gradients = False

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        self.fixed = dict(weights)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.fixed[n] * loss for n, loss in losses.items())

    def weights(self) -> dict[str, float]:
        return dict(self.fixed)


class UncertaintyWeighting(nn.Module):
    """Kendall, Gal & Cipolla (2018): L = Σ_i exp(−s_i) · L_i + s_i with a learnt s_i = log σ_i² per task.

    The paper's factors differ by task kind (½ exp(−s) L + ½ s for a regression, exp(−s) L + ½ s for a
    classification); we use the one form above for every task, as most implementations do: with it every
    task's optimum is s_i = log L_i whatever its kind. Each s_i starts at 0 (weight 1); the task's configured
    `weight` is not used. The effective weight of task i is exp(−s_i).
    """

    per_task_gradients = False

    def __init__(self, names: list[str]):
        super().__init__()
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in names})

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(torch.exp(-self.log_vars[n]) * loss + self.log_vars[n] for n, loss in losses.items())

    def weights(self) -> dict[str, float]:
        return {n: float(torch.exp(-s.detach())) for n, s in self.log_vars.items()}


def project_conflicting(grads: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """PCGrad's projection (Yu et al. 2020, Algorithm 1): each task's gradient g_i, taken against the other
    tasks' original gradients in a random order, loses its component along any g_j it conflicts with
    (g_i · g_j < 0): g_i ← g_i − (g_i · g_j) / ‖g_j‖² · g_j. Returns the projected gradients (sum them).

    Args:
        grads: one flat gradient (P,) per task.
        generator: draws each task's order of the others.
    """
    projected = []
    for i, grad in enumerate(grads):
        grad = grad.clone()
        for j in torch.randperm(len(grads), generator=generator).tolist():
            if j == i:
                continue
            dot = torch.dot(grad, grads[j])
            if dot < 0:
                grad = grad - dot / grads[j].pow(2).sum() * grads[j]
        projected.append(grad)
    return projected


class PCGrad(nn.Module):
    """Project conflicting gradients (on the shared parameters), then sum; tasks keep their fixed `weight`.

    The order of the other tasks is drawn from a generator seeded by (seed, step): a resumed run projects
    as an uninterrupted one.
    """

    per_task_gradients = True

    def __init__(self, weights: dict[str, float], seed: int):
        super().__init__()
        self.fixed, self.seed = dict(weights), seed

    def loss_weight(self, name: str) -> float:
        return self.fixed[name]

    def combine_gradients(self, grads: dict[str, torch.Tensor], losses: dict[str, float], shared: torch.Tensor,
                          step: int) -> torch.Tensor:
        """grads: task → flat gradient (P,) of weight · loss; shared: (P,) bool. Returns the update's (P,)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        names = list(grads)
        projected = project_conflicting([grads[n][shared] for n in names], generator)
        total = sum(grads[n] for n in names).clone()
        total[shared] = sum(projected)
        return total

    def weights(self) -> dict[str, float]:
        return dict(self.fixed)


class GradNorm(nn.Module):
    """GradNorm (Chen et al. 2018): learnt weights w_i (from 1) balance the tasks' gradient norms.

    G_i = w_i ‖∇ L_i‖ over the shared parameters (all of them, not only the last shared layer: the per-task
    gradients are computed anyway, and "last layer" means nothing common to every fusion); the target is
    Ḡ · r_i^α with r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)), held constant; the weights' gradient is
    that of Σ_i |G_i − target_i|, i.e. sign(G_i − target_i) ‖∇ L_i‖. After each optimiser step they are
    renormalised to Σ w_i = T. The model's gradient is Σ_i w_i ∇ L_i.
    """

    per_task_gradients = True

    def __init__(self, names: list[str], alpha: float):
        super().__init__()
        self.names, self.alpha = list(names), alpha
        self.task_weights = nn.Parameter(torch.ones(len(names)))
        self.register_buffer("initial_losses", torch.zeros(len(names)))

    def loss_weight(self, name: str) -> float:
        return 1.0  # the per-task gradients are of L_i; w_i is applied in `combine_gradients`

    def combine_gradients(self, grads: dict[str, torch.Tensor], losses: dict[str, float], shared: torch.Tensor,
                          step: int) -> torch.Tensor:
        loss = torch.tensor([losses[n] for n in self.names], dtype=torch.float32, device=self.task_weights.device)
        if not self.initial_losses.any():
            self.initial_losses.copy_(loss)
        w = self.task_weights.detach()
        norms = torch.stack([grads[n][shared].norm() for n in self.names])  # ‖∇ L_i‖
        G = w * norms
        ratio = loss / self.initial_losses
        target = G.mean() * (ratio / ratio.mean()) ** self.alpha
        self.task_weights.grad = torch.sign(G - target) * norms
        return sum(w[i] * grads[n] for i, n in enumerate(self.names))

    @torch.no_grad()
    def renormalise(self) -> None:
        self.task_weights.mul_(len(self.names) / self.task_weights.sum())

    def weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.task_weights.detach())}


def make_weighting(kind: str, weights: dict[str, float], *, seed: int, alpha: float) -> nn.Module:
    """The `train.loss_weighting` module for tasks with configured `weights` (task → weight)."""
    if kind == "uncertainty":
        return UncertaintyWeighting(list(weights))
    if kind == "pcgrad":
        return PCGrad(weights, seed)
    if kind == "gradnorm":
        return GradNorm(list(weights), alpha)
    return FixedWeighting(weights)
