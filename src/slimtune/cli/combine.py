"""`slimtune combine`: one adapter from several low-rank adapters of the same base and task head shape.

Each adapter's method gives its update as low-rank factors (`Method.low_rank_factors`); the arithmetic is
`slimtune.methods.arithmetic`; the result is a plain LoRA run directory that evaluates, serves and exports like
any other. The base model is not loaded: the adapters' configs must agree on it (fingerprint) and on the task.
"""

import argparse

HELP = """Combine trained low-rank adapters (lora, adalora) into one LoRA adapter.

  linear  weighted sum of the factors (equal ranks; approximate: cross terms)
  cat     the factors side by side: exactly the weighted sum of the updates
  svd     the weighted sum of the updates, re-factorised at --rank
  ties    TIES-Merging of the updates (trim to --density, elect sign, disjoint mean), then --rank
  dare    DARE: random drop to --density and rescale (--seed), weighted sum, then --rank

examples:
  slimtune combine --adapter a=runs/sst2 --adapter b=runs/imdb --weights 0.7,0.3 --how cat --out runs/mix
  slimtune combine --adapter a=runs/sst2 --adapter b=runs/imdb --how ties --density 0.3 --rank 8 --out runs/ties
"""
AGREE = ("task", "base_fingerprint", "labels", "pooling", "max_length", "base_quantize")


HOWS = ("linear", "cat", "svd", "ties", "dare")  # methods/arithmetic.py's, written out: --help imports no torch


def register(sub) -> None:

    p = sub.add_parser("combine", help="combine low-rank adapters into one (linear, cat, svd, ties, dare)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", action="append", required=True, metavar="NAME=DIR",
                   help="a run directory to combine, named (give two or more)")
    p.add_argument("--weights", metavar="W1,W2,...", help="one weight per adapter, in order (default: equal, "
                                                            "summing to 1)")
    p.add_argument("--how", choices=HOWS, default="cat", help="how to combine (default: cat, exact)")
    p.add_argument("--rank", type=int, metavar="R", help="rank of svd/ties/dare (default: the sum of the ranks)")
    p.add_argument("--density", type=float, default=0.5, help="fraction of each update ties/dare keep (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of dare's random drop")
    p.add_argument("--head", metavar="NAME|mean", help="task head: one adapter's (default: the first) or the "
                                                      "weighted mean of all")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a previous slimtune output in --out")
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from slimtune.atomic import write_json, write_safetensors
    from slimtune.errors import SlimtuneError
    from slimtune.methods.arithmetic import combine
    from slimtune.methods.registry import get_method_class, method_from_saved
    from slimtune.ownership import check_out, new_output
    from slimtune.runs.adapter_files import ADAPTER_FILE, CONFIG_FILE, read_config
    from slimtune.runs.run_directory import read_tensors

    names, dirs = _named(args.adapter)
    weights = _weights(args.weights, len(names))
    if args.rank is not None and args.rank < 1:
        raise SlimtuneError(f"--rank must be at least 1, got {args.rank}")
    if not 0 < args.density <= 1:
        raise SlimtuneError(f"--density must be in (0, 1], got {args.density}")
    out = Path(args.out)
    check_out(out, args.overwrite)
    configs = [read_config(Path(d)) for d in dirs]
    states = [read_tensors(Path(d) / ADAPTER_FILE) for d in dirs]
    _check_agreement(names, configs, states)
    factors = []
    for name, config, state in zip(names, configs, states):
        method = method_from_saved(config["method"], config["options"])
        own = method.low_rank_factors({k.removeprefix("backbone."): v for k, v in state.items()
                                       if k.startswith("backbone.")})
        if own is None:
            raise SlimtuneError(f"adapter {name}: method {method.name} with these options is not a plain low-rank "
                                "update, so it cannot be combined (lora with kaiming/gaussian init, adalora can)")
        factors.append(own)
    try:
        combined = combine(args.how, factors, weights, args.rank, args.density, args.seed)
    except ValueError as e:
        raise SlimtuneError(f"--how {args.how}: {e}") from None
    method, backbone_state = get_method_class("lora").from_low_rank_factors(combined)
    state = {f"backbone.{k}": v for k, v in backbone_state.items()}
    state.update(_head(args.head, names, weights, states))
    config = {**configs[0], "method": method.name, "options": method.options_dict(),
              "combined_from": {n: {"adapter": str(d), "weight": w} for n, d, w in zip(names, dirs, weights)},
              "combined_how": args.how}
    with new_output(out, "combine", args.overwrite) as tmp:  # written beside --out, then swapped in whole
        write_safetensors(tmp / ADAPTER_FILE, state, metadata={"format": "slimtune"})
        write_json(tmp / CONFIG_FILE, config)
    print(f"combined adapter ({args.how}, rank {method.options.r}, {len(combined)} layers) written to {out}")
    return 0


def _named(pairs: list[str]) -> tuple[list[str], list[str]]:
    from slimtune.errors import SlimtuneError

    names, dirs = [], []
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise SlimtuneError(f"--adapter {pair!r}: expected NAME=DIR")
        if name in names:
            raise SlimtuneError(f"--adapter: the name {name!r} is given twice")
        names.append(name), dirs.append(directory)
    if len(names) < 2:
        raise SlimtuneError("combine needs at least two --adapter NAME=DIR")
    return names, dirs


def _weights(text: str | None, count: int) -> list[float]:
    from slimtune.errors import SlimtuneError

    if text is None:
        return [1 / count] * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise SlimtuneError(f"--weights {text!r}: expected numbers separated by commas") from None
    if len(weights) != count:
        raise SlimtuneError(f"--weights gives {len(weights)} weights for {count} adapters")
    return weights


def _check_agreement(names, configs, states) -> None:
    """Same base, task, labels and settings, one adapter each (no multi-task), and heads of one shape."""
    from slimtune.errors import SlimtuneError

    for name, config in zip(names, configs):
        if config["task"] == "multi":
            raise SlimtuneError(f"adapter {name} is a multi-task adapter; combine takes single-task adapters")
    for key in AGREE:
        for name, config in zip(names[1:], configs[1:]):
            if config.get(key) != configs[0].get(key):
                raise SlimtuneError(f"adapters {names[0]} and {name} disagree on {key}; combine needs adapters "
                                    "of the same base and task")
    heads = [{k: tuple(v.shape) for k, v in state.items() if not k.startswith("backbone.")} for state in states]
    if any(h != heads[0] for h in heads):
        raise SlimtuneError("the adapters' task heads differ in shape; combine needs the same head shape")


def _head(choice: str | None, names, weights, states) -> dict:
    from slimtune.errors import SlimtuneError

    heads = [{k: v for k, v in state.items() if not k.startswith("backbone.")} for state in states]
    if choice is None:
        return heads[0]
    if choice == "mean":
        total = sum(weights)
        if total == 0:
            raise SlimtuneError("--head mean: the weights sum to zero")
        return {k: sum(w * head[k] for w, head in zip(weights, heads)) / total for k in heads[0]}
    if choice not in names:
        raise SlimtuneError(f"--head {choice!r}: expected one of {', '.join(names)} or mean")
    return heads[names.index(choice)]
