"""Start-up stays light: the command line is built without torch, and `slimtune methods` without transformers."""

import subprocess
import sys

HEAVY_CHECK = """
import sys
{setup}
heavy = sorted(m for m in {modules} if m in sys.modules)
print(",".join(heavy))
"""


def _imported(setup: str, modules: tuple[str, ...]) -> list[str]:
    code = HEAVY_CHECK.format(setup=setup, modules=modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",") if out else []


def test_importing_the_cli_and_building_its_parser_loads_no_torch():
    setup = "import slimtune.cli\nslimtune.cli.build_parser()"
    assert _imported(setup, ("torch", "transformers", "numpy", "sklearn")) == []


def test_listing_methods_loads_neither_transformers_nor_scikit_learn():
    setup = "import contextlib, io\nfrom slimtune.cli import main\n" \
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['methods']) == 0"
    assert _imported(setup, ("transformers", "sklearn")) == []


def test_prune_choices_are_the_compression_modules_own():
    from slimtune.cli import prune
    from slimtune.compression.magnitude import SCOPES
    from slimtune.compression.prune_run import METHODS

    assert prune.METHODS == METHODS and prune.SCOPES == SCOPES


def test_the_task_registry_loads_no_scikit_learn():
    """Scoring classify needs none, and ner imports seqeval (which brings it) only when it scores."""
    setup = "from slimtune.tasks import get_task\nfor name in ('classify', 'ner', 'causal-lm'):\n    get_task(name)"
    assert _imported(setup, ("sklearn", "seqeval")) == []
