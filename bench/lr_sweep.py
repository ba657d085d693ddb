"""Measure dev accuracy per learning rate for each method: how the per-method defaults were chosen.

Trains on the vendored 8,000 SST-2 sentences for 1 epoch and scores the vendored
dev split (never the held-out split). Prints a Markdown table.

    python bench/lr_sweep.py --methods lora:5e-4,1e-3,2e-3,4e-3 head:1e-3,5e-3,2e-2
"""

import argparse
import tempfile

from slimtune.cli.common import parse_set
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True, metavar="METHOD:LR,LR")
    parser.add_argument("--train", default="data/sst2/train_8k.tsv.gz")
    parser.add_argument("--dev", default="data/sst2/dev_1k.tsv.gz")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method option")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args()
    options = parse_set(args.set)
    if not args.no_header:
        print("| method | options | batch | lr | dev accuracy | train s | examples/s |\n|---|---|---|---|---|---|---|")
    for spec in args.methods:
        method, _, rates = spec.partition(":")
        for lr in map(float, rates.split(",")):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(epochs=args.epochs, lr=lr, patience=0, batch_size=args.batch_size)
                s = train(TrainRequest(task="classify", method=method, train_path=args.train,
                                       dev_path=args.dev, out_dir=out, config=config, options=options))
            shown = " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            print(f"| {method} | {shown} | {args.batch_size} | {lr:g} | {s['best_dev_accuracy']:.4f} | {s['train_seconds']:.0f} | "
                  f"{s['examples_per_second']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
