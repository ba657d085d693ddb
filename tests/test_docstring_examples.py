"""Docstring examples run: every `>>>` example in the package prints what its docstring says it prints."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import slimtune

MODULES = [info.name for info in pkgutil.walk_packages(slimtune.__path__, "slimtune.")]
WITH_EXAMPLES = [name for name in MODULES if ">>>" in Path(importlib.util.find_spec(name).origin).read_text()]


def test_the_package_has_examples():
    assert len(WITH_EXAMPLES) >= 5


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
