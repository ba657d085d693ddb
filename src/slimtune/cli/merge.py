"""`slimtune merge`: fold an adapter into its base and write a standalone model directory."""


def register(sub) -> None:
    from slimtune.cli.common import add_threads_flag

    p = sub.add_parser("merge", help="write a standalone merged model",
                       description="Fold a mergeable adapter into the base weights and write a model "
                                   "directory that plain `transformers` loads without slimtune.")
    p.add_argument("--adapter", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to use of a multi-task adapter")
    p.add_argument("--overwrite", action="store_true", help="replace a previous slimtune output in --out")
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from slimtune.runs.adapter_files import load_adapter
    from slimtune.errors import SlimtuneError
    from slimtune.models.surgery import unwrap
    from slimtune.runs.export import save_merged
    from slimtune.runs.int8_keys import base_int8_of
    from slimtune.ownership import check_out, new_output

    out = Path(args.out)
    check_out(out, args.overwrite)
    loaded = load_adapter(args.adapter, args.model, task_name=args.task_name)
    if base_int8_of(loaded.config):
        raise SlimtuneError(f"{args.adapter} was trained on an {base_int8_of(loaded.config)} base, whose weights "
                            "cannot take the update exactly; retrain without --base-int8 to merge")
    if not loaded.method.mergeable:
        raise SlimtuneError(f"method {loaded.method.name} adds computation that cannot be folded into the base")
    loaded.method.merge(loaded.model.backbone)
    unwrap(loaded.model.backbone)
    with new_output(out, "merge", args.overwrite) as tmp:  # written beside --out, then swapped in whole
        save_merged(loaded, tmp)
    print(f"merged model written to {out}")
    return 0
