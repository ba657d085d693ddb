"""What is known to help training on CPU, measured on slimtune's own LoRA training step: eager attention against
scaled-dot-product attention (transformers' "sdpa", slimtune's default), and torch.compile of the backbone
(dynamic shapes, since batches vary in length), compile time included.

Each variant trains the bundled MiniLM with LoRA (defaults) on the same length-grouped SST-2 batches (batch 32),
from the same initial weights; the variants take turns, one round of `--steps` steps each, `--rounds` times, and the
best round of each is reported, with the first compiled round (which pays the compilation) separately. Speed is
examples per CPU second of this process: run it with one thread (OMP_NUM_THREADS=1).

    PYTHONPATH=src python bench/cpu_speedups.py --steps 30 --rounds 2
"""

import argparse
import time

import torch

from slimtune.data.batching import length_grouped_batches, pad_batch
from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method
from slimtune.tasks import get_task


def build(attention: str, compiled: bool):
    task = get_task("classify")
    backbone = task.load_backbone(None)
    if attention != backbone.model.config._attn_implementation:
        backbone.model.set_attn_implementation(attention)
    torch.manual_seed(0)
    model = task.build_model(backbone, ["negative", "positive"])
    params = attach(model, create_method("lora", {}, "classify"))
    if compiled:
        model.backbone = torch.compile(model.backbone, dynamic=True)
    return task, backbone, model, torch.optim.AdamW(params, lr=2e-3)


def run_steps(variant, batches) -> float:
    """CPU seconds of this process for the steps (with one thread, other processes on a shared machine disturb it
    far less than wall-clock time)."""
    task, _, model, optimizer = variant
    model.train()
    started = time.process_time()
    for batch in batches:
        loss = task.loss(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/sst2/train_8k.tsv.gz")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    variants = {"sdpa (default)": build("sdpa", False), "eager attention": build("eager", False),
                "sdpa + torch.compile": build("sdpa", True)}
    task, backbone = next(iter(variants.values()))[:2]
    rows = task.read(args.train)[: args.steps * 32 * args.rounds]
    features = task.encode(rows, backbone.tokenizer, ["negative", "positive"], backbone.max_length)
    order = length_grouped_batches([len(f["input_ids"]) for f in features], 32, seed=0, epoch=0)
    batches = [pad_batch([features[i] for i in item], backbone.tokenizer.pad_token_id) for item in order]
    examples = {name: [] for name in variants}
    first_compiled = None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps of 32 a round", flush=True)
    for r in range(args.rounds):
        chunk = batches[r * args.steps:(r + 1) * args.steps]
        n = sum(len(b["labels"]) for b in chunk)
        for name, variant in variants.items():
            seconds = run_steps(variant, chunk)
            if "compile" in name and first_compiled is None:
                first_compiled = n / seconds
            examples[name].append(n / seconds)
            print(f"round {r + 1}: {name}: {n / seconds:.1f} examples per CPU second", flush=True)
    base = max(examples["sdpa (default)"])
    print("| variant | best examples per CPU second | vs default |\n|---|---|---|")
    for name, values in examples.items():
        print(f"| {name} | {max(values):.1f} | {max(values) / base:.2f}x |")
    print(f"| sdpa + torch.compile, first round (compilation included) | {first_compiled:.1f} | "
          f"{first_compiled / base:.2f}x |")


if __name__ == "__main__":
    main()
