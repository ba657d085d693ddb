"""Adapter arithmetic: one low-rank update per layer from several adapters' updates of that layer.

Each adapter gives, per layer, factors (B [out, r], A [r, in]) with its scale folded into B, so that its update
is ΔW = B A (`Method.low_rank_factors`). With weights w_i:

  linear  B = Σ ±√|w_i| B_i, A = Σ √|w_i| A_i (peft's "linear": equal ranks; cross terms B_i A_j included)
  cat     B = [w_1 B_1 … w_n B_n], A = [A_1; …; A_n]: exactly Σ w_i ΔW_i, rank Σ r_i
  svd     Σ w_i ΔW_i re-factorised by its top `rank` singular triplets
  ties    TIES-Merging (Yadav et al. 2023) on the ΔW_i: keep each one's top `density` fraction by magnitude,
          elect each entry's sign from the sum of the kept values, average the weighted values that agree
          with it (peft's weighted form); then re-factorised at `rank`
  dare    DARE (Yu et al. 2024): drop each ΔW_i's entries at random, keeping a `density` fraction, rescale the
          kept ones by 1/density, sum with the weights (seeded); then re-factorised at `rank`
"""

import math

import torch

HOWS = ("linear", "cat", "svd", "ties", "dare")
Factors = tuple[torch.Tensor, torch.Tensor]  # (B [out, r], A [r, in])


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """δ with all but its round-down(density·numel) largest-magnitude entries set to zero."""
    keep = int(density * delta.numel())
    mask = torch.zeros(delta.numel(), dtype=delta.dtype)
    mask[delta.abs().flatten().topk(keep).indices] = 1
    return delta * mask.view_as(delta)


def ties(deltas: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """Trim, elect sign, disjoint merge: Σ_{i agreeing} w_i τ̂_i / #agreeing, entry by entry."""
    trimmed = torch.stack([magnitude_trim(d, density) for d in deltas])  # [n, out, in]
    sign = torch.where(trimmed.sum(dim=0) >= 0, 1.0, -1.0)
    agrees = trimmed.sign() == sign
    weighted = trimmed * torch.tensor(weights, dtype=trimmed.dtype).view(-1, 1, 1)
    return (weighted * agrees).sum(dim=0) / agrees.sum(dim=0).clamp(min=1)


def dare(deltas: list[torch.Tensor], weights: list[float], density: float, generator: torch.Generator) -> torch.Tensor:
    """Σ w_i (m_i ⊙ δ_i) / density with m_i ~ Bernoulli(density), drawn in order from `generator`."""
    total = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights):
        keep = torch.rand(delta.shape, generator=generator) < density
        total += weight * delta * keep / density
    return total


def svd_factors(delta: torch.Tensor, rank: int) -> Factors:
    """(B, A) of the best rank-`rank` approximation of δ [out, in]: B = U_r √S_r, A = √S_r V_rᵀ."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(delta.dtype), (root[:, None] * vh[:rank]).to(delta.dtype)


def combine_layer(how: str, factors: list[Factors], weights: list[float], rank: int, density: float,
                  generator: torch.Generator) -> Factors:
    """One layer's combined factors from each adapter's (B_i, A_i) of that layer."""
    if how == "cat":
        return (torch.cat([w * b for (b, _), w in zip(factors, weights)], dim=1),
                torch.cat([a for _, a in factors], dim=0))
    if how == "linear":
        b = sum(math.copysign(math.sqrt(abs(w)), w) * b for (b, _), w in zip(factors, weights))
        return b, sum(math.sqrt(abs(w)) * a for (_, a), w in zip(factors, weights))
    deltas = [b @ a for b, a in factors]
    if how == "svd":
        merged = sum(w * d for d, w in zip(deltas, weights))
    elif how == "ties":
        merged = ties(deltas, weights, density)
    else:
        merged = dare(deltas, weights, density, generator)
    return svd_factors(merged, rank)


def combine(how: str, adapters: list[dict[str, Factors]], weights: list[float], rank: int | None = None,
            density: float = 1.0, seed: int = 0) -> dict[str, Factors]:
    """Per layer path, the combined factors, all of one rank (zero-padded); a layer that an adapter leaves
    alone is ΔW = 0 for it, which adds nothing in any of the procedures, so it is left out there.

    `rank` (svd, ties, dare) defaults to the sum of the adapters' ranks, at which svd is exact.
    """
    generator = torch.Generator().manual_seed(seed)
    combined = {}
    for path in sorted(set().union(*adapters)):
        present = [(a[path], w) for a, w in zip(adapters, weights) if path in a]
        factors, layer_weights = [f for f, _ in present], [w for _, w in present]
        if how == "linear" and len({a.shape[0] for _, a in factors}) > 1:
            raise ValueError(f"{path}: how=linear needs adapters of one rank, these have "
                             f"{sorted({a.shape[0] for _, a in factors})}; use cat or svd")
        layer_rank = rank or sum(a.shape[0] for _, a in factors)
        combined[path] = combine_layer(how, factors, layer_weights, layer_rank, density, generator)
    width = max(a.shape[0] for _, a in combined.values())
    return {path: (_pad(b, width, dim=1), _pad(a, width, dim=0)) for path, (b, a) in combined.items()}


def _pad(factor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero columns of B or rows of A up to the common rank: the product B A does not change."""
    missing = width - factor.shape[dim]
    shape = (factor.shape[0], missing) if dim == 1 else (missing, factor.shape[1])
    return torch.cat([factor, factor.new_zeros(shape)], dim=dim)
