"""Same weights → same outputs as the real `peft` package, for every method peft also has (tiny BERT encoder).

peft's trainable tensors are filled with noise, copied into slimtune's layers under the matching names, and
both encoders run the same batch. Skipped when peft is not installed (the `peft` test extra).
"""

import copy

import pytest
import torch

peft = pytest.importorskip("peft")

from slimtune.methods.registry import create_method  # noqa: E402

IDS = torch.tensor([[2, 60, 70, 80, 90, 3, 0], [2, 65, 75, 3, 0, 0, 0]])
MASK = (IDS != 0).long()

CASES = {
    "lora": ({"r": "4", "alpha": "8", "targets": "query,value"},
             lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])),
    "lora-rslora": ({"r": "4", "alpha": "8", "use_rslora": "true", "targets": "query,value"},
                    lambda: peft.LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["query", "value"])),
    "lora-pissa": ({"r": "4", "alpha": "8", "init": "pissa", "targets": "query,value,dense"},
                   lambda: peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa",
                                           target_modules=["query", "value", "dense"])),
    "lora-olora": ({"r": "4", "alpha": "8", "init": "olora", "targets": "query,value"},
                   lambda: peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights="olora",
                                           target_modules=["query", "value"])),
    "dora": ({"r": "4", "alpha": "8", "targets": "query,value,dense"},
             lambda: peft.LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["query", "value", "dense"])),
    "vera": ({"r": "16", "seed": "7", "targets": "query,value"},
             lambda: peft.VeraConfig(r=16, projection_prng_key=7, target_modules=["query", "value"])),
    "loha": ({"r": "4", "alpha": "8", "targets": "query,value"},
             lambda: peft.LoHaConfig(r=4, alpha=8, target_modules=["query", "value"])),
    "lokr": ({"r": "2", "alpha": "4", "targets": "query,value,dense"},
             lambda: peft.LoKrConfig(r=2, alpha=4, target_modules=["query", "value", "dense"])),
}
PEFT_NAMES = {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight",
              "magnitude": "lora_magnitude_vector.default.weight"}


def _encoders(tiny_model):
    from transformers import BertModel

    ours = BertModel.from_pretrained(tiny_model).eval()
    return ours, copy.deepcopy(ours)


def _copy_from_peft(ours: torch.nn.Module, theirs: torch.nn.Module) -> int:
    """Every trainable tensor of slimtune's wrappers, taken from peft's layer at the same path; how many."""
    found = dict(theirs.named_parameters())
    copied = 0
    with torch.no_grad():
        for path, module in ours.named_modules():
            if not hasattr(module, "base_layer"):
                continue
            for name, param in module.named_parameters(recurse=False):
                source = found[f"{path}.{PEFT_NAMES.get(name, name + '.default')}"]
                param.copy_(source.reshape(param.shape))
                copied += 1
    return copied


def _noisy(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


def _largest_difference(ours, theirs, config) -> tuple[float, int]:
    """peft's model of `theirs` with noisy trained tensors, copied into `ours`: (largest output difference, how
    many tensors were copied)."""
    theirs = peft.get_peft_model(theirs, config).eval()
    _noisy(theirs)
    copied = _copy_from_peft(ours, theirs.base_model.model)
    assert copied > 0
    with torch.no_grad():
        expected = theirs(input_ids=IDS, attention_mask=MASK).last_hidden_state
        got = ours(input_ids=IDS, attention_mask=MASK).last_hidden_state
    return (got - expected).abs().max().item(), copied


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_weights_give_peft_s_outputs(tiny_model, case):
    options, peft_config = CASES[case]
    ours, theirs = _encoders(tiny_model)
    method_name = case.split("-")[0]
    method = create_method(method_name, options)
    method.inject(ours)
    assert _largest_difference(ours, theirs, peft_config())[0] < 1e-4


def test_ia3_gives_peft_s_outputs(tiny_model):
    ours, theirs = _encoders(tiny_model)
    method = create_method("ia3")
    method.inject(ours)
    scaled = {n: m.on_input for n, m in ours.named_modules() if hasattr(m, "ia3_l")}
    assert sorted({n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in scaled}) == [
        "output.dense", "self.key", "self.value"]
    config = peft.IA3Config(target_modules=list(scaled), feedforward_modules=[n for n, i in scaled.items() if i])
    difference, copied = _largest_difference(ours, theirs, config)
    assert difference < 1e-5 and copied == len(scaled)


def test_vera_rebuilds_peft_s_random_projections_from_the_seed(tiny_model):
    ours, theirs = _encoders(tiny_model)
    create_method("vera", {"r": "16", "seed": "7", "targets": "query,value"}).inject(ours)
    theirs = peft.get_peft_model(theirs, peft.VeraConfig(r=16, projection_prng_key=7, target_modules=["query", "value"]))
    layer = ours.encoder.layer[0].attention.self.query
    assert torch.equal(layer.vera_A, theirs.base_model.vera_A["default"])
    assert torch.equal(layer.vera_B, theirs.base_model.vera_B["default"])
