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
    parser.add_argument("--label-names", metavar="NAMES",
                        help="names for integer labels: negative,positive (in numeric order) or 0=negative,1=positive")


def reader_options(args) -> dict:
    return {"text_col": args.text_col, "label_col": args.label_col, "scheme": args.scheme,
            "label_names": args.label_names}


def read_inputs(texts: list[str], file: str | None) -> list[str]:
    """Texts from arguments, else a file (one per line), else standard input."""
    if texts:
        return texts
    if file:
        path = Path(file)
        from slimtune.data.files import read_text

        lines = read_text(path).splitlines()
    elif not sys.stdin.isatty():
        try:
            lines = sys.stdin.read().splitlines()
        except UnicodeDecodeError as e:
            raise SlimtuneError(f"standard input: not UTF-8 text ({e.reason} at byte {e.start})") from None
    else:
        raise SlimtuneError("no input: give texts as arguments, --file PATH, or pipe them on stdin")
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise SlimtuneError("no input texts (all lines empty)")
    return texts


BASE_INT8_HELP = "keep the frozen base weights in int8 (per channel, weight-only)"
INFERENCE_INT8_HELP = "merge the adapter where it can be, then PyTorch's dynamic int8 linear layers on CPU"


class DeprecatedSpelling(argparse.Action):
    """An old flag that still works for one release, saying on stderr what replaces it."""

    def __init__(self, option_strings, dest, use: str = "", **kwargs):
        self.use = use
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and goes in the next release; use {self.use}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_int8_flags(parser, base_help: str | None = None, inference_help: str | None = None,
                   quantize_dest: str = "quantize", quantize_use: str = "") -> None:
    """`--base-int8` (a weight-only int8 frozen base) and/or `--inference-int8` (merge, then dynamic int8),
    and the old `--quantize` that meant either, deprecated."""
    if base_help:
        parser.add_argument("--base-int8", choices=("int8",), help=base_help)
    if inference_help:
        parser.add_argument("--inference-int8", choices=("int8",), help=inference_help)
    parser.add_argument("--quantize", choices=("int8",), dest=quantize_dest, action=DeprecatedSpelling,
                        use=quantize_use, help=f"deprecated: use {quantize_use}")


def add_model_int8_flags(parser) -> None:
    """The int8 flags of commands that take an --adapter or, without one, a base model."""
    add_int8_flags(parser, base_help="without --adapter (causal-lm base): " + BASE_INT8_HELP,
                   inference_help="with --adapter: " + INFERENCE_INT8_HELP,
                   quantize_use="--inference-int8 with --adapter, --base-int8 without")


def load_model_or_adapter(args):
    """The adapter in --adapter (one --task-name of a multi-task adapter); without one, the --model base as it
    is for --task (causal-lm only)."""
    from slimtune.runs.adapter_files import load_base_model

    task_name = getattr(args, "task_name", None)
    base_int8, inference_int8 = getattr(args, "base_int8", None), getattr(args, "inference_int8", None)
    old_quantize = getattr(args, "quantize", None)  # deprecated: meant inference int8 with an adapter, else base
    if args.adapter:
        given = [f"--{name.replace('_', '-')}" for name in ("task", "max_length", "base_int8")
                 if getattr(args, name, None) is not None]
        if given:
            raise SlimtuneError(f"{', '.join(given)}: the adapter records these; give them only without --adapter")
        return load_adapter_with_backend(args)
    if task_name is not None:
        raise SlimtuneError("--task-name picks a task of a multi-task --adapter; give --adapter DIR")
    if inference_int8:
        raise SlimtuneError("--inference-int8 merges and quantizes an --adapter; for a base model give --base-int8")
    if not args.task:
        raise SlimtuneError("give --adapter DIR, or --task causal-lm with --model to use a base model as it is")
    loaded = load_base_model(args.task, args.model, getattr(args, "max_length", None), base_int8 or old_quantize)
    apply_backend(loaded, args)
    return loaded


def load_adapter_with_backend(args):
    """--adapter (one --task-name of a multi-task adapter) run with --backend: PyTorch, or ONNX Runtime from the
    export kept in $SLIMTUNE_CACHE/onnx (slimtune.runs.onnx_cache), exported there first when it is not."""
    from slimtune.runs.adapter_files import load_adapter

    task_name, backend = getattr(args, "task_name", None), getattr(args, "backend", "pytorch")
    inference_int8 = getattr(args, "inference_int8", None) or getattr(args, "quantize", None)  # --quantize: old name
    if backend == "pytorch":
        return load_adapter(args.adapter, args.model, inference_int8, task_name)
    from slimtune.runs.onnx_cache import load_onnx_adapter
    from slimtune.runs.onnx_export import check_backend

    check_backend(backend, inference_int8)
    return load_onnx_adapter(args.adapter, args.model, backend, task_name)


# Numeric flags that mean a count (at least 1) or an amount (at least 0), whichever command has them.
POSITIVE_FLAGS = ("max_train_examples", "max_length", "batch_size", "epochs", "grad_accum", "seeds",
                  "examples", "threads", "max_batch_size", "max_inputs", "max_chars", "max_new_tokens",
                  "max_batch_tokens")
NON_NEGATIVE_FLAGS = ("eval_every", "checkpoint_every", "patience", "grad_clip", "weight_decay", "warmup_ratio",
                      "top_k", "heads", "neurons", "max_wait_ms", "temperature", "loss_weights_lr")


def check_numbers(args) -> None:
    """Refuse nonsense numbers before any work: NaN or infinite floats, counts below 1, negative amounts."""
    import math

    for name, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise SlimtuneError(f"{flag} must be a finite number, got {value}")
        if name in POSITIVE_FLAGS and value < 1:
            raise SlimtuneError(f"{flag} must be at least 1, got {value}")
        if name in NON_NEGATIVE_FLAGS and value < 0:
            raise SlimtuneError(f"{flag} must not be negative, got {value}")


def check_out_dir(path) -> None:
    """An --out directory that can be written: not an existing file, and its nearest existing parent writable.

    Checked before any work, so a long run never ends in a save that cannot happen."""
    import os

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SlimtuneError(f"--out {out}: exists and is not a directory")
    existing = out.absolute()
    while not existing.exists():  # the root always exists
        existing = existing.parent
    if not existing.is_dir():
        raise SlimtuneError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SlimtuneError(f"--out {out}: {existing} is not writable")


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


BACKEND_CHOICES = ("pytorch", "onnxruntime", "onnxruntime-int8")  # slimtune.runs.onnx_export.BACKENDS


def add_backend_flag(parser: argparse.ArgumentParser, help: str = "run the model with PyTorch, or export it (merged, "
                     "with its head) to ONNX and run it with ONNX Runtime in fp32 or dynamic int8 (classify and ner; "
                     "extra `onnx`); the export is kept in $SLIMTUNE_CACHE/onnx (default ~/.cache/slimtune/onnx), "
                     "so later calls with the same adapter and base skip loading the PyTorch model and exporting") \
        -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="pytorch", help=help + " (default: pytorch)")


def apply_backend(loaded, args) -> None:
    """Switch a loaded base model to --backend (adapters: `load_adapter_with_backend`, which also refuses
    --inference-int8 with ONNX Runtime; `load_model_or_adapter` refuses it for a base model)."""
    backend = getattr(args, "backend", "pytorch")  # commands without --backend run PyTorch
    if backend == "pytorch":
        return
    from slimtune.runs.onnx_export import use_backend

    use_backend(loaded, backend)
