import gzip
import json

import pytest

from slimtune.data.table import read_labelled_texts
from slimtune.errors import SlimtuneError


def test_tsv_detects_columns_in_any_order(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('label\tsentence\n1\tit\'s "quoted" fine\n0\tbad\n')
    rows = read_labelled_texts(path)
    assert [(r.text, r.label) for r in rows] == [('it\'s "quoted" fine', "1"), ("bad", "0")]
    assert rows[1].line == 3


def test_csv_with_quotes_and_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"hello, world",greeting\nbye,farewell\n')
    assert [(r.text, r.label) for r in read_labelled_texts(path)] == [("hello, world", "greeting"), ("bye", "farewell")]


def test_jsonl_with_integer_labels_and_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"content": "a", "label": 3}) + "\n\n" + json.dumps({"content": "b", "label": 4}) + "\n")
    assert [(r.text, r.label) for r in read_labelled_texts(path)] == [("a", "3"), ("b", "4")]


def test_column_overrides(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,stars\nnice,5\n")
    rows = read_labelled_texts(path, text_col="review", label_col="stars")
    assert (rows[0].text, rows[0].label) == ("nice", "5")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.tsv", "", "file is empty"),
        ("d.tsv", "sentence\tlabel\nok\t1\ntoo\tmany\tfields\n", "d.tsv:3: expected 2 fields"),
        ("d.tsv", "words\tlabel\nok\t1\n", "cannot find a text column"),
        ("d.tsv", "sentence\tlabel\n\t1\n", "d.tsv:2: empty text"),
        ("d.tsv", "sentence\tlabel\nok\t\n", "d.tsv:2: empty label"),
        ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', "d.jsonl:2: not valid JSON"),
        ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "d.jsonl:2: missing field 'label'"),
        ("d.jsonl", '{"text": "a", "label": [1]}\n', "d.jsonl:1: label [1] is not a string or integer"),
        ("d.txt", "x", "unknown data format"),
        ("d.tsv", "sentence\tlabel\n", "no examples found"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SlimtuneError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_labelled_texts(path)


def test_missing_file(tmp_path):
    with pytest.raises(SlimtuneError, match="no such file"):
        read_labelled_texts(tmp_path / "nope.tsv")
