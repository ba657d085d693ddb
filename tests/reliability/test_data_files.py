"""Hostile or broken data files: every reader answers with one SlimtuneError line, never another exception."""

import gzip
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimtune.data.conll import read_conll
from slimtune.data.files import read_json_file
from slimtune.data.instructions import read_conversations
from slimtune.data.table import read_labelled_texts
from slimtune.errors import SlimtuneError
from tests.reliability.conftest import train_args

READERS = {
    "rows.tsv": read_labelled_texts,
    "rows.csv": read_labelled_texts,
    "rows.jsonl": read_labelled_texts,
    "rows.tsv.gz": read_labelled_texts,
    "train.conll": read_conll,
    "chats.jsonl": read_conversations,
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_refuse(reader, path) -> None:
    """The reader returns rows or raises SlimtuneError; any other exception fails the test."""
    try:
        reader(path)
    except SlimtuneError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("name", READERS)
@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_are_read_or_refused(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    _read_or_refuse(READERS[name], path)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["text", "label", "prompt", "response", "messages",
                                                              "role", "content", "x"]), children, max_size=4),
                           max_leaves=12)


@pytest.mark.parametrize("name", ["rows.jsonl", "chats.jsonl"])
@SETTINGS
@given(rows=st.lists(json_values, min_size=1, max_size=4))
def test_random_json_rows_are_read_or_refused(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _read_or_refuse(READERS[name], path)


@pytest.mark.parametrize("name, content", [
    ("bad.tsv", b"sentence\tlabel\n\xff\xfe bad bytes\tpos\n"),
    ("bad.tsv", b"sentence\tlabel\ngood\x00film\tpos\n"),
    ("bad.csv", b"sentence,label\n\"unclosed,pos\nmore,neg\n"),
    ("bad.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n"),
    ("bad.jsonl", b'{"text": "good", "label": "pos"}\n{"text": "torn'),
    ("bad.tsv.gz", b"sentence\tlabel\ngood\tpos\n"),  # plain text named .gz
    ("bad.tsv.gz", gzip.compress(b"sentence\tlabel\n" + b"good film\tpos\n" * 200)[:60]),  # truncated
    ("bad.conll", b"EU B-ORG\n\xc3\x28 O\n"),
    ("bad.conll", bytes(range(256)) * 4),
])
def test_cli_refuses_broken_data_and_writes_nothing(refuses, tiny_model, tmp_path, name, content):
    data = tmp_path / name
    data.write_bytes(content)
    out = tmp_path / "out"
    task = ["--task", "ner"] if name.endswith(".conll") else []
    line = refuses([*train_args(tiny_model, str(data), out), *task], out=out)
    assert str(data) in line
    assert not out.exists()


def test_csv_field_over_128_kib_is_one_example(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "good " * 40_000  # 200 KB, over csv's default field limit
    path.write_text(f"sentence,label\n\"{long_text}\",pos\nshort,neg\n")
    rows = read_labelled_texts(path)
    assert len(rows[0].text) == len(long_text) and rows[1].label == "neg"


def test_instructions_refuse_binary(tmp_path):
    path = tmp_path / "chats.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "hi", "response": "\x00"}\n\x89PNG\r\n'))
    with pytest.raises(SlimtuneError, match="not UTF-8|binary"):
        read_conversations(path)


def test_predict_file_not_utf8_is_refused(refuses, trained_run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"good film\n\xff\xff\n")
    assert "not UTF-8" in refuses(["predict", "--adapter", trained_run, "--file", texts])


def test_predict_stdin_not_utf8_is_refused(refuses, trained_run, monkeypatch):
    import io

    stdin = io.TextIOWrapper(io.BytesIO(b"good film\n\xff\xfe\n"), encoding="utf-8")
    stdin.isatty = lambda: False
    monkeypatch.setattr("sys.stdin", stdin)
    assert "standard input: not UTF-8" in refuses(["predict", "--adapter", trained_run])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_named_like_a_data_file_is_refused_not_read_forever(refuses, tiny_model, trained_run, tmp_path):
    endless = tmp_path / "rows.tsv"
    endless.symlink_to("/dev/zero")
    assert "is a device or socket" in refuses(train_args(tiny_model, endless, tmp_path / "out"))
    assert "is a device or socket" in refuses(["predict", "--adapter", trained_run, "--file", "/dev/zero"])
    config = tmp_path / "config.json"
    config.symlink_to("/dev/zero")
    with pytest.raises(SlimtuneError, match="is a device or socket"):
        read_json_file(config, 1000)
