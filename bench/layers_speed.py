"""Training speed of `layers` (top 2 blocks, with and without the lower-block cache) against `lora`.

Trains the bundled MiniLM on a few hundred SST-2 sentences for a few epochs with
the real trainer and reports examples/s over all epochs and over the epochs
after the first (where the cache is warm). Dev is a small slice, so evaluation
stays short; it is not timed either way.

    python bench/layers_speed.py --examples 400 --epochs 3
"""

import argparse
import tempfile

from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method
from slimtune.models.loading import load_backbone
from slimtune.tasks import get_task
from slimtune.training.config import TrainConfig
from slimtune.training.trainer import Trainer

CONFIGS = {"lora": ("lora", {}), "layers": ("layers", {}), "layers+cache": ("layers", {"cache": "true"})}


def measure(method_name: str, options: dict, rows, dev_rows, epochs: int, batch_size: int) -> dict:
    """examples/s over all epochs and over epochs 2.., from the trainer's own per-batch timing."""
    task = get_task("classify")
    backbone = load_backbone(None)
    labels = task.label_names(rows)
    method = create_method(method_name, options)
    model = task.build_model(backbone, labels)
    params = attach(model, method)
    train = task.encode(rows, backbone.tokenizer, labels, backbone.max_length)
    dev = task.encode(dev_rows, backbone.tokenizer, labels, backbone.max_length)
    first_epoch = {}

    def after_step(progress) -> None:
        if progress.epoch == 0:
            first_epoch.update(examples=progress.examples_seen, seconds=progress.train_seconds)

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=method.default_lr, patience=0)
        trainer = Trainer(model, method, task, params, config, out, backbone.tokenizer.pad_token_id, labels)
        trainer.step_callbacks.append(after_step)
        summary = trainer.fit(train, dev)
    later_examples = summary["train_examples_seen"] - first_epoch["examples"]
    later_seconds = summary["train_seconds"] - first_epoch["seconds"]
    return {"all": summary["examples_per_second"],
            "later": later_examples / later_seconds if later_seconds > 0 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/sst2/train_8k.tsv.gz")
    parser.add_argument("--examples", type=int, default=400, help="training sentences (the first N)")
    parser.add_argument("--dev-examples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    rows = get_task("classify").read(args.train)
    train_rows, dev_rows = rows[: args.examples], rows[args.examples : args.examples + args.dev_examples]
    speeds = {name: measure(method, options, train_rows, dev_rows, args.epochs, args.batch_size)
              for name, (method, options) in CONFIGS.items()}
    print(f"{len(train_rows)} sentences, {args.epochs} epochs, batch {args.batch_size}\n")
    print("| method | examples/s, all epochs | examples/s, epochs 2.. | vs lora (all) | vs lora (2..) |")
    print("|---|---|---|---|---|")
    for name, s in speeds.items():
        lora = speeds["lora"]
        print(f"| {name} | {s['all']:.0f} | {s['later']:.0f} | {s['all'] / lora['all']:.2f}x | "
              f"{s['later'] / lora['later']:.2f}x |")


if __name__ == "__main__":
    main()
