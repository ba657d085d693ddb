"""`slimtune inspect`: what a saved adapter holds, and whatever view its method adds (AdaLoRA: its ranks).

Reads only adapter_config.json and adapter.safetensors; the base model is not loaded.
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from slimtune.adapter_files import ADAPTER_FILE, read_config
    from slimtune.errors import SlimtuneError
    from slimtune.methods.registry import method_from_saved

    config = read_config(Path(args.adapter))
    path = Path(args.adapter) / ADAPTER_FILE
    try:
        state = load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise SlimtuneError(f"{path}: cannot read adapter ({e})") from None
    print(summary(config, state, path.stat().st_size))
    view = method_from_saved(config["method"], config["options"]).inspect(state)
    if args.png and (view is None or view.write_figure is None):
        raise SlimtuneError(f"--png: method {config['method']} draws no figure")
    if view is None:
        return 0
    print()
    print(view.text)
    if view.write_figure is not None:
        png = Path(args.png) if args.png else Path(args.adapter) / view.figure_file
        view.write_figure(png)
        print(f"\n{view.figure} written to {png}")
    return 0


def summary(config: dict, state: dict, file_bytes: int) -> str:
    backbone = sum(v.numel() for k, v in state.items() if k.startswith("backbone."))
    head = sum(v.numel() for k, v in state.items() if not k.startswith("backbone."))
    options = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config["options"].items())
    return "\n".join([
        f"method      {config['method']} ({_tasks(config)})",
        f"base model  {config.get('base_model') or 'default (all-MiniLM-L6-v2)'}",
        f"options     {options or 'none'}",
        f"tensors     {len(state)} ({file_bytes / 1024:.1f} KiB)",
        f"parameters  {backbone + head:,} ({backbone:,} method, {head:,} task head)",
    ])


def _tasks(config: dict) -> str:
    """What the adapter predicts: its task and labels, or (multi-task) each task's name and type, and the sharing."""
    if config["task"] == "multi":
        tasks = ", ".join(f"{name}: {entry['task']}" for name, entry in config["tasks"].items())
        return f"multi-task, {config['sharing']} adapter; {tasks}"
    return f"{config['task']} task, labels: {', '.join(map(str, config['labels']))}"
