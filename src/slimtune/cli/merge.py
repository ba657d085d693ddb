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
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from slimtune.adapter_files import load_adapter
    from slimtune.errors import SlimtuneError
    from slimtune.models.surgery import unwrap

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SlimtuneError(f"{out} exists and is not empty; choose a new directory")
    loaded = load_adapter(args.adapter, args.model, task_name=args.task_name)
    if loaded.config.get("base_quantize"):
        raise SlimtuneError(f"{args.adapter} was trained on an {loaded.config['base_quantize']} base, whose weights "
                            "cannot take the update exactly; retrain without --quantize to merge")
    if not loaded.method.mergeable:
        raise SlimtuneError(f"method {loaded.method.name} adds computation that cannot be folded into the base")
    loaded.method.merge(loaded.model.backbone)
    unwrap(loaded.model.backbone)
    loaded.task.save_merged(loaded, out)
    print(f"merged model written to {out}")
    return 0
