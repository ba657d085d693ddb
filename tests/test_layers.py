"""The package's layers (pyproject.toml, [tool.importlinter]) hold: no module imports from a layer above its own."""

import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import slimtune

ROOT = Path(__file__).resolve().parents[1]


def layer_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return {name.strip() for layer in contract["layers"] for name in layer.split("|")}


def test_every_module_of_the_package_sits_in_a_layer():
    """A new package or top-level module outside every layer would escape the contract unchecked."""
    top_level = {info.name for info in pkgutil.iter_modules(slimtune.__path__)} - {"__main__"}
    assert top_level - layer_modules() == set()


def test_no_module_imports_from_a_layer_above_its_own():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
