"""LoRA training throughput: slimtune vs Hugging Face transformers + peft, measured in one run.

Both train the bundled all-MiniLM-L6-v2 with LoRA (same data, batch size, rank,
targets, learning rate, epochs) and are scored on the same held-out split.
The peer follows its usual recipe: AutoModelForSequenceClassification (CLS
pooler), peft.get_peft_model, transformers.Trainer with dynamic padding, run twice: with
its default random batches and with length-grouped batches (train_sampling_strategy
"group_by_length", as slimtune batches). The same run measures the machine's fp32 GEMM
peak (the FFN's matmul shape, best of several) and reports each trainer's share of it,
counting 4 FLOPs per frozen linear weight per token (forward, and the input gradient in
backward; frozen weights get no weight gradient) plus 6 per trained one.

    python bench/train_throughput.py                     # 8,000 SST-2 sentences, 1 epoch
    python bench/train_throughput.py --train-examples 1000
"""

import argparse
import os
import tempfile
import time

import torch

from slimtune.data.table import read_labelled_texts
from slimtune.models.loading import resolve_model_path
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks.classify import sort_labels
from slimtune.training.config import TrainConfig


def run_slimtune(args, out_dir: str) -> dict:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=0, seed=args.seed)
    summary = train(TrainRequest(
        task="classify", method="lora", train_path=args.train, dev_path=args.test, out_dir=out_dir,
        max_train_examples=args.train_examples, config=config,
        options={"r": str(args.r), "alpha": str(args.alpha), "targets": args.targets}))
    return {"examples_per_second": summary["examples_per_second"], "seconds": summary["train_seconds"],
            "accuracy": summary["best_dev_accuracy"], "tokens_per_second": summary["tokens_per_second"]}


def run_peft(args, out_dir: str, sampling: str = "random") -> dict:
    import random

    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    path = resolve_model_path(None)
    rows = read_labelled_texts(args.train)
    if args.train_examples and len(rows) > args.train_examples:
        keep = sorted(random.Random(args.seed).sample(range(len(rows)), args.train_examples))
        rows = [rows[i] for i in keep]
    test_rows = read_labelled_texts(args.test)
    labels = sort_labels(r.label for r in rows)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(data):
        enc = tokenizer([r.text for r in data], truncation=True, max_length=256)
        return [{"input_ids": i, "attention_mask": m, "labels": labels.index(r.label)}
                for i, m, r in zip(enc["input_ids"], enc["attention_mask"], data)]

    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=args.targets.split(","), task_type="SEQ_CLS"))
    total_steps = -(-len(rows) // args.batch_size) * args.epochs
    training_args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=int(0.06 * total_steps), weight_decay=0.01,
        lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to=[], seed=args.seed, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy=sampling)
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(rows),
                      data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(encode(test_rows))
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    tokens = sum(len(r["input_ids"]) for r in encode(rows)) * args.epochs
    return {"examples_per_second": len(rows) * args.epochs / seconds, "seconds": seconds, "accuracy": accuracy,
            "tokens_per_second": tokens / seconds}


def gemm_peak_flops(repeats: int = 20) -> float:
    """The machine's fp32 matmul FLOP/s now, on the shape of MiniLM's FFN for a batch of 32 x 32 tokens."""
    a, b = torch.randn(1024, 384), torch.randn(384, 1536)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * 1024 * 384 * 1536 / best


def flops_per_token() -> float:
    """Training FLOPs per token of MiniLM with LoRA r=8 on query/value: 4 per frozen linear weight, about 6 per
    trained one (negligible), attention scores ignored (short sentences)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_model_path(None))
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layer." in n)
    return 4.0 * linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/sst2/train_8k.tsv.gz")
    parser.add_argument("--test", default="data/sst2/heldout_2k.tsv.gz")
    parser.add_argument("--train-examples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--targets", default="query,value")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LoRA r={args.r} on {args.targets}, "
          f"lr {args.lr:g}, batch {args.batch_size}, {args.train_examples} examples x {args.epochs} epoch(s)")
    peak = gemm_peak_flops()
    with tempfile.TemporaryDirectory() as ours_dir, tempfile.TemporaryDirectory() as peer_dir:
        ours = run_slimtune(args, ours_dir)
        grouped = run_peft(args, f"{peer_dir}/grouped", "group_by_length")
        default = run_peft(args, f"{peer_dir}/default")
    peak = max(peak, gemm_peak_flops())  # measured before and after: the better is the machine's peak
    per_token = flops_per_token()
    print(f"fp32 GEMM peak measured: {peak / 1e9:.1f} GFLOP/s")
    print("| trainer | examples/s | train s | held-out accuracy | share of GEMM peak |\n|---|---|---|---|---|")
    rows = (("slimtune", ours), ("transformers + peft, length-grouped", grouped),
            ("transformers + peft, default", default))
    for name, r in rows:
        print(f"| {name} | {r['examples_per_second']:.1f} | {r['seconds']:.1f} | {r['accuracy']:.4f} | "
              f"{r['tokens_per_second'] * per_token / peak:.0%} |")
    for name, r in rows[1:]:
        print(f"speed ratio slimtune / ({name}): {ours['examples_per_second'] / r['examples_per_second']:.2f}x")


if __name__ == "__main__":
    main()
