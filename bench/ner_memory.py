"""Where NER training memory goes, and what pieces cost: MiniLM with LoRA on every linear layer (ner's default).

1. RSS after one forward and backward of a batch of 32 at each sequence length (activations grow with tokens).
2. Time of one 32 x 64-token batch trained whole and in pieces of 16 and 8 rows (the trainer's max_batch_tokens).

    PYTHONPATH=src python bench/ner_memory.py --lengths 20,80,164
"""

import argparse
import time

import psutil
import torch

from slimtune.methods.adaptation import attach
from slimtune.methods.lora import ALL_BLOCK_LINEARS
from slimtune.methods.registry import create_method
from slimtune.tasks import get_task

LABELS = ["O"] + [f"{prefix}-{kind}" for kind in ("LOC", "MISC", "ORG", "PER") for prefix in "BI"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="20,80,164")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    process = psutil.Process()
    mib = lambda: process.memory_info().rss / 2**20  # noqa: E731
    task = get_task("ner")
    model = task.build_model(task.load_backbone(None), LABELS)
    attach(model, create_method("lora", {"targets": ALL_BLOCK_LINEARS}))
    model.train()
    print(f"model built: RSS {mib():.0f} MiB")
    for length in map(int, args.lengths.split(",")):
        ids = torch.randint(1000, 2000, (32, length))
        before = mib()
        loss = task.loss(model(input_ids=ids, attention_mask=torch.ones_like(ids)), torch.randint(0, 9, ids.shape))
        grown = mib() - before
        loss.backward()
        print(f"32 x {length} tokens: forward +{grown:.0f} MiB; RSS after backward {mib():.0f} MiB")
    ids, labels = torch.randint(1000, 2000, (32, 64)), torch.randint(0, 9, (32, 64))
    best = {rows: float("inf") for rows in (32, 16, 8)}
    for _ in range(3):
        for rows in best:
            started = time.perf_counter()
            for start in range(0, 32, rows):
                piece = slice(start, start + rows)
                task.loss(model(input_ids=ids[piece], attention_mask=torch.ones_like(ids[piece])),
                          labels[piece]).backward()
            best[rows] = min(best[rows], time.perf_counter() - started)
    for rows, seconds in best.items():
        print(f"32 x 64 batch in pieces of {rows * 64} tokens: {seconds:.2f} s (best of 3)")


if __name__ == "__main__":
    main()
