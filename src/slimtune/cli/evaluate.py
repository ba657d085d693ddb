"""`slimtune eval`: score a saved adapter on labelled data."""

import json


def register(sub) -> None:
    from slimtune.cli.common import add_reader_flags

    p = sub.add_parser("eval", help="evaluate an adapter on labelled data",
                       description="Evaluate a saved adapter: accuracy, macro-F1 and a per-class report "
                                   "(classify) or entity precision, recall and F1 per type (ner).")
    p.add_argument("--adapter", required=True, metavar="DIR", help="run directory written by `slimtune train`")
    p.add_argument("--data", required=True, metavar="PATH", help="labelled data in the training format")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to use of a multi-task adapter")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quantize", choices=("int8",),
                   help="dynamic int8 linear layers on CPU (the adapter is merged first where it can be)")
    p.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    add_reader_flags(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.adapter_files import load_adapter
    from slimtune.cli.common import reader_options

    loaded = load_adapter(args.adapter, args.model, args.quantize, args.task_name)
    rows = loaded.task.read(args.data, **reader_options(args))
    features = loaded.task.encode(rows, loaded.backbone.tokenizer, loaded.labels, loaded.backbone.max_length)
    metrics = loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id,
                                   args.batch_size, loaded.labels)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(loaded.task.format_report(metrics))
    return 0
