"""Reading and writing CoNLL files: one token per line, its tag in the last column, blank lines between sentences.

Other columns (part of speech, chunk) are ignored, `-DOCSTART-` lines are
skipped, and tags in IOB1, IOB2 (BIO) or IOBES are converted to IOB2. Every
problem is reported as `file:line: what`.
"""

import gzip
from dataclasses import dataclass
from pathlib import Path

from slimtune.data import tag_schemes
from slimtune.data.files import open_text
from slimtune.errors import SlimtuneError

DOCSTART = "-DOCSTART-"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str] | None  # IOB2; None when read without tags
    source: str = ""
    lines: tuple[int, ...] = ()  # the line of each word, for error messages and writing predictions back
    scheme: str = tag_schemes.INTERNAL_SCHEME  # the scheme its file was written in


def _read_columns(path) -> list[tuple[int, list[str]]]:
    """(line number, columns) per token line, with (line, []) marking sentence boundaries."""
    rows: list[tuple[int, list[str]]] = []
    width, width_line = None, 0
    with open_text(path) as f:
        for number, line in enumerate(f, 1):
            columns = line.split()
            if not columns or columns[0] == DOCSTART:
                rows.append((number, []))
                continue
            if width is None:
                width, width_line = len(columns), number
            elif len(columns) != width:
                raise SlimtuneError(
                    f"{path}:{number}: {len(columns)} columns where line {width_line} has {width} "
                    "(a token cannot contain spaces; is a tag missing?)"
                )
            rows.append((number, columns))
    return rows


def _sentences(path, rows, with_tags: bool) -> list[Sentence]:
    sentences, words, tags, lines = [], [], [], []
    for number, columns in rows + [(0, [])]:
        if columns:
            if with_tags:
                if len(columns) < 2:
                    raise SlimtuneError(f"{path}:{number}: expected a token and a tag separated by whitespace, "
                                        f"got only {columns[0]!r}")
                try:
                    tag_schemes.parse_tag(columns[-1])
                except tag_schemes.TagError as e:
                    raise SlimtuneError(f"{path}:{number}: {e}") from None
            words.append(columns[0])
            tags.append(columns[-1])
            lines.append(number)
        elif words:
            sentences.append(Sentence(words, tags if with_tags else None, str(path), tuple(lines)))
            words, tags, lines = [], [], []
    if not sentences:
        raise SlimtuneError(f"{path}: no sentences (expected one token per line, blank lines between sentences)")
    return sentences


def read_conll(path, scheme: str | None = None, with_tags: bool = True) -> list[Sentence]:
    """Sentences with IOB2 tags; `scheme` forces the file's scheme instead of detecting it.

    Without tags (`with_tags=False`) the first column is the token and the rest is ignored.
    """
    if scheme is not None and scheme not in tag_schemes.SCHEMES:
        raise SlimtuneError(f"unknown tag scheme {scheme!r}; choose from {list(tag_schemes.SCHEMES)}")
    sentences = _sentences(path, _read_columns(path), with_tags)
    if not with_tags:
        return sentences
    because = ""
    if scheme is None:
        scheme, evidence = tag_schemes.detect_scheme([s.tags for s in sentences])
        if evidence is not None:
            s, i = evidence
            because = (f" (read as IOB2 because {sentences[s].tags[i]} at line {sentences[s].lines[i]} opens an "
                       "entity, which IOB1 does not allow; --scheme forces a scheme)")
    for sentence in sentences:
        sentence.scheme = scheme
        try:
            sentence.tags = tag_schemes.convert(sentence.tags, scheme, tag_schemes.INTERNAL_SCHEME)
        except tag_schemes.TagError as e:
            raise SlimtuneError(f"{path}:{sentence.lines[e.index]}: {e}{because}") from None
    return sentences


def write_with_predictions(source_path, out_path, predicted: dict[int, str]) -> None:
    """Copy `source_path` to `out_path` with one column appended to every token line.

    `predicted` maps a line number to its tag; `-DOCSTART-` lines get O so every
    non-blank line keeps the same number of columns.
    """
    lines = []
    with open_text(source_path) as f:
        for number, line in enumerate(f, 1):
            columns = line.split()
            if not columns:
                lines.append("\n")
                continue
            text = line.rstrip()
            separator = "\t" if "\t" in text else " "
            tag = "O" if columns[0] == DOCSTART else predicted[number]
            lines.append(f"{text}{separator}{tag}\n")
    out_path = Path(out_path)
    opener = gzip.open if out_path.suffix == ".gz" else open
    try:
        with opener(out_path, "wt", encoding="utf-8") as f:
            f.writelines(lines)
    except OSError as e:
        raise SlimtuneError(f"{out_path}: cannot write ({e.strerror})") from None
