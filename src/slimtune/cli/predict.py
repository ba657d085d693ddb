"""`slimtune predict`: label new texts with a saved adapter."""

import json


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict labels for new texts",
                       description="Predict with a saved adapter. Texts come from arguments, --file "
                                   "(one per line) or standard input.")
    p.add_argument("--adapter", required=True, metavar="DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="PATH", help="read texts from a file, one per line")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.adapter_files import load_adapter
    from slimtune.cli.common import read_inputs

    texts = read_inputs(args.texts, args.file)
    loaded = load_adapter(args.adapter, args.model)
    for text, prediction in zip(texts, loaded.task.predict(loaded, texts, args.batch_size)):
        if args.json:
            print(json.dumps({"text": text, **prediction}))
        else:
            print(loaded.task.format_prediction(text, prediction))
    return 0
