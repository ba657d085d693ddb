"""LoHa's Hadamard and LoKr's Kronecker updates against their formulas, and LoKr's shapes against peft's rule."""

import torch

from slimtune.methods.loha import HadamardLinear
from slimtune.methods.lokr import KroneckerLinear, factorization
from tests.conftest import build_classifier


def _first(model, kind):
    return next(m for m in model.backbone.modules() if isinstance(m, kind))


def test_loha_update_is_the_hadamard_product_of_two_low_rank_matrices(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "loha", {"r": "2", "alpha": "4"})
    layer = _first(model, HadamardLinear)
    with torch.no_grad():
        layer.hada_w2_b.normal_()
    x = torch.randn(3, 32)
    delta = 2.0 * (layer.hada_w1_a @ layer.hada_w1_b) * (layer.hada_w2_a @ layer.hada_w2_b)
    assert torch.linalg.matrix_rank(delta) > 2  # more than r: the point of the Hadamard product
    assert torch.allclose(layer(x), layer.base_layer(x) + x @ delta.T, atol=1e-5)


def test_lokr_update_is_a_kronecker_product():
    layer = KroneckerLinear(torch.nn.Linear(64, 32), rank=2, alpha=4.0, factor=-1)
    assert tuple(layer.lokr_w1.shape) == (4, 8) and tuple(layer.lokr_w2_a.shape) == (8, 2)  # 32 = 4·8, 64 = 8·8
    with torch.no_grad():
        layer.lokr_w1.normal_()
    w2 = layer.lokr_w2_a @ layer.lokr_w2_b
    x = torch.randn(3, 64)
    blocks = torch.cat([torch.cat([layer.lokr_w1[i, j] * w2 for j in range(8)], 1) for i in range(4)], 0)
    assert torch.allclose(layer(x), layer.base_layer(x) + 2.0 * x @ blocks.T, atol=1e-5)


def test_factorization_follows_peft_s_rule():
    assert [factorization(d) for d in (32, 36, 128, 127)] == [(4, 8), (6, 6), (8, 16), (1, 127)]
    assert factorization(128, 4) == (4, 32)
