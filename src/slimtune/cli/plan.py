"""`slimtune plan`: what a method will adapt and cost, measured on a few steps, next to full fine-tuning."""

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

HELP = """Before a long run: the modules a method adapts, its trainable parameters (count and share of the model),
the size of its adapter file, and the step time, examples/s and peak memory measured on a few real training
steps, next to the same figures for full fine-tuning.

Steps run on a seeded sample of --train when given (and the epoch time is estimated from its size), else on
synthetic rows of --seq-len tokens. Each method is measured in its own process; peak memory is that process's
peak resident set (model, data sample and the training steps).

examples:
  slimtune plan --method lora
  slimtune plan --method lora --set r=16 --set targets=query,key,value,dense --train data/sst2/train_8k.tsv.gz
  slimtune plan --task ner --method adapter --train data/conll2003/train.txt.gz --batch-size 16
"""


def register(sub) -> None:
    from slimtune.cli.common import add_reader_flags, add_threads_flag

    p = sub.add_parser("plan", help="preview a method's parameters, adapter size, step time and memory",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classify", help="task: classify (default) or ner")
    p.add_argument("--method", required=True, help="PEFT method (see `slimtune methods`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option, repeatable (e.g. r=16)")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--train", metavar="PATH", help="training data to sample batches from (default: synthetic rows)")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per synthetic row (default 64)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per measured step, for the method and full "
                   "fine-tuning alike (default: 32)")
    p.add_argument("--steps", type=int, default=5, help="measured training steps after one warm-up step")
    p.add_argument("--max-length", type=int, help="token limit per text")
    add_threads_flag(p, "CPU threads for torch in each measured run")
    p.add_argument("--no-full", action="store_true", help="skip measuring full fine-tuning for contrast")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    add_reader_flags(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.cli.common import default_threads, parse_set, reader_options
    from slimtune.errors import SlimtuneError
    from slimtune.methods.registry import create_method

    options = parse_set(args.set)
    create_method(args.method, options, args.task)  # a bad method or option fails here, before any model is loaded
    for name in ("batch_size", "steps", "seq_len"):
        if getattr(args, name) < 1 or (name == "seq_len" and args.seq_len < 3):
            raise SlimtuneError(f"--{name.replace('_', '-')} is too small")
    if args.train and not Path(args.train).is_file():
        raise SlimtuneError(f"--train {args.train}: no such file")
    request = {"task": args.task, "options": options, "model": args.model, "train": args.train,
               "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
               "max_length": args.max_length,
               "read_options": {k: v for k, v in reader_options(args).items() if v is not None}}
    methods = [args.method] + ([] if args.no_full or args.method == "full" else ["full"])
    threads = args.threads or default_threads()  # the probe runs outside the command line that applies it
    results = [measure(dict(request, method=m, options=options if m == args.method else {}), threads)
               for m in methods]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else {"method": results[0], "full": results[1]}, indent=2))
    else:
        print(render(results, args))
    return 0


def measure(request: dict, threads: int | None) -> dict:
    """Run the probe for one method in its own process; its result plus the process's peak RSS."""
    from slimtune.compare.measure import run_measured
    from slimtune.errors import SlimtuneError

    print(f"measuring {request['method']} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="slimtune-plan-") as work:
        request_path, result_path = Path(work) / "request.json", Path(work) / "result.json"
        request_path.write_text(json.dumps(request))
        child = run_measured([sys.executable, "-m", "slimtune.compare.probe", str(request_path), str(result_path)],
                             Path(work) / "probe.log", threads,
                             on_wait=lambda seconds, line: print(
                                 f"measuring {request['method']}: {seconds:.0f} s" + (f"; {line}" if line else ""),
                                 file=sys.stderr, flush=True))
        if child.returncode != 0:
            raise SlimtuneError(f"measuring {request['method']} failed: {child.last_error_line}")
        return {**json.loads(result_path.read_text()), "peak_rss_bytes": child.peak_rss_bytes}


def render(results: list[dict], args) -> str:
    from slimtune.compare.probe import group_names
    from slimtune.compare.report import human_bytes

    main = results[0]
    source = f"a seeded sample of {args.train}" if args.train else f"synthetic rows of {args.seq_len} tokens"
    lines = [f"plan: {main['method']} on {args.model or 'all-MiniLM-L6-v2'} ({args.task}); "
             f"options: {' '.join(f'{k}={_option(v)}' for k, v in main['options'].items()) or 'none'}",
             f"matched modules ({len(main['matched'])}):"]
    lines += [f"  {pattern}" + (f"  x{count}" if count > 1 else "") for pattern, count in group_names(main["matched"])]
    lines += [f"  + the task head ({main['head_parameters']:,} parameters, trained with every method)",
              f"backbone parameters by the method's formula: {main['backbone_formula']:,}", ""]
    rows = {
        "trainable parameters": lambda r: f"{r['trainable_parameters']:,} ({r['trainable_percent']:.2f}%)",
        "of all parameters": lambda r: f"{r['total_parameters']:,}",
        "adapter file": lambda r: human_bytes(r["adapter_bytes"]),
        "step time": lambda r: f"{r['mean_step_seconds']:.3f} s",
        "examples/s": lambda r: f"{r['examples_per_second']:.0f}",
        "peak memory (RSS)": lambda r: human_bytes(r["peak_rss_bytes"]),
    }
    if main["data_rows"]:
        steps = math.ceil(main["data_rows"] / args.batch_size)
        rows[f"epoch of {main['data_rows']:,} rows"] = lambda r: f"≈ {steps * r['mean_step_seconds']:.0f} s"
    width = max(map(len, rows)) + 2
    lines.append(" " * width + "".join(f"{r['method']:>24}" for r in results))
    lines += [f"{label:<{width}}" + "".join(f"{cell(r):>24}" for r in results) for label, cell in rows.items()]
    lines += ["", f"measured: batch {args.batch_size}, {source} ({main['mean_tokens']:.0f} tokens on average), "
                  f"mean of {args.steps} training steps after a warm-up step; memory is the peak resident set of a "
                  "process that loaded the model and took those steps"]
    return "\n".join(lines)


def _option(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(default)"
    return str(value)
