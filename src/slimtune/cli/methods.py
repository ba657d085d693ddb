"""`slimtune methods`: which method to start with, what each method does, and which `--set` options it takes."""

# From the published benchmark (docs/benchmark.md, docs/results.md): all-MiniLM-L6-v2 and SmolLM2-135M, CPU.
WHERE_TO_START = """\
Where to start (measured: docs/benchmark.md and docs/results.md)
  classify   lora over every linear layer of the blocks (its classify default): SST-2 accuracy 0.873 in one
             epoch (3 seeds) training 1.5% of the weights (full fine-tuning 0.869); smallest adapter: subspace
             (7 KiB, 0.851); fastest: features (25 s, 0.823)
  ner        lora over every linear layer of the blocks, batch 16 (its ner defaults): CoNLL-2003 entity F1 0.858
             in one epoch with a 1.3 MiB adapter; full fine-tuning at its ner lr 1e-4: 0.860, saving 86 MiB
  causal-lm  lora: SmolLM2-135M exact match 0.574 zero-shot -> 0.884 on the SST-2 instruction set
  few labelled examples: train picks a small-data recipe by itself; see `slimtune train --help` (--few-shot)
"""


def register(sub) -> None:
    p = sub.add_parser("methods", help="list PEFT methods and their options",
                       description="Which method to start with, then every registered PEFT method with its options, "
                                   "defaults and the defaults it takes on a particular task.")
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.methods.catalogue import method_catalogue

    print(WHERE_TO_START)
    for method in method_catalogue():
        merge = "mergeable" if method["mergeable"] else "not mergeable"
        peft = f"; peft {method['peft_type']}" if method["peft_type"] else ""
        print(f"{method['name']:<12} {method['summary']}  [default lr {method['default_lr']:g}; {merge}{peft}]")
        for option, default, text in method["options"]:
            print(f"    --set {f'{option}={default}':<24} {text}")
        for task, chosen in method["task_defaults"].items():
            if set(chosen) - {"small_data"}:
                print(f"    on {task}: {_defaults_line(chosen)}")
            if "small_data" in chosen:
                print(f"    on {task} with a small-data recipe (`train --help`, --few-shot): "
                      f"{_defaults_line(chosen['small_data'])}")
    return 0


def _defaults_line(chosen: dict) -> str:
    """'lr 0.002, batch 16, targets=...' for one entry of a method's task defaults; an empty option value is the
    option's own default."""
    shown = ([f"lr {chosen['lr']:g}"] if "lr" in chosen else []) + (
        [f"batch {chosen['batch_size']}"] if "batch_size" in chosen else []) + [
        f"{option}={value}" if value != "" else f"{option}=(the option's default)"
        for option, value in chosen.get("options", {}).items()]
    return ", ".join(shown)
