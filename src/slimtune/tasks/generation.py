"""Text generation with a causal-LM task model (adapted or not): the function behind `slimtune generate`.

`generate_texts(model, prompts, options)` is the one entry point: plain user prompts
are rendered with the tokenizer's chat template (with the assistant's generation
prompt), run through transformers' `generate` in left-padded batches, and the new
text of each is returned; `on_text` receives text pieces as they are produced
(one prompt at a time then), for streaming to a terminal or a client.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from slimtune.data.instructions import encode_text, prompt_text
from slimtune.errors import SlimtuneError
from slimtune.models.int8_base import dequantized_weights


@dataclass
class GenerationOptions:
    max_new_tokens: int = 128
    sample: bool = False  # False: greedy decoding, deterministic
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None  # seeds sampling, for reproducible samples

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise SlimtuneError("max new tokens must be at least 1")
        if not self.temperature > 0:
            raise SlimtuneError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise SlimtuneError("top-p must be in (0, 1]")
        if self.top_k < 0:
            raise SlimtuneError("top-k must not be negative")


def generation_config_for(model, options: GenerationOptions):
    from transformers import GenerationConfig

    tokenizer = model.tokenizer
    eos = model.lm.generation_config.eos_token_id
    eos = eos if eos is not None else tokenizer.eos_token_id
    settings = {"max_new_tokens": options.max_new_tokens, "do_sample": options.sample,
                "pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos}
    if options.sample:
        settings.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or None)
    return GenerationConfig(**settings)


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists → (input_ids, attention_mask) [B, T], padded on the left so every prompt ends at T."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@torch.no_grad()
def generate_ids(model, prompts: list[list[int]], options: GenerationOptions, streamer=None) -> list[list[int]]:
    """The new token ids for each prompt (token-id list), end-of-sequence and padding removed."""
    options.validate()
    if options.seed is not None:
        torch.manual_seed(options.seed)
    tokenizer = model.tokenizer
    config = generation_config_for(model, options)
    stops = set(config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id])
    ids, mask = left_padded(prompts, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with dequantized_weights(model):  # an int8 base: dequantised once per call, not per token
            out = model.generate(ids.to(device), mask.to(device), generation_config=config, streamer=streamer)
    finally:
        model.train(was_training)
    new = []
    for row in out[:, ids.shape[1]:].tolist():
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        new.append(row[:end])
    return new


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """A user message rendered for the model to answer, as token ids."""
    return encode_text(tokenizer, prompt_text(tokenizer, [{"role": "user", "content": text}]))["input_ids"]


def text_streamer(tokenizer, on_text: Callable[[str], None]):
    """A transformers TextStreamer that hands each decoded piece of new text to `on_text` instead of printing."""
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate_texts(model, prompts: list[str], options: GenerationOptions | None = None, batch_size: int = 8,
                   on_text: Callable[[str], None] | None = None) -> list[str]:
    """The model's answer to each user prompt; with `on_text`, prompts run one at a time and stream."""
    tokenizer = model.tokenizer
    encoded = [chat_prompt_ids(tokenizer, text) for text in prompts]
    answers = generate_answer_ids(model, encoded, options, batch_size, on_text)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]


def generate_answer_ids(model, encoded: list[list[int]], options: GenerationOptions | None = None,
                        batch_size: int = 8, on_text: Callable[[str], None] | None = None) -> list[list[int]]:
    """The new token ids for each rendered prompt (`chat_prompt_ids`), `batch_size` prompts per `generate` call
    (one with `on_text`, which streams, in the order given); what `generate_texts` decodes.

    Batches are made of prompts of similar length, so that little of each batch is left padding; the answers come
    back in the prompts' order."""
    options = options or GenerationOptions()
    if on_text:
        return [generate_ids(model, [prompt], options, text_streamer(model.tokenizer, on_text))[0]
                for prompt in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[list[int]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, ids in zip(chunk, generate_ids(model, [encoded[i] for i in chunk], options)):
            answers[i] = ids
    return answers
