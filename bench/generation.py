"""Greedy generation tokens/s: slimtune's `generate` against transformers' own `model.generate`, in one run.

Both decode the same chat prompts with the same model (SmolLM2-135M-Instruct by default, `--model`), greedily, with
transformers' key/value cache, in batches of `--batch` left-padded prompts, and count the new tokens each answer
has before its end token. slimtune goes through `generate_texts` (what `slimtune generate` runs: chat template,
batches, decoding); the peer is the usual transformers recipe: `apply_chat_template`, a left-padding tokenizer,
`AutoModelForCausalLM.generate(max_new_tokens=..., do_sample=False)`, `batch_decode`. Two prompt sets: open-ended
requests (answers run to `--new-tokens`) and the SST-2 instruction prompts `eval` scores by exact match (answers
of a word or two; max new tokens as eval sets them), whose prompts differ more in length. The two run in turn,
`--repeats` passes each; each figure is the fastest pass (wall clock, and this process's CPU time, the steadier
of the two on a shared machine); the answers must be the same token for token.

    PYTHONPATH=src python bench/generation.py                       # 16 prompts, 32 new tokens, 1 thread
    PYTHONPATH=src python bench/generation.py --threads 2 --prompts 32
"""

import argparse
import gzip
import json
import time

import torch

from slimtune.models.loading import resolve_model_path
from slimtune.runs.run_loader import load_base_model
from slimtune.tasks.generation import GenerationOptions, generate_texts

TOPICS = ["autumn", "the sea", "a train journey", "bread", "a lighthouse", "chess", "rain in a city", "bees",
          "an old map", "winter mornings", "a violin", "the moon", "a market", "mountains", "a library", "tea"]
FORMS = ["Write a short poem about {}.", "Describe {} in three sentences.", "Tell a very short story about {}.",
         "Explain to a child what makes {} interesting."]


def open_prompts(count: int) -> list[str]:
    return [FORMS[i % len(FORMS)].format(TOPICS[i % len(TOPICS)]) for i in range(count)]


def instruction_prompts(path: str, count: int, tokenizer) -> tuple[list[str], int]:
    """The first `count` prompts of an instruction file, and the max new tokens eval gives them (longest answer + 4,
    tasks/causal_lm.py)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(count))]
    longest = max(len(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) for r in rows)
    return [r["prompt"] for r in rows], longest + 4


def add_lora(model, lm, rank: int, seed: int):
    """slimtune's LoRA (its causal-LM default targets: every projection of the blocks) on `model`, and peft's on
    `lm` with the same targets, rank, scale and factors; B drawn at random, so that the adapter changes the answers."""
    from peft import LoraConfig, get_peft_model

    from slimtune.methods.adaptation import attach
    from slimtune.methods.registry import create_method

    method = create_method("lora", {"r": str(rank)})
    attach(model, method)
    model.requires_grad_(False)
    torch.manual_seed(seed)
    ours = {name: layer for name, layer in model.backbone.named_modules() if hasattr(layer, "lora_B")}
    for layer in ours.values():
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    targets = sorted({name.rsplit(".", 1)[-1] for name in ours})
    peer = get_peft_model(lm, LoraConfig(r=rank, lora_alpha=method.options.alpha, lora_dropout=0.0,
                                         target_modules=targets))
    for name, layer in ours.items():
        theirs = peer.base_model.model.model.get_submodule(name)
        theirs.lora_A["default"].weight.data.copy_(layer.lora_A)
        theirs.lora_B["default"].weight.data.copy_(layer.lora_B)
    return peer.eval()


def timed(run) -> tuple[float, float, list[str], int]:
    """(wall seconds, this process's CPU seconds, answers, new tokens) of one call of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    answers, tokens = run()
    return time.perf_counter() - wall, time.process_time() - cpu, answers, tokens


def slimtune_generate(model, prompts: list[str], batch: int, new_tokens: int):
    options = GenerationOptions(max_new_tokens=new_tokens)

    def run():
        answers = generate_texts(model, prompts, options, batch_size=batch)
        tokens = sum(len(model.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        return answers, tokens

    return run


def transformers_generate(lm, tokenizer, prompts: list[str], batch: int, new_tokens: int):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]

    def run():
        answers = []
        for start in range(0, len(texts), batch):
            inputs = tokenizer(texts[start : start + batch], return_tensors="pt", padding=True,
                               add_special_tokens=False)
            with torch.no_grad():
                out = lm.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
            answers += tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        return answers, tokens

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--instructions", default="data/sst2_instruct/heldout_500.jsonl.gz")
    parser.add_argument("--lora", type=int, default=0, metavar="R",
                        help="also compare with a rank-R LoRA adapter: slimtune's against peft's (0: base only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = load_base_model("causal-lm", args.model)
    path = resolve_model_path(args.model)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    instructions, eval_tokens = instruction_prompts(args.instructions, args.prompts, tokenizer)
    print(f"{args.model}: {args.prompts} prompts, batches of {args.batch}, greedy, {args.threads} thread(s), "
          f"best of {args.repeats}")
    compare(loaded.model, lm, tokenizer, args, instructions, eval_tokens, "base model")
    if args.lora:
        peer = add_lora(loaded.model, lm, args.lora, seed=0)
        compare(loaded.model, peer, tokenizer, args, instructions, eval_tokens,
                f"LoRA r={args.lora} (transformers + peft)")


def compare(model, lm, tokenizer, args, instructions: list[str], eval_tokens: int, label: str) -> None:
    for name, prompts, new_tokens in [("open-ended", open_prompts(args.prompts), args.new_tokens),
                                      ("eval's exact-match", instructions, eval_tokens)]:
        ours = slimtune_generate(model, prompts, args.batch, new_tokens)
        theirs = transformers_generate(lm, tokenizer, prompts, args.batch, new_tokens)
        ours(), theirs()  # warm-up
        passes = [(timed(theirs), timed(ours)) for _ in range(args.repeats)]  # in turn, so drift meets both
        peer_wall, peer_cpu = min(p[0][0] for p in passes), min(p[0][1] for p in passes)
        wall, cpu = min(p[1][0] for p in passes), min(p[1][1] for p in passes)
        (*_, peer_answers, peer_tokens), (*_, answers, tokens) = passes[-1]
        print(f"{label}, {name} prompts, up to {new_tokens} new tokens ({tokens} generated):")
        print(f"  transformers generate: {peer_wall:7.2f} s ({peer_cpu:6.2f} s CPU), {peer_tokens / peer_wall:7.1f} "
              f"tokens/s")
        print(f"  slimtune generate:     {wall:7.2f} s ({cpu:6.2f} s CPU), {tokens / wall:7.1f} tokens/s  "
              f"({peer_wall / wall:.2f}x; CPU {peer_cpu / cpu:.2f}x)")
        print(f"  same answers: {answers == peer_answers}")


if __name__ == "__main__":
    main()
