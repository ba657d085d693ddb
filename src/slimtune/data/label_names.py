"""Names for a data file's integer labels: `--label-names negative,positive` or `--label-names 0=negative,1=positive`.

Predictions, reports and the server then speak in names. A list names the labels in numeric order (0, 1, ...);
pairs name each value explicitly. Every value in the file must be named, and names must be distinct.

    >>> parse_label_names("0=negative,1=positive")
    {'0': 'negative', '1': 'positive'}
"""

from dataclasses import replace

from slimtune.errors import SlimtuneError


def parse_label_names(spec: str) -> dict[str, str] | list[str]:
    """{value: name} from pairs, or [name, ...] (value i gets name i) from a plain list."""
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise SlimtuneError(f"--label-names {spec!r}: give names separated by commas, e.g. negative,positive")
    if all("=" in p for p in parts):
        pairs = [tuple(s.strip() for s in p.split("=", 1)) for p in parts]
        names = dict(pairs)
        if len(names) < len(pairs) or any(not k or not v for k, v in pairs):
            raise SlimtuneError(f"--label-names {spec!r}: each value once, as value=name")
        return _distinct(names, spec)
    if any("=" in p for p in parts):
        raise SlimtuneError(f"--label-names {spec!r}: either all value=name pairs or a plain list of names")
    return list(_distinct(dict(enumerate(parts)), spec).values())


def _distinct(names: dict, spec: str) -> dict:
    if len(set(names.values())) < len(names):
        raise SlimtuneError(f"--label-names {spec!r}: names must be distinct")
    return names


def apply_label_names(rows: list, spec: str, path) -> list:
    """`rows` (LabelledText) with each label value replaced by its name."""
    names = parse_label_names(spec)
    if isinstance(names, list):
        values = sorted({r.label for r in rows}, key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
        if any(not v.lstrip("-").isdigit() for v in values):
            raise SlimtuneError(f"{path}: --label-names as a plain list names integer labels; this file has "
                                f"{next(v for v in values if not v.lstrip('-').isdigit())!r} (use value=name pairs)")
        names = {str(i): name for i, name in enumerate(names)}
    unnamed = sorted({r.label for r in rows} - set(names))
    if unnamed:
        raise SlimtuneError(f"{path}: label {unnamed[0]!r} has no name in --label-names")
    return [replace(r, label=names[r.label]) for r in rows]
