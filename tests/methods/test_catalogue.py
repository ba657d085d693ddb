"""The method catalogue: the registry's own descriptions, kept so that listing methods needs no torch."""

import json
import os
import subprocess
import sys

from slimtune.methods import catalogue
from slimtune.methods.registry import available_methods, describe_methods

LIST_IN_A_FRESH_PROCESS = """
import contextlib, io, sys
from slimtune.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(['methods']) == 0
print(repr(out.getvalue()))
print('torch' in sys.modules)
"""


def _list_methods(cache_dir) -> tuple[str, bool]:
    """`slimtune methods` in a new process: what it printed, and whether it imported torch."""
    env = {**os.environ, "SLIMTUNE_CACHE": str(cache_dir)}
    lines = subprocess.run([sys.executable, "-c", LIST_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                           check=True, env=env).stdout.splitlines()
    return eval(lines[0]), lines[1] == "True"  # noqa: S307 - the repr printed just above


def test_the_first_listing_asks_the_registry_and_the_next_one_reads_the_cache_without_torch(tmp_path):
    first, first_imported_torch = _list_methods(tmp_path)
    second, second_imported_torch = _list_methods(tmp_path)
    assert first_imported_torch and not second_imported_torch
    assert first == second
    for name in available_methods():
        assert f"\n{name:<12} " in first


def test_the_cache_holds_what_the_registry_describes(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path))
    described = describe_methods()
    catalogue._write(catalogue._modules_identity(), described)
    assert catalogue._read(catalogue._modules_identity()) == json.loads(json.dumps(described))
    assert [entry["name"] for entry in described] == list(available_methods())


def test_a_changed_method_module_or_a_damaged_cache_is_described_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path))
    monkeypatch.delitem(sys.modules, "slimtune.methods.base")  # as in a process that has not loaded the methods
    stale = [{"name": "gone", "summary": "", "default_lr": 1.0, "mergeable": False, "peft_type": None,
              "options": [], "task_defaults": {}}]
    catalogue._write("identity of other method files", stale)
    assert [entry["name"] for entry in catalogue.method_catalogue()] == list(available_methods())
    (tmp_path / "methods.json").write_text("{not json", encoding="utf-8")
    assert [entry["name"] for entry in catalogue.method_catalogue()] == list(available_methods())
    assert json.loads((tmp_path / "methods.json").read_text())["key"] == catalogue._modules_identity()
    oversized = {"key": catalogue._modules_identity(), "methods": stale, "padding": "x" * catalogue.MAX_CACHE_BYTES}
    (tmp_path / "methods.json").write_text(json.dumps(oversized), encoding="utf-8")
    assert catalogue._read(catalogue._modules_identity()) is None  # not read whole: not a file slimtune wrote


def test_a_process_with_the_methods_loaded_asks_the_registry_not_the_cache(tmp_path, monkeypatch):
    """There the registry costs nothing more, and also sees methods defined outside the package."""
    import slimtune.methods.base  # noqa: F401

    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path))
    catalogue._write(catalogue._modules_identity(), [])
    assert [entry["name"] for entry in catalogue.method_catalogue()] == list(available_methods())
