"""`slimtune eval`: score a saved adapter (or, for causal-lm, a base model as it is) on labelled data."""

import json


def register(sub) -> None:
    from slimtune.cli.common import add_backend_flag, add_model_int8_flags, add_reader_flags, add_threads_flag

    p = sub.add_parser("eval", help="evaluate an adapter on labelled data",
                       description="Evaluate a saved adapter: accuracy, macro-F1 and a per-class report "
                                   "(classify), entity precision, recall and F1 per type (ner), or loss, "
                                   "perplexity and, for short-label answers, exact match (causal-lm). "
                                   "Without --adapter, `--task causal-lm --model M` scores the base model zero-shot.")
    p.add_argument("--adapter", metavar="DIR", help="run directory written by `slimtune train`")
    p.add_argument("--data", required=True, metavar="PATH", help="labelled data in the training format")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to use of a multi-task adapter")
    p.add_argument("--task", help="without --adapter: the task (causal-lm) to score the base model on")
    p.add_argument("--max-length", type=int, help="without --adapter: token limit (longer examples are dropped)")
    p.add_argument("--batch-size", type=int, default=64)
    add_model_int8_flags(p)
    add_backend_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    add_reader_flags(p)
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.cli.common import load_model_or_adapter, reader_options
    from slimtune.cli.formatting import format_report

    loaded = load_model_or_adapter(args)  # with --backend
    rows = loaded.task.read(args.data, **reader_options(args))
    features = loaded.task.encode(rows, loaded.backbone.tokenizer, loaded.labels, loaded.backbone.max_length)
    metrics = loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id,
                                   args.batch_size, loaded.labels)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_report(loaded.task, metrics))
    return 0
