"""Argument helpers shared by several sub-commands."""

import argparse
import functools
import os
import sys
from pathlib import Path

from slimtune.errors import SlimtuneError


def parse_set(pairs: list[str] | None) -> dict[str, str]:
    """`--set r=16 --set targets=query,value` → {"r": "16", "targets": "query,value"}."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SlimtuneError(f"--set expects key=value, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def add_reader_flags(parser: argparse.ArgumentParser) -> None:
    """How data files are read: table columns (classify) or the tag scheme of CoNLL files (ner)."""
    from slimtune.data.tag_schemes import SCHEMES

    parser.add_argument("--text-col", help="name of the text column (default: sentence, text or content)")
    parser.add_argument("--label-col", help="name of the label column (default: label)")
    parser.add_argument("--scheme", choices=SCHEMES,
                        help="tag scheme of CoNLL files, iob2 being BIO (default: detected from the tags)")


def reader_options(args) -> dict:
    return {"text_col": args.text_col, "label_col": args.label_col, "scheme": args.scheme}


def read_inputs(texts: list[str], file: str | None) -> list[str]:
    """Texts from arguments, else a file (one per line), else standard input."""
    if texts:
        return texts
    if file:
        path = Path(file)
        if not path.is_file():
            raise SlimtuneError(f"{file}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
    elif not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
    else:
        raise SlimtuneError("no input: give texts as arguments, --file PATH, or pipe them on stdin")
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise SlimtuneError("no input texts (all lines empty)")
    return texts


QUANTIZE_HELP = ("int8 linear layers on CPU: with --adapter, PyTorch's dynamic int8 quantization after merging the "
                 "adapter where it can be; without (causal-lm base), int8 weights as `train --quantize int8` keeps them")


def load_model_or_adapter(args):
    """The adapter in --adapter (one --task-name of a multi-task adapter); without one, the --model base as it
    is for --task (causal-lm only)."""
    from slimtune.adapter_files import load_adapter, load_base_model

    task_name = getattr(args, "task_name", None)
    if args.adapter:
        given = [f"--{name.replace('_', '-')}" for name in ("task", "max_length")
                 if getattr(args, name, None) is not None]
        if given:
            raise SlimtuneError(f"{', '.join(given)}: the adapter records these; give them only without --adapter")
        return load_adapter(args.adapter, args.model, getattr(args, "quantize", None), task_name)
    if task_name is not None:
        raise SlimtuneError("--task-name picks a task of a multi-task --adapter; give --adapter DIR")
    if not args.task:
        raise SlimtuneError("give --adapter DIR, or --task causal-lm with --model to use a base model as it is")
    return load_base_model(args.task, args.model, getattr(args, "max_length", None), getattr(args, "quantize", None))


THREADS_CAP = 8  # a large machine's cores are not all spun up for small models unless --threads asks


@functools.cache
def default_threads() -> int:
    """CPU threads for torch when --threads is not given: OMP_NUM_THREADS when set, else the physical cores this
    process may run on, at most THREADS_CAP.

    Those cores are the CPUs of its affinity mask (`os.sched_getaffinity`: taskset, cpusets), hyper-threads of one
    core counted once, and no more than a container's CPU quota (cgroup v2 `cpu.max`). torch's own default counts
    every core of the machine, so in a container limited to 2 of 64 CPUs it runs 64 threads on 2. The choice never
    depends on the current load, as thread counts change floating-point results and runs must repeat exactly; on
    a machine busy with other jobs, pass a smaller --threads (one thread ran 13x faster than torch's default on a
    busy machine).
    """
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    cores = {_core_of(cpu) for cpu in os.sched_getaffinity(0)}
    return max(1, min(len(cores), _cgroup_cpu_limit() or len(cores), THREADS_CAP))


def _core_of(cpu: int) -> str:
    """The CPUs sharing `cpu`'s physical core, as Linux lists them ("0,32"); the CPU itself where unknown."""
    try:
        return Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return str(cpu)


def _cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole CPUs of this cgroup's quota ("200000 100000" → 2), None when unlimited or unknown."""
    try:
        quota, period = Path(path).read_text().split()[:2]
        return max(1, int(quota) // int(period)) if quota != "max" else None
    except (OSError, ValueError):
        return None


def add_threads_flag(parser: argparse.ArgumentParser, what: str = "CPU threads for torch") -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help=f"{what} (default here: {default_threads()}, the physical cores this process may use, "
                             f"at most {THREADS_CAP}, or OMP_NUM_THREADS when set; on a machine busy with other "
                             "jobs fewer, down to 1, can be much faster)")


def apply_threads(args) -> None:
    """Set torch's thread count from --threads or the default, before any computation."""
    if args.threads is not None and args.threads < 1:
        raise SlimtuneError(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads or default_threads())
