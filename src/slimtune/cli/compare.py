"""`slimtune compare`: train several methods over several seeds and report quality, parameters, time and memory."""

import argparse
import platform
import shlex
import sys
from pathlib import Path

from slimtune.cli.run_config import add_config_flag

HELP = """Train every method in --methods with every seed, one run at a time, each in its own process, and
write OUT/results.csv, results.json, results.md and report.html (tables and plots, one self-contained file).

Measured per run: training wall-clock without evaluation, examples/s, peak resident memory of the training
process, trainable parameters, adapter file size, and quality: the primary metric on --test when given, else the
best dev score. Runs already finished with the same settings are reused (rerun the same command to resume);
a run that fails is reported with its error and the others still run.

examples:
  slimtune compare --task classify --train data/sst2/train_8k.tsv.gz --dev data/sst2/dev_1k.tsv.gz \\
      --test data/sst2/heldout_2k.tsv.gz --methods full,head,bitfit,lora --seeds 3 --out runs/compare-sst2
  slimtune compare ... --methods all --set lora.r=16 --set adapter.size=32 --lr full=1e-4
  slimtune compare ... --out runs/compare-sst2 --report-only      # rewrite the reports from finished runs
"""


def register(sub) -> None:
    from slimtune.cli.common import add_reader_flags, add_threads_flag

    p = sub.add_parser("compare", help="compare methods over seeds: quality, parameters, time, memory",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classify", help="task: classify (default) or ner")
    p.add_argument("--methods", required=True, metavar="M1,M2,...|all",
                   help="methods to compare, or all (every method the task can take; the report names the others)")
    p.add_argument("--train", required=True, metavar="PATH", help="training data")
    p.add_argument("--dev", metavar="PATH", help="validation data (default: a seeded 10%% split of train)")
    p.add_argument("--test", metavar="PATH", help="held-out data scored after training (default: report best dev)")
    p.add_argument("--out", required=True, metavar="DIR", help="comparison directory (runs/ and the reports)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="runs per method (default 1)")
    p.add_argument("--first-seed", type=int, default=42, help="seeds are FIRST..FIRST+N-1 (default 42, as train)")
    p.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="a method's option, e.g. lora.r=16")
    p.add_argument("--lr", action="append", metavar="RATE|METHOD=RATE",
                   help="learning rate for every method, or for one (repeatable; default: each method's own)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    p.add_argument("--batch-size", type=int, help="examples per step for every method (default: each method's own, "
                   "as train takes it: 32, or the one measured for the task, `slimtune methods`)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience per run (0: off)")
    p.add_argument("--max-train-examples", type=int, metavar="N", help="train each run on a seeded sample of N rows")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, help="token limit per text")
    add_threads_flag(p, "CPU threads for torch in each run")
    p.add_argument("--title", help="heading of report.html")
    p.add_argument("--report-only", action="store_true", help="run nothing; rewrite the reports from finished runs")
    add_reader_flags(p)
    add_config_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.cli.common import reader_options
    from slimtune.compare.report import write_reports
    from slimtune.compare.runner import run_comparison
    from slimtune.compare.settings import (CompareSettings, parse_learning_rates, parse_method_options,
                                           parse_methods)
    from slimtune.errors import SlimtuneError
    from slimtune.tasks import get_task

    task = get_task(args.task)
    methods, left_out = parse_methods(args.methods, task)
    for why in left_out.values():
        print(f"left out: {why}", file=sys.stderr)
    if args.seeds < 1:
        raise SlimtuneError("--seeds must be at least 1")
    for flag in ("train", "dev", "test"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise SlimtuneError(f"--{flag} {path}: no such file")
    settings = CompareSettings(
        task=args.task, train=args.train, dev=args.dev, test=args.test, methods=methods,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        options=parse_method_options(args.set, methods), lrs=parse_learning_rates(args.lr, methods),
        epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
        max_train_examples=args.max_train_examples, model=args.model, max_length=args.max_length,
        threads=args.threads, read_options={k: v for k, v in reader_options(args).items() if v is not None},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = run_comparison(settings, out, log=lambda line: print(line, file=sys.stderr, flush=True),
                             execute=not args.report_only)
    from slimtune.compare.summary import summarize

    rows = summarize(records, methods)
    meta = {"task": args.task, "metric": task.primary_metric, "train": args.train, "dev": args.dev,
            "test": args.test, "epochs": args.epochs, "batch_size": args.batch_size, "seeds": settings.seeds,
            "threads": args.threads, "machine": machine(args.threads), "left_out": left_out,
            "command": command_line(args)}
    write_reports(out, records, rows, meta, args.title or f"slimtune compare: {args.task} on {Path(args.train).name}")
    failed = sum(r["status"] == "failed" for r in records)
    print(f"{len(records) - failed} of {len(records)} runs finished; reports in {out}/ "
          "(results.csv, results.json, results.md, report.html)", file=sys.stderr)
    print((out / "results.md").read_text())
    return 1 if failed else 0


def command_line(args) -> str:
    """The command that reproduces these runs: as it was given, less `--report-only`."""
    return shlex.join(["slimtune", *(word for word in args.argv if word != "--report-only")])


def machine(threads: int | None) -> str:
    import os

    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{threads or torch.get_num_threads()} threads per run")
