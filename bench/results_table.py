"""One results row per method, measured: quality, trainable parameters, adapter size, time, examples/s.

Each method trains through the same `train()` as `slimtune train`, one run at a
time, then is scored on a test file the training never saw. Prints Markdown rows.

    python bench/results_table.py --task classify --methods full head lora \\
        --train data/sst2/train_8k.tsv.gz --dev data/sst2/dev_1k.tsv.gz --test data/sst2/heldout_2k.tsv.gz
    python bench/results_table.py --task ner --methods lora --epochs 3 \\
        --train data/conll2003/train.txt.gz --test data/conll2003/valid.txt.gz
"""

import argparse
from pathlib import Path

from slimtune.cli.common import parse_set
from slimtune.runs.adapter_files import load_adapter
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig


def evaluate(run_dir: str, test_path: str) -> dict:
    loaded = load_adapter(run_dir)
    rows = loaded.task.read(test_path)
    features = loaded.task.encode(rows, loaded.backbone.tokenizer, loaded.labels, loaded.backbone.max_length)
    return loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id, 64, loaded.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classify")
    parser.add_argument("--methods", nargs="+", required=True, metavar="METHOD[:KEY=VALUE,...]")
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", help="validation file for early stopping (default: a seeded split of --train)")
    parser.add_argument("--test", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, help="override every method's default")
    parser.add_argument("--out", default="runs/results")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args()
    metric = "accuracy" if args.task == "classify" else "f1"
    if not args.no_header:
        print(f"| method | options | lr | epochs | test {metric} | trainable (%) | adapter KiB | train s | examples/s |")
        print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.methods:
        method, _, option_text = spec.partition(":")
        options = parse_set(option_text.split(";") if option_text else [])
        name = method + ("-" + "-".join(f"{k}{v}" for k, v in options.items()) if options else "")
        out = Path(args.out) / f"{args.task}-{name}".replace(",", "_")
        config = TrainConfig(epochs=args.epochs, lr=args.lr, patience=0)
        s = train(TrainRequest(task=args.task, method=method, train_path=args.train, dev_path=args.dev,
                               out_dir=str(out), options=options, overwrite=True, config=config))
        quality = evaluate(str(out), args.test)[metric]
        shown = " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        print(f"| {method} | {shown} | {s['lr']:g} | {args.epochs} | {quality:.4f} | "
              f"{s['trainable_parameters']:,} ({s['trainable_percent']:.2f}%) | {s['adapter_bytes'] / 1024:.0f} | "
              f"{s['train_seconds']:.0f} | {s['examples_per_second']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
