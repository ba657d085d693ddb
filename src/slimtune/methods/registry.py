"""Name → method class, filled by importing every module in this package.

A new method is one new file defining a `Method` subclass with a `name`; it is
found here without touching anything else.
"""

import importlib
import math
import pkgutil
import typing
from dataclasses import MISSING, fields

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method

_SKIP = {"adaptation", "base", "catalogue", "registry"}


def _discover() -> dict[str, type[Method]]:
    import slimtune.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    found = {}
    stack = list(Method.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "name" in cls.__dict__:
            found[cls.name] = cls
    return dict(sorted(found.items()))


def available_methods() -> dict[str, type[Method]]:
    return _discover()


def get_method_class(name: str) -> type[Method]:
    methods = _discover()
    if name not in methods:
        raise SlimtuneError(f"unknown method {name!r}; available: {', '.join(methods)}")
    return methods[name]


_KINDS = {int: "an integer", float: "a number", bool: "true or false"}


def _coerce(value: str, annotation, key: str, method: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value.lower() in ("none", "null", ""):
            return None
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if origin in (tuple, list):
            item = args[0] if args else str
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(item(p) for p in parts)
        return annotation(value)
    except (ValueError, TypeError):
        kind = _KINDS.get(annotation, "valid")
        raise SlimtuneError(f"option {key}={value!r} for method {method} is not {kind}") from None


def parse_options(cls: type[Method], pairs: dict[str, str]):
    """Build a method's options from `--set key=value` strings, checking names and types."""
    known = {f.name: f for f in fields(cls.Options)}
    unknown = sorted(set(pairs) - set(known))
    if unknown:
        listing = ", ".join(known) or "none"
        raise SlimtuneError(f"unknown option {unknown[0]!r} for method {cls.name}; its options are: {listing}")
    hints = typing.get_type_hints(cls.Options)
    values = {k: _coerce(v, hints[k], k, cls.name) for k, v in pairs.items()}
    for key, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(item, float) and not math.isfinite(item) for item in items):
            raise SlimtuneError(f"option {key}={pairs[key]!r} for method {cls.name} must be a finite number")
    return cls.Options(**values)


def create_method(name: str, pairs: dict[str, str] | None = None, task_name: str | None = None,
                  small_data: bool = False) -> Method:
    """The method `name` with options `pairs` (`--set` strings); given `task_name`, the options it leaves out take
    that task's measured defaults (`Method.task_defaults`; with `small_data`, those for the small-data recipes),
    as does the learning rate."""
    cls = get_method_class(name)
    options = parse_options(cls, {**cls.option_defaults_for(task_name, small_data), **(pairs or {})})
    check = getattr(options, "validate", None)
    if check:
        check()
    return cls(options, task_name, small_data)


def method_from_saved(name: str, options: dict) -> Method:
    """The method an adapter_config.json describes: its options as saved (JSON values, lists for tuples)."""
    as_text = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for k, v in options.items()}
    return create_method(name, as_text)


def option_help(cls: type[Method]) -> list[tuple[str, str, str]]:
    """(name, default, help) for each option, for `slimtune methods`."""
    rows = []
    for f in fields(cls.Options):
        default = f.default if f.default is not MISSING else f.default_factory()
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        rows.append((f.name, str(default), f.metadata.get("help", "")))
    return rows


def describe_methods() -> list[dict]:
    """What `slimtune methods` prints about every registered method, as plain JSON values (cached by
    methods/catalogue.py so that listing them needs no torch)."""
    return [{"name": name, "summary": cls.summary, "default_lr": cls.default_lr, "mergeable": cls.mergeable,
             "peft_type": cls.peft_mapping.peft_type if cls.peft_mapping else None,
             "options": [list(row) for row in option_help(cls)], "task_defaults": cls.task_defaults}
            for name, cls in available_methods().items()]
