"""`slimtune` command line: one sub-command per module in this package, found by discovery.

Errors a user can fix arrive as SlimtuneError and are printed as one line on
stderr with a non-zero exit, never a traceback.
"""

import argparse
import os
import pkgutil
import re
import sys

from slimtune import __version__
from slimtune.cli.common import apply_threads, check_numbers, check_out_dir
from slimtune.cli.run_config import apply_config, config_path
from slimtune.errors import SlimtuneError

# The order `slimtune --help` lists them in; any other module here with a `register` function follows.
FIRST_COMMANDS = ("train", "evaluate", "predict", "generate", "merge")

EPILOG = """examples:
  slimtune train --task classify --method lora --train data/sst2/train_8k.tsv.gz --out runs/sst2
  slimtune eval --adapter runs/sst2 --data data/sst2/heldout_2k.tsv.gz
  slimtune predict --adapter runs/sst2 "a gripping, funny film"
  slimtune merge --adapter runs/sst2 --out merged/sst2
  slimtune prune --method structured --heads 36 --data data/sst2/train_8k.tsv.gz --out pruned/minilm
  slimtune quantize --adapter runs/sst2 --out runs/sst2-int8 --data data/sst2/heldout_2k.tsv.gz
  slimtune train --task ner --method lora --train data/conll2003/train.txt.gz \\
      --dev data/conll2003/valid.txt.gz --out runs/conll
  slimtune predict --adapter runs/conll "EU rejects German call to boycott British lamb."
  slimtune inspect runs/sst2
  slimtune train --task causal-lm --model smollm2-135m --method lora --train chats.jsonl --out runs/chat
  slimtune generate --adapter runs/chat "Is this review positive or negative? A tedious mess."
  slimtune methods
  slimtune serve --adapter sst2=runs/sst2 --adapter conll=runs/conll --port 8000
"""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineErrors(
        prog="slimtune",
        description="Fine-tune a pretrained transformer while training only a small fraction of its weights.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"slimtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    found = sorted(m.name for m in pkgutil.iter_modules(__path__))
    for name in [*FIRST_COMMANDS, *(n for n in found if n not in FIRST_COMMANDS)]:
        module = importlib.import_module(f"slimtune.cli.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    for command in sub.choices.values():  # every flag's default in its --help
        command.formatter_class = type("WithDefaults", (ShowDefaults, command.formatter_class), {})
    return parser


class OneLineErrors(argparse.ArgumentParser):
    """A misused flag gets one line naming it and exit 2, as every other bad input does; argparse's own error()
    prints the whole usage first (26 lines for `train`), burying the line that matters. Sub-commands inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class ShowDefaults(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help when it has a default worth showing and does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if (action.option_strings and not unset and action.default is not argparse.SUPPRESS
                and "default" not in text and action.help is not argparse.SUPPRESS):
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def quiet_transformers() -> None:
    """Weight-loading chatter is not the user's business. Said through the environment, which transformers reads
    when it is first imported, so that commands which never load a model do not import it (seconds) to say it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (main called in-process): it no longer reads them
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_transformers()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(build_parser(), argv)
    except BrokenPipeError:  # `slimtune methods | head -1`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe, not even at exit
        return 141  # as a shell reports a process ended by SIGPIPE


def _run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    command = next((token for token in argv if not token.startswith("-")), None)
    try:
        path = config_path(argv) if command else None
        if path:  # a YAML run config becomes the command's defaults; flags given still win
            commands = parser._subparsers._group_actions[0].choices
            if command not in commands or "--config" not in commands[command]._option_string_actions:
                raise SlimtuneError(f"slimtune {command} takes no --config")
            apply_config(commands[command], path)
    except SlimtuneError as e:
        print(f"slimtune {command}: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)  # argparse itself ignores a closed pipe when it prints help
    args.argv = argv  # as given: `train --nproc` relaunches it
    try:
        check_numbers(args)
        if getattr(args, "out", None):
            check_out_dir(args.out)
        if "threads" in vars(args):  # commands that compute
            apply_threads(args)
        code = args.handler(args) or 0
        sys.stdout.flush()  # here, so a closed pipe is met inside main rather than at interpreter exit
        return code
    except SlimtuneError as e:
        print(f"slimtune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # `main` ends quietly on it
    except OSError as e:  # the system refused a read or write the checks could not foresee (/proc, a full disk)
        where = f"{e.filename}: " if e.filename else ""
        print(f"slimtune {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slimtune {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        reason = out_of_memory(e)
        if not reason:
            raise
        print(f"slimtune {args.command}: error: {reason}", file=sys.stderr)
        return 2


def out_of_memory(error: BaseException) -> str:
    """A one-line account of `error` when it is an allocation that failed, else "": asking for a rank of 10⁸
    (`--set r=100000000`) is a bad flag, answered in one line like any other.

    >>> out_of_memory(RuntimeError("can't allocate memory: you tried to allocate 1610612736 bytes"))
    'out of memory: could not allocate 1.5 GiB; ask for less (a rank --set r=..., --batch-size, --max-length)'
    >>> out_of_memory(RuntimeError("shape mismatch"))
    ''
    """
    text = str(error)
    if not (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text):
        return ""
    asked = re.search(r"allocate (\d+) bytes", text)
    amount = f"could not allocate {int(asked.group(1)) / 2**30:.1f} GiB" if asked else "an allocation failed"
    return f"out of memory: {amount}; ask for less (a rank --set r=..., --batch-size, --max-length)"
