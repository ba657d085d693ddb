"""`slimtune inspect`: what a saved adapter holds, and whatever view its method adds (AdaLoRA: its ranks).

Reads the run directory's checked description (slimtune.runs.run_directory): the config and the adapter file's
header; tensors only for the adalora rank table. The base model is not loaded.
"""

import argparse
from pathlib import Path

HELP = """Describe a saved adapter: method, options, tensors and parameter count.

For an adalora adapter it also prints the final rank of every adapted matrix
(layer × matrix) and writes a heatmap of those ranks as a PNG.

examples:
  slimtune inspect runs/sst2-adalora
  slimtune inspect runs/sst2-adalora --png docs/adalora_ranks_sst2.png
"""


def register(sub) -> None:
    p = sub.add_parser("inspect", help="describe an adapter; rank table and heatmap for adalora", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="run directory written by `slimtune train`")
    p.add_argument("--png", metavar="PATH", help="where to write the adalora rank heatmap (default: ADAPTER_DIR/ranks.png)")
    p.set_defaults(handler=run)


def run(args) -> int:
    import math

    from slimtune.errors import SlimtuneError
    from slimtune.methods.registry import method_from_saved
    from slimtune.runs.formats.peft_import import resolve_adapter_dir
    from slimtune.runs.run_directory import read_run

    given = args.adapter
    run_dir = read_run(Path(resolve_adapter_dir(given)))  # a peft adapter directory, converted
    print(summary(run_dir.data, {name: math.prod(shape) for name, shape in run_dir.tensor_shapes.items()},
                  run_dir.adapter_bytes))
    method = run_dir.config.method
    view = method_from_saved(method, run_dir.config.options).inspect(run_dir.load_tensors())
    if args.png and (view is None or view.write_figure is None):
        raise SlimtuneError(f"--png: method {method} draws no figure")
    if view is None:
        return 0
    print()
    print(view.text)
    if view.write_figure is not None:
        png = Path(args.png) if args.png else Path(given) / view.figure_file
        view.write_figure(png)
        print(f"\n{view.figure} written to {png}")
    return 0


def summary(config: dict, sizes: dict[str, int], file_bytes: int) -> str:
    """`sizes`: elements per tensor of the adapter file (from its header)."""
    backbone = sum(n for k, n in sizes.items() if k.startswith("backbone."))
    head = sum(n for k, n in sizes.items() if not k.startswith("backbone."))
    options = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config["options"].items())
    return "\n".join([
        f"method      {config['method']} ({_tasks(config)})",
        f"base model  {config.get('base_model') or 'default (all-MiniLM-L6-v2)'}",
        f"options     {options or 'none'}",
        f"tensors     {len(sizes)} ({file_bytes / 1024:.1f} KiB)",
        f"parameters  {backbone + head:,} ({backbone:,} method, {head:,} task head)",
    ])


def _tasks(config: dict) -> str:
    """What the adapter predicts: its task and labels, or (multi-task) each task's name and type, and the sharing."""
    from slimtune.tasks.multitask.files import is_multi

    if is_multi(config):
        tasks = ", ".join(f"{name}: {entry['task']}" for name, entry in config["tasks"].items())
        return f"multi-task, {config['sharing']} adapter; {tasks}"
    return f"{config['task']} task, labels: {', '.join(map(str, config['labels']))}"
