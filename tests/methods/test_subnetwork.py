import json
import struct

import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.subnetwork import SparseDeltaLinear
from slimtune.runs.adapter_files import save_adapter
from tests.conftest import build_classifier, toy_batch


def _wrappers(model) -> dict[str, SparseDeltaLinear]:
    return {n: m for n, m in model.backbone.named_modules() if isinstance(m, SparseDeltaLinear)}


def _step(model, params, backbone, seeds=(0, 1)):
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for seed in seeds:
        batch = toy_batch(backbone, seed=seed)
        torch.nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_density_is_exact_and_only_the_chosen_weights_change(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "subnetwork", {"density": "0.1"})
    layers = _wrappers(model)
    assert len(layers) == 2 * 6  # per block: query, key, value, attention output, intermediate, output
    for layer in layers.values():
        numel = layer.base_layer.weight.numel()
        assert len(layer.indices) == len(layer.indices.unique()) == round(0.1 * numel)  # 102 of 1024, 205 of 2048
    before = {n: layer.base_layer.weight.clone() for n, layer in layers.items()}
    _step(model, params, backbone)
    method.merge(model.backbone)
    for name, layer in layers.items():
        changed = (layer.base_layer.weight != before[name]).flatten().nonzero().flatten()
        assert set(changed.tolist()) == set(layer.indices[layer.values != 0].tolist())
        assert len(changed) > 0.9 * len(layer.indices)


def test_magnitude_picks_the_largest_weights(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "subnetwork", {"density": "0.05"})
    for layer in _wrappers(model).values():
        magnitude = layer.base_layer.weight.abs().flatten()
        chosen = torch.zeros_like(magnitude, dtype=torch.bool)
        chosen[layer.indices] = True
        assert magnitude[chosen].min() >= magnitude[~chosen].max()


def test_random_selection_is_seeded(tiny_model):
    def masks(seed):
        model, _, _, _ = build_classifier(tiny_model, "subnetwork", {"selection": "random", "seed": str(seed)})
        return [layer.indices.tolist() for layer in _wrappers(model).values()]

    assert masks(1) == masks(1) != masks(2)


def test_adapter_file_holds_only_indices_and_values(tiny_model, tmp_path):
    model, method, params, _ = build_classifier(tiny_model, "subnetwork")
    path = save_adapter(tmp_path, model, method, {})
    raw = path.read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_size])
    k = method.count_parameters(model.backbone)
    head = sum(p.numel() for p in model.head.parameters())
    assert len(raw) - 8 - header_size == 4 * k + 4 * k + 4 * head  # float32 values, int32 indices, head
    assert {v["dtype"] for n, v in header.items() if n.endswith(".indices")} == {"I32"}
    dense = sum(p.numel() for p in model.backbone.parameters() if p.ndim == 2) * 4
    assert len(raw) < dense / 10


def _batches(backbone):
    return [toy_batch(backbone, seed=s) for s in range(3)]


def test_fisher_mask_is_the_largest_squared_gradients(tiny_model):
    model, method, _, backbone = build_classifier(tiny_model, "subnetwork", {"selection": "fisher", "density": "0.05"})
    magnitude_masks = [layer.indices.clone() for layer in _wrappers(model).values()]
    method.prepare(model, _batches(backbone), torch.nn.functional.cross_entropy)

    reference, _, _, _ = build_classifier(tiny_model, "full")  # same base, same seeded head: plain gradients
    reference.eval()
    weights = {n: reference.backbone.get_submodule(n).weight for n in _wrappers(model)}
    scores = {n: torch.zeros_like(w) for n, w in weights.items()}
    for batch in _batches(backbone):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(reference(**batch), batch["labels"]),
                                    list(weights.values()))
        for name, grad in zip(weights, grads):
            scores[name] += grad.pow(2)
    differs = False
    for (name, layer), magnitude in zip(_wrappers(model).items(), magnitude_masks):
        expected = scores[name].flatten().topk(len(layer.indices)).indices.sort().values
        assert torch.equal(layer.indices, expected), name
        differs |= not torch.equal(layer.indices, magnitude)
    assert differs


def test_fisher_without_data_warns_and_keeps_the_magnitude_mask(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "subnetwork", {"selection": "fisher"})
    magnitude, _, _, _ = build_classifier(tiny_model, "subnetwork")
    assert all(torch.equal(a.indices, b.indices) for a, b in zip(_wrappers(model).values(),
                                                                  _wrappers(magnitude).values()))
    _step(model, params, backbone, seeds=(0,))
    with pytest.warns(UserWarning, match="fisher needs training batches"):
        method.on_step(model.backbone, 1, 10)
    with pytest.raises(SlimtuneError, match="before training"):
        method.prepare(model, _batches(backbone), torch.nn.functional.cross_entropy)


@pytest.mark.parametrize("options, message", [({"density": "0"}, "density must be in"),
                                              ({"selection": "largest"}, "selection must be one of")])
def test_bad_options_are_refused(tiny_model, options, message):
    with pytest.raises(SlimtuneError, match=message):
        build_classifier(tiny_model, "subnetwork", options)
