"""Helpers for the hostile-input suite: run the CLI in-process and check it refused cleanly.

A clean refusal is exit status 2, exactly one line on stderr and no traceback, and the
`--out` directory (if any) exactly as it was before: same files, same bytes.
"""

import hashlib
from pathlib import Path

import pytest

from slimtune.cli import main
from tests.conftest import sentiment_rows, write_tsv


def snapshot(path) -> dict | None:
    """Every file under `path` with a hash of its bytes; None when `path` does not exist, its bytes for a file."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


@pytest.fixture
def refuses(capsys):
    """refuses(argv, out=None) → the one error line; asserts a clean refusal that left `out` untouched."""
    def check(argv: list[str], out=None) -> str:
        capsys.readouterr()
        before = snapshot(out) if out is not None else None
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err, err
        assert code == 2, (code, err)
        assert len(lines) == 1, err
        if out is not None:
            assert snapshot(out) == before, f"{out} changed"
        return lines[0]

    return check


def train_args(model: str, train: str, out, *extra) -> list[str]:
    """A tiny, fast `slimtune train` command line on the tiny model, with the standard recipe (its few dozen rows
    would otherwise take the small-data one, which these checkpoint and resume checks are not about)."""
    return ["train", "--task", "classify", "--method", "lora", "--model", model, "--train", train,
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--set", "r=2", "--few-shot", "off", *extra]


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("reliability-data")
    return {"train": write_tsv(root / "train.tsv", sentiment_rows(48, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(16, 1))}


@pytest.fixture(scope="session")
def trained_run(tiny_model, toy_files, tmp_path_factory) -> Path:
    """A small trained LoRA run directory; tests copy it before breaking it."""
    out = tmp_path_factory.mktemp("reliability-run") / "run"
    assert main(train_args(tiny_model, toy_files["train"], out, "--dev", toy_files["dev"])) == 0
    return out
