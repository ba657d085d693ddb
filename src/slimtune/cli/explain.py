"""`slimtune explain`: per-token Integrated Gradients of an adapter's predictions."""

import argparse
import sys

HELP = """Explain predictions: how much each input token moved the predicted label's score (classify,
multilabel) or each entity's score (ner), by Integrated Gradients from a baseline that replaces every word
piece by the padding token. The attributions of a target sum to its score minus the baseline's, up to the
integration error printed as "IG delta" (more --steps, smaller delta). Needs captum: pip install 'slimtune[explain]'.
`slimtune serve` gives the same numbers at POST /v1/explain and in its playground.

examples:
  slimtune explain --adapter runs/sst2 "a gripping, funny film"
  slimtune explain --adapter runs/conll --html explained.html "EU rejects German call to boycott British lamb."
  slimtune explain --adapter runs/sst2 --json --file texts.txt
"""


def register(sub) -> None:
    from slimtune.cli.common import add_threads_flag

    p = sub.add_parser("explain", help="per-token attributions of predictions (Integrated Gradients)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, metavar="DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="PATH", help="read texts from a file, one per line")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to use of a multi-task adapter")
    p.add_argument("--steps", type=int, default=50, help="steps of the path integral")
    p.add_argument("--target", metavar="LABEL", help="explain this label instead of the predicted one(s) "
                                                     "(classify, multilabel)")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.add_argument("--html", metavar="FILE", help="also write a page with the tokens highlighted")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the tokens (auto: when standard output is a terminal; else [+strong] markers)")
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from slimtune.cli.common import read_inputs
    from slimtune.errors import SlimtuneError

    try:
        import captum  # noqa: F401  (an optional extra)
    except ImportError:
        raise SlimtuneError("slimtune explain needs captum: pip install 'slimtune[explain]'") from None
    if args.steps < 1:
        raise SlimtuneError(f"--steps must be at least 1, got {args.steps}")
    html_path = Path(args.html) if args.html else None
    if html_path is not None and (html_path.is_dir() or not html_path.absolute().parent.is_dir()):
        raise SlimtuneError(f"--html {html_path}: not a file in an existing directory")
    texts = read_inputs(args.texts, args.file)

    from slimtune.atomic import write_text
    from slimtune.explain.attributions import explain
    from slimtune.explain.render import as_json, html_page, report
    from slimtune.runs.adapter_files import load_adapter

    loaded = load_adapter(args.adapter, args.model, None, args.task_name)
    results = explain(loaded, texts, args.steps, args.target)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    for result in results:
        print(as_json(result) if args.json else report(result, colour))
    if html_path is not None:
        write_text(html_path, html_page(results))
        print(f"wrote {html_path}", file=sys.stderr)
    return 0
