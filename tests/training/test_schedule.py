"""The learning-rate schedule: linear warm-up to the peak, then linear decay to zero (transformers' formula)."""

import pytest
import torch

from slimtune.training.trainer import linear_warmup_then_decay


@pytest.mark.parametrize("warmup, total, expected", [
    (2, 6, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]),
    (0, 4, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]),
])
def test_warmup_then_decay(warmup, total, expected):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = linear_warmup_then_decay(optimizer, warmup, total)
    seen = []
    for _ in expected:
        seen.append(scheduler.get_last_lr()[0] / 2.0)
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected)
