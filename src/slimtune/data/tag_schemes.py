"""Entity tag schemes (IOB1, IOB2 = BIO, IOBES) and exact conversion between them through spans.

Every scheme is read into entity spans (validating that the sequence is
possible in that scheme) and spans are written out in any scheme, so a
conversion never guesses. slimtune works internally in IOB2.
"""

from typing import NamedTuple

from slimtune.errors import SlimtuneError

SCHEMES = ("iob1", "iob2", "iobes")
INTERNAL_SCHEME = "iob2"
_PREFIXES = {"iob1": "BI", "iob2": "BI", "iobes": "BIES"}


class Span(NamedTuple):
    type: str
    start: int  # first word
    end: int  # one past the last word


class TagError(SlimtuneError):
    """An impossible tag at `index` of its sequence; the reader adds file:line."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def parse_tag(tag: str, index: int = 0) -> tuple[str, str | None]:
    """'B-PER' → ('B', 'PER'); 'O' → ('O', None)."""
    if tag == "O":
        return "O", None
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not entity_type:
        raise TagError(index, f"tag {tag!r} is not O or B-/I-/E-/S- followed by an entity type")
    return prefix, entity_type


def _first(sequences: list[list[str]], prefix: str) -> tuple[int, int] | None:
    """(sequence, index) of the first `prefix` tag that does not continue an entity of its type."""
    for s, tags in enumerate(sequences):
        previous = (None, None)
        for i, tag in enumerate(tags):
            current = parse_tag(tag, i)
            if current[0] == prefix and not (previous[0] in ("B", "I") and previous[1] == current[1]):
                return s, i
            previous = current
    return None


def detect_scheme(sequences: list[list[str]]) -> tuple[str, tuple[int, int] | None]:
    """(scheme, evidence) from the tags a file uses.

    E-/S- tags mean IOBES. An I- that opens an entity is legal only in IOB1, a
    B- that opens one only in IOB2; with only the first, IOB1, otherwise IOB2.
    When a file has both, it is read as IOB2 and `evidence` is (sequence, index)
    of that B-, so an error at an I- can say why IOB2 was assumed.
    """
    if any(parse_tag(tag, i)[0] in ("E", "S") for tags in sequences for i, tag in enumerate(tags)):
        return "iobes", None
    if _first(sequences, "I") is None:
        return "iob2", None
    opening_b = _first(sequences, "B")
    return ("iob1", None) if opening_b is None else ("iob2", opening_b)


def _describe(prefix: str | None, entity_type: str | None) -> str:
    return "the sentence start" if prefix is None else ("O" if prefix == "O" else f"{prefix}-{entity_type}")


def to_spans(tags: list[str], scheme: str) -> list[Span]:
    """The entities of a tag sequence; TagError at the first tag that is impossible in `scheme`."""
    if scheme not in SCHEMES:
        raise SlimtuneError(f"unknown tag scheme {scheme!r}; choose from {list(SCHEMES)}")
    spans: list[Span] = []
    open_type, open_start = None, 0  # the entity being read, if any
    previous: tuple[str | None, str | None] = (None, None)
    for i, tag in enumerate(tags):
        prefix, entity_type = parse_tag(tag, i)
        if prefix != "O" and prefix not in _PREFIXES[scheme]:
            used = "/".join(_PREFIXES[scheme])
            raise TagError(i, f"{tag} is not a {scheme.upper()} tag (that scheme uses {used}- and O)")
        continues = open_type is not None and open_type == entity_type
        after = _describe(*previous)
        if scheme == "iobes":
            if prefix in ("I", "E") and not continues:
                raise TagError(i, f"{tag} after {after}: an {prefix}- tag must follow "
                                  f"B-{entity_type} or I-{entity_type}")
            if prefix in ("B", "S", "O") and open_type is not None:
                raise TagError(i, f"{tag} after {after}: the {open_type} entity was not closed with E-{open_type}")
        elif scheme == "iob2" and prefix == "I" and not continues:
            raise TagError(i, f"{tag} after {after}: in IOB2 an entity starts with B-{entity_type}")
        elif scheme == "iob1" and prefix == "B" and not continues:
            raise TagError(i, f"{tag} after {after}: in IOB1, B- only separates two adjacent {entity_type} entities")
        if open_type is not None and (prefix in ("B", "S", "O") or not continues):
            spans.append(Span(open_type, open_start, i))
            open_type = None
        if prefix in ("B", "S") or (prefix == "I" and open_type is None):
            open_type, open_start = entity_type, i
        if prefix in ("E", "S"):
            spans.append(Span(open_type, open_start, i + 1))
            open_type = None
        previous = (prefix, entity_type)
    if open_type is not None:
        if scheme == "iobes":
            raise TagError(len(tags) - 1, f"the sentence ends inside a {open_type} entity (no E-{open_type})")
        spans.append(Span(open_type, open_start, len(tags)))
    return spans


def from_spans(spans: list[Span], length: int, scheme: str) -> list[str]:
    """Tags for `length` words holding the (non-overlapping) `spans`, written in `scheme`."""
    tags = ["O"] * length
    previous_end, previous_type = None, None
    for span in sorted(spans, key=lambda s: s.start):
        n = span.end - span.start
        if scheme == "iob1":
            adjacent = previous_end == span.start and previous_type == span.type
            first = "B" if adjacent else "I"
            tags[span.start : span.end] = [f"{first}-{span.type}"] + [f"I-{span.type}"] * (n - 1)
        elif scheme == "iob2":
            tags[span.start : span.end] = [f"B-{span.type}"] + [f"I-{span.type}"] * (n - 1)
        elif scheme == "iobes":
            inner = [f"I-{span.type}"] * (n - 2)
            tags[span.start : span.end] = [f"S-{span.type}"] if n == 1 else [f"B-{span.type}", *inner, f"E-{span.type}"]
        else:
            raise SlimtuneError(f"unknown tag scheme {scheme!r}; choose from {list(SCHEMES)}")
        previous_end, previous_type = span.end, span.type
    return tags


def convert(tags: list[str], source: str, target: str) -> list[str]:
    return from_spans(to_spans(tags, source), len(tags), target)


def repair(tags: list[str]) -> list[str]:
    """Model output (IOB2 labels, possibly impossible) as valid IOB2.

    An I-X that does not continue an X entity opens one, the reading conlleval
    and seqeval's default mode give it, so reported entities match the scores.
    """
    return from_spans(_lenient_spans(tags), len(tags), INTERNAL_SCHEME)


def _lenient_spans(tags: list[str]) -> list[Span]:
    spans, open_type, open_start = [], None, 0
    for i, tag in enumerate(tags + ["O"]):
        prefix, entity_type = parse_tag(tag, i)
        if open_type is not None and (prefix != "I" or entity_type != open_type):
            spans.append(Span(open_type, open_start, i))
            open_type = None
        if prefix == "B" or (prefix == "I" and open_type is None):
            open_type, open_start = entity_type, i
    return spans
