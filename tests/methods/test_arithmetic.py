"""Adapter arithmetic on hand-made tensors, against the published procedures written out entry by entry."""

import itertools

import pytest
import torch

from slimtune.methods.arithmetic import combine, dare, magnitude_trim, svd_factors, ties

DELTAS = [torch.tensor([[0.9, -0.2, 0.05], [-0.6, 0.3, -0.01]]),
          torch.tensor([[-0.4, -0.5, 0.02], [0.7, -0.1, 0.2]]),
          torch.tensor([[0.1, 0.8, -0.3], [-0.2, 0.0, 0.6]])]
WEIGHTS = [0.5, 0.3, 0.2]


def _ties_by_hand(deltas, weights, density):
    """TIES (Yadav et al. 2023, Alg. 1) entry by entry: keep each task vector's top-k |values|, elect the sign
    of the summed kept values, average the weighted kept values of that sign."""
    out = torch.zeros_like(deltas[0])
    k = int(density * deltas[0].numel())
    kept = []
    for d in deltas:
        threshold = sorted(d.abs().flatten().tolist(), reverse=True)[k - 1]
        kept.append(torch.where(d.abs() >= threshold, d, torch.zeros_like(d)))
    for i, j in itertools.product(*map(range, out.shape)):
        values = [t[i, j].item() for t in kept]
        sign = 1.0 if sum(values) >= 0 else -1.0
        agreeing = [(v, w) for v, w in zip(values, weights) if v != 0 and (v > 0) == (sign > 0)]
        out[i, j] = sum(v * w for v, w in agreeing) / max(len(agreeing), 1)
    return out


def test_ties_follows_the_paper():
    assert torch.allclose(ties(DELTAS, WEIGHTS, 0.5), _ties_by_hand(DELTAS, WEIGHTS, 0.5))


def test_ties_matches_peft_s_merge_utils():
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    expected = merge_utils.ties(DELTAS, torch.tensor(WEIGHTS), 0.5, "total")
    assert torch.allclose(ties(DELTAS, WEIGHTS, 0.5), expected)


def test_trim_keeps_the_largest_magnitudes():
    assert torch.equal(magnitude_trim(DELTAS[0], 0.5).abs(), torch.tensor([[0.9, 0.0, 0.0], [0.6, 0.3, 0.0]]))


def test_dare_drops_at_random_and_rescales_with_the_seeded_masks():
    density = 0.6
    generator = torch.Generator().manual_seed(11)
    masks = [torch.rand(d.shape, generator=generator) < density for d in DELTAS]  # the same draws, in order
    expected = sum(w * d * m / density for d, w, m in zip(DELTAS, WEIGHTS, masks))
    assert torch.allclose(dare(DELTAS, WEIGHTS, density, torch.Generator().manual_seed(11)), expected)
    kept = (dare(DELTAS, [1.0, 0, 0], density, torch.Generator().manual_seed(11)) != 0).float().mean()
    assert 0 < kept < 1


def _factors(seed, rank, out=6, inp=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, rank, generator=g), torch.randn(rank, inp, generator=g)


def test_cat_is_exactly_the_weighted_sum_of_updates_and_pads_to_one_rank():
    a = {"l1": _factors(0, 2), "l2": _factors(1, 2)}
    b = {"l1": _factors(2, 3)}
    combined = combine("cat", [a, b], [0.7, 0.3])
    for path, (bb, aa) in combined.items():
        assert aa.shape[0] == bb.shape[1] == 5  # l2 (rank 2, only in a) padded to l1's 2 + 3
        expected = 0.7 * a[path][0] @ a[path][1] + (0.3 * b[path][0] @ b[path][1] if path in b else 0)
        assert torch.allclose(bb @ aa, expected, atol=1e-6)


def test_svd_at_the_summed_rank_is_exact_and_lower_ranks_are_the_best_approximation():
    a, b = {"l": _factors(0, 2)}, {"l": _factors(1, 2)}
    expected = 0.5 * a["l"][0] @ a["l"][1] + 0.5 * b["l"][0] @ b["l"][1]
    bb, aa = combine("svd", [a, b], [0.5, 0.5])["l"]
    assert torch.allclose(bb @ aa, expected, atol=1e-5)
    low_b, low_a = svd_factors(expected, 1)
    u, s, vh = torch.linalg.svd(expected)
    assert torch.allclose(low_b @ low_a, s[0] * torch.outer(u[:, 0], vh[0]), atol=1e-5)


def test_linear_sums_the_factors_as_peft_does():
    a, b = {"l": _factors(0, 2)}, {"l": _factors(1, 2)}
    bb, aa = combine("linear", [a, b], [0.64, 0.36])["l"]
    assert torch.allclose(bb, 0.8 * a["l"][0] + 0.6 * b["l"][0]) and torch.allclose(aa, 0.8 * a["l"][1] + 0.6 * b["l"][1])
    with pytest.raises(ValueError, match="one rank"):
        combine("linear", [a, {"l": _factors(1, 3)}], [0.5, 0.5])
