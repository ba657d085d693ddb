"""Greedy generation tokens/s on an int8 frozen base (`--base-int8`): dequantising every projection per token
against one fp32 copy per `generate` call (`dequantized_weights`), on a Llama built from tests/tiny_llama.py's
tokenizer at a chosen width, in one run.

    PYTHONPATH=src:. python bench/int8_generation.py --hidden 576 --intermediate 1536 --layers 4   # SmolLM2-135M's block shape
    PYTHONPATH=src:. python bench/int8_generation.py --hidden 36 --intermediate 64 --layers 2      # tests/tiny_llama.py's model
"""

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from slimtune.runs.adapter_files import load_base_model
from slimtune.tasks import generation
from slimtune.tasks.generation import GenerationOptions, generate_ids
from tests.tiny_llama import make_tokenizer


def make_llama(directory: Path, hidden: int, intermediate: int, layers: int) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def tokens_per_second(model, prompts, options, repeats: int) -> tuple[float, list]:
    generate_ids(model, prompts[:1], GenerationOptions(max_new_tokens=2))  # warm-up
    best, out = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        out = generate_ids(model, prompts, options)
        best = max(best, sum(map(len, out)) / (time.perf_counter() - started))
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_base_model("causal-lm", make_llama(Path(tmp), args.hidden, args.intermediate, args.layers),
                                 quantize="int8")
    prompts = [[5 + (i * 7 + j) % 40 for j in range(6 + i % 5)] for i in range(args.batch)]
    options = GenerationOptions(max_new_tokens=args.new_tokens)
    cached, cached_ids = tokens_per_second(loaded.model, prompts, options, args.repeats)
    generation.dequantized_weights = lambda root: contextlib.nullcontext()  # the path before: per token
    per_token, per_token_ids = tokens_per_second(loaded.model, prompts, options, args.repeats)
    print(f"int8 base, hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers; "
          f"batch {args.batch}, {args.new_tokens} new tokens, {args.threads} thread(s), best of {args.repeats}")
    print(f"dequantised per token: {per_token:8.1f} tokens/s")
    print(f"dequantised per call:  {cached:8.1f} tokens/s  ({cached / per_token:.2f}x)")
    print(f"same tokens: {cached_ids == per_token_ids}")


if __name__ == "__main__":
    main()
