"""The real `slimtune` process: exit codes and stderr as a shell sees them, and a reader that closes the pipe."""

import os
import subprocess
import sys

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.abspath("src"), os.environ.get("PYTHONPATH")]))}


def _slimtune(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimtune", *args], capture_output=True, text=True, env=ENV,
                          timeout=120, **kwargs)


def test_closed_pipe_exits_quietly():
    """`slimtune methods | head -0`: the reader is gone before the first line; no BrokenPipeError traceback."""
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as stdout:
        done = subprocess.run([sys.executable, "-m", "slimtune", "methods"], stdout=stdout, stderr=subprocess.PIPE,
                              text=True, env=ENV, timeout=120)
    assert done.stderr == ""
    assert done.returncode in (0, 141)


def test_a_refusal_is_exit_2_and_one_line(tmp_path):
    data = tmp_path / "train.tsv"
    data.write_bytes(b"sentence\tlabel\n\xff\tpos\n")
    done = _slimtune("train", "--method", "lora", "--train", str(data), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not UTF-8" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
