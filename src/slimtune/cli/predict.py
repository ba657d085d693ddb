"""`slimtune predict`: label new texts, or annotate a CoNLL file, with a saved adapter."""

import json
import sys


def register(sub) -> None:
    from slimtune.cli.common import INFERENCE_INT8_HELP, add_backend_flag, add_int8_flags, add_threads_flag
    from slimtune.data.tag_schemes import SCHEMES

    p = sub.add_parser("predict", help="predict labels for new texts",
                       description="Predict with a saved adapter. Texts come from arguments, --file "
                                   "(one per line) or standard input. For ner, entities are printed with "
                                   "character spans start:end (as Python slices of the text); "
                                   "--conll-in/--conll-out instead append a predicted-tag column to a CoNLL file.")
    p.add_argument("--adapter", required=True, metavar="DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="PATH", help="read texts from a file, one per line")
    p.add_argument("--conll-in", metavar="PATH", help="CoNLL file to tag (ner; the first column is the token)")
    p.add_argument("--conll-out", metavar="PATH", help="where to write --conll-in with a predicted-tag column")
    p.add_argument("--scheme", choices=SCHEMES, help="scheme of the predicted tags (ner; default: the training data's)")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to use of a multi-task adapter")
    p.add_argument("--batch-size", type=int, default=64)
    add_int8_flags(p, inference_help=INFERENCE_INT8_HELP, quantize_dest="inference_int8",
                   quantize_use="--inference-int8")
    add_backend_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.cli.common import load_adapter_with_backend, read_inputs
    from slimtune.cli.formatting import format_prediction
    from slimtune.errors import SlimtuneError

    options = {"scheme": args.scheme}
    if args.conll_in or args.conll_out:
        if not (args.conll_in and args.conll_out):
            raise SlimtuneError("--conll-in and --conll-out go together")
        if args.texts or args.file:
            raise SlimtuneError("give either texts (or --file) or --conll-in, not both")
        loaded = load_adapter_with_backend(args)
        count = loaded.task.predict_file(loaded, args.conll_in, args.conll_out, args.batch_size, **options)
        print(f"tagged {count} sentences into {args.conll_out}", file=sys.stderr)
        return 0
    texts = read_inputs(args.texts, args.file)
    loaded = load_adapter_with_backend(args)
    for text, prediction in zip(texts, loaded.task.predict(loaded, texts, args.batch_size, **options)):
        if args.json:
            print(json.dumps({"text": text, **rounded(prediction)}))
        else:
            print(format_prediction(loaded.task, text, prediction))
    return 0


def rounded(value, digits: int = 4):
    """Floats anywhere in a prediction rounded for printing; the prediction itself keeps full precision."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
