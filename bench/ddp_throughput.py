"""Data-parallel throughput: `slimtune train --nproc N` against one process, same global batch, this machine.

Trains LoRA on the bundled all-MiniLM-L6-v2 over a sample of SST-2 through the
command line: in one process with one thread, in one process with a thread per
core, and on N ranks (gloo on CPUs, nccl on GPUs; each CPU rank gets cores / N
threads). Reports the trainer's own examples/s (training batches only, evaluation
untimed) and the ratio of N ranks to the better one-process run. Dev accuracy
differs a little between runs: each rank draws its own dropout masks.

    python bench/ddp_throughput.py --examples 400 --nproc 2
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(args, out: Path, nproc: int, threads: int | None = None) -> dict:
    command = [sys.executable, "-m", "slimtune", "train", "--method", "lora", "--train", args.train, "--dev", args.dev,
               "--max-train-examples", str(args.examples), "--epochs", "1", "--batch-size", str(args.batch_size),
               "--patience", "0", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if nproc > 1:
        command += ["--nproc", str(nproc)]
        env.pop("OMP_NUM_THREADS", None)  # --nproc gives each rank its share of the cores
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/sst2/train_8k.tsv.gz")
    parser.add_argument("--dev", default="data/sst2/dev_1k.tsv.gz")
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, both runs")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as root:
        runs = {"1 process, 1 thread": measure(args, Path(root) / "one-1", 1, 1)}
        if cores > 1:
            runs[f"1 process, {cores} threads"] = measure(args, Path(root) / "one-all", 1, cores)
        runs[f"{args.nproc} processes"] = measure(args, Path(root) / "many", args.nproc)
    print(f"LoRA on MiniLM, {args.examples} SST-2 examples, global batch {args.batch_size}, {cores} CPU cores")
    print("| run | examples/s | train s | best dev accuracy |\n|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['examples_per_second']:.1f} | {r['train_seconds']:.1f} | {r['best_dev_accuracy']:.4f} |")
    many = runs.pop(f"{args.nproc} processes")["examples_per_second"]
    best_one = max(r["examples_per_second"] for r in runs.values())
    print(f"throughput {args.nproc} processes / best single process: {many / best_one:.2f}x")


if __name__ == "__main__":
    main()
