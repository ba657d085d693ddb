"""generate_ids against a hand-written greedy loop, batching, and the options' checks."""

import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.tasks.generation import GenerationOptions, chat_prompt_ids, generate_ids, left_padded
from tests.conftest import build_classifier


def test_left_padding_ends_every_prompt_at_the_last_column():
    ids, mask = left_padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("options,message", [
    (GenerationOptions(max_new_tokens=0), "max new tokens"), (GenerationOptions(temperature=0), "temperature"),
    (GenerationOptions(top_p=0), "top-p"), (GenerationOptions(top_k=-1), "top-k")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(SlimtuneError, match=message):
        options.validate()


def _greedy(model, prompt: list[int], steps: int, stop: int) -> list[int]:
    """Argmax of the next-token logits, one token at a time, recomputing the whole sequence each step."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model.lm(input_ids=torch.tensor([ids])).logits[0, -1]
            token = int(logits.argmax())
            if token == stop:
                break
            ids.append(token)
    return ids[len(prompt):]


def test_greedy_generation_equals_a_hand_written_loop_alone_and_batched(tiny_lm):
    model, _, _, backbone = build_classifier(tiny_lm, "lora", task="causal-lm")
    model.eval()
    prompts = [chat_prompt_ids(model.tokenizer, text) for text in ("hi", "a longer question here")]
    options = GenerationOptions(max_new_tokens=6)
    stop = model.lm.generation_config.eos_token_id or model.tokenizer.eos_token_id
    expected = [_greedy(model, p, 6, stop) for p in prompts]
    assert all(expected), "the random tiny LM should say something before its end token"
    assert [generate_ids(model, [p], options)[0] for p in prompts] == expected
    assert generate_ids(model, prompts, options) == expected


def test_prompts_are_batched_by_length_and_answered_in_their_own_order(tiny_lm):
    from slimtune.tasks.generation import generate_answer_ids

    model, _, _, _ = build_classifier(tiny_lm, "lora", task="causal-lm")
    model.eval()
    prompts = [[5 + (i * 7 + j) % 40 for j in range(length)] for i, length in enumerate([9, 3, 7, 5, 11])]
    options = GenerationOptions(max_new_tokens=5)
    alone = [generate_ids(model, [p], options)[0] for p in prompts]
    assert len(set(map(tuple, alone))) > 1, "the prompts should get different answers, or order is not checked"
    assert generate_answer_ids(model, prompts, options, batch_size=2) == alone
