import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.prompt import SoftPrompt
from slimtune.methods.registry import create_method
from slimtune.models.loading import load_backbone
from tests.conftest import tiny_llama, toy_batch


def _prompted(tiny_model, options=None):
    """A raw backbone (pooler kept) with a prompt whose vectors are perturbed away from their init."""
    model = load_backbone(tiny_model).model.eval()
    create_method("prompt", {"length": "5", **(options or {})}).inject(model)
    with torch.no_grad():
        model.soft_prompt.embeddings.add_(torch.randn_like(model.soft_prompt.embeddings))
    return model


def test_prompt_positions_are_removed_from_the_outputs(tiny_model):
    model = _prompted(tiny_model)
    plain = load_backbone(tiny_model).model.eval()  # same weights, no hooks
    batch = toy_batch(load_backbone(tiny_model))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = torch.zeros_like(ids)
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)

    prompt = model.soft_prompt.embeddings.expand(len(ids), -1, -1)
    reference = plain(inputs_embeds=torch.cat([prompt, plain.get_input_embeddings()(ids)], dim=1),
                      attention_mask=torch.cat([torch.ones(len(ids), 5, dtype=mask.dtype), mask], dim=1),
                      token_type_ids=torch.cat([torch.zeros(len(ids), 5, dtype=types.dtype), types], dim=1),
                      output_hidden_states=True)
    assert out.last_hidden_state.shape == (*ids.shape, 32)
    assert torch.equal(out.last_hidden_state, reference.last_hidden_state[:, 5:])
    assert all(h.shape[1] == ids.shape[1] for h in out.hidden_states)
    assert torch.equal(out.pooler_output, plain.pooler(reference.last_hidden_state[:, 5:]))  # pooled from [CLS]
    assert not torch.allclose(out.last_hidden_state, plain(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_positional_call_and_missing_mask_are_handled(tiny_model):
    model = _prompted(tiny_model)
    ids = toy_batch(load_backbone(tiny_model), n=1)["input_ids"]
    assert torch.equal(model(ids).last_hidden_state, model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state)


def test_vocab_init_copies_vocabulary_embeddings_and_random_does_not(tiny_model):
    words = load_backbone(tiny_model).model.get_input_embeddings().weight
    for init, expected in (("vocab", True), ("random", False)):
        model = load_backbone(tiny_model).model
        create_method("prompt", {"length": "4", "init": init}).inject(model)
        prompt = next(m for m in model.modules() if isinstance(m, SoftPrompt)).embeddings
        rows_from_vocab = [(words == row).all(dim=1).any().item() for row in prompt]
        assert all(rows_from_vocab) if expected else not any(rows_from_vocab)


def test_input_longer_than_the_window_is_refused(tiny_model):
    model = load_backbone(tiny_model).model
    create_method("prompt", {"length": "125"}).inject(model)  # the tiny model has 128 positions
    with pytest.raises(SlimtuneError, match="--max-length 3"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long))


def test_works_on_a_llama_style_decoder():
    model = tiny_llama()
    ids = torch.randint(100, (2, 7))
    base = model(input_ids=ids).last_hidden_state
    create_method("prompt", {"length": "4"}).inject(model)
    prompted = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert prompted.shape == base.shape and not torch.allclose(prompted, base)


def test_bad_options_are_refused():
    with pytest.raises(SlimtuneError, match="init"):
        create_method("prompt", {"init": "zeros"})
    with pytest.raises(SlimtuneError, match="length"):
        create_method("prompt", {"length": "0"})
