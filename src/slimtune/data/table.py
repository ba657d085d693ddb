"""Reading text-classification rows from TSV, CSV or JSONL.

Column names are detected (text: sentence/text/content; label: label/labels)
and may be overridden. Every problem is reported as `file:line: what`.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from slimtune.data.files import data_format, open_text, parse_json
from slimtune.errors import SlimtuneError

TEXT_COLUMNS = ("sentence", "text", "content")
# csv's default field limit is 128 KiB; a text that long is still one example (the tokenizer truncates it),
# beyond this one a field is taken for a broken file (an unclosed quote swallowing the rest).
FIELD_LIMIT = 16 * 1024 * 1024
LABEL_COLUMNS = ("label", "labels")


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str | tuple[str, ...] | None  # a tuple: the label set of a multi-label row (`read_label_sets`)
    source: str = ""  # file and line, so later errors (an unknown label) can point at the row
    line: int = 0


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], role: str, path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise SlimtuneError(f"{path}: no {role} column {wanted!r}; columns are {columns}")
        return wanted
    lowered = {c.lower().strip(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    flag = "--text-col" if role == "text" else "--label-col"
    raise SlimtuneError(
        f"{path}: cannot find a {role} column among {columns}; expected one of {list(candidates)} or pass {flag}"
    )


def _label_string(value, path, line: int) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SlimtuneError(f"{path}:{line}: label {value!r} is not a string or integer")
    label = str(value).strip()
    if not label:
        raise SlimtuneError(f"{path}:{line}: empty label")
    return label


LABEL_SEPARATOR = "|"  # between the labels of a multi-label row in TSV and CSV (JSONL may give a list)


def _label_set(value, path, line: int) -> tuple[str, ...]:
    """A multi-label row's labels, sorted and without repeats: a JSON list, or one string "a|b" ("" for none)."""
    if isinstance(value, list):
        labels = [_label_string(v, path, line) for v in value]
    elif isinstance(value, str):
        labels = [part.strip() for part in value.split(LABEL_SEPARATOR)]
        if any(not label for label in labels) and value.strip():
            raise SlimtuneError(f"{path}:{line}: empty label in {value!r} (labels are separated by "
                                f"{LABEL_SEPARATOR!r})")
        labels = [label for label in labels if label]
    else:
        labels = [_label_string(value, path, line)]
    return tuple(sorted(set(labels)))


def _check_text(text, path, line: int) -> str:
    if not isinstance(text, str):
        raise SlimtuneError(f"{path}:{line}: text {text!r} is not a string")
    if not text.strip():
        raise SlimtuneError(f"{path}:{line}: empty text")
    return text


def _read_delimited(path, delimiter: str, text_col, label_col, parse_label) -> list[LabelledText]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            return _delimited_rows(path, reader, text_col, label_col, parse_label)
        except csv.Error as e:
            raise SlimtuneError(f"{path}:{reader.line_num}: {e}") from None


def _delimited_rows(path, reader, text_col, label_col, parse_label) -> list[LabelledText]:
    try:
        header = next(reader)
    except StopIteration:
        raise SlimtuneError(f"{path}: file is empty") from None
    text_name = _pick(header, text_col, TEXT_COLUMNS, "text", path)
    label_name = _pick(header, label_col, LABEL_COLUMNS, "label", path)
    t, l = header.index(text_name), header.index(label_name)
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not x.strip() for x in fields):
            continue
        if len(fields) != len(header):
            raise SlimtuneError(
                f"{path}:{line}: expected {len(header)} fields like the header, found {len(fields)}"
            )
        rows.append(
            LabelledText(
                _check_text(fields[t], path, line), parse_label(fields[l], path, line), str(path), line
            )
        )
    return rows


def _read_jsonl(path, text_col, label_col, parse_label) -> list[LabelledText]:
    rows, text_name, label_name = [], None, None
    with open_text(path) as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            record = parse_json(raw, f"{path}:{line}")
            if not isinstance(record, dict):
                raise SlimtuneError(f"{path}:{line}: expected a JSON object per line")
            if text_name is None:
                text_name = _pick(list(record), text_col, TEXT_COLUMNS, "text", path)
                label_name = _pick(list(record), label_col, LABEL_COLUMNS, "label", path)
            for key in (text_name, label_name):
                if key not in record:
                    raise SlimtuneError(f"{path}:{line}: missing field {key!r}")
            rows.append(
                LabelledText(
                    _check_text(record[text_name], path, line),
                    parse_label(record[label_name], path, line),
                    str(path),
                    line,
                )
            )
    return rows


def read_labelled_texts(path: str | Path, text_col: str | None = None, label_col: str | None = None,
                        label_sets: bool = False):
    """Rows of (text, label) from a TSV, CSV or JSONL file (optionally `.gz`); with `label_sets`, each row's label
    is a tuple of labels: "a|b" in any format, or a JSON list in JSONL."""
    fmt = data_format(path)
    parse_label = _label_set if label_sets else _label_string
    if fmt == "tsv":
        rows = _read_delimited(path, "\t", text_col, label_col, parse_label)
    elif fmt == "csv":
        rows = _read_delimited(path, ",", text_col, label_col, parse_label)
    elif fmt == "jsonl":
        rows = _read_jsonl(path, text_col, label_col, parse_label)
    else:
        raise SlimtuneError(f"{path}: unknown data format {Path(path).suffix!r}; use .tsv, .csv or .jsonl")
    if not rows:
        raise SlimtuneError(f"{path}: no examples found")
    return rows
