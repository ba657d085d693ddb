"""Paths a client may name (adapter directories) and paths an adapter's config may name (its base model): both
confined to the allowed directory, and refused with an answer that is the same whether the path exists or not."""

from pathlib import Path

from slimtune.models.loading import DEFAULT_MODEL
from slimtune.serve.registry import AdapterRegistry
from slimtune.serve.served import PathRefused


def allowed_path(allowed_dir: Path, given: str) -> Path:
    """`given` (relative to `allowed_dir` unless absolute) resolved, links included; refused outside it."""
    root = Path(allowed_dir).resolve()
    path = _inside(root, root, given)
    if path is None:
        raise PathRefused(f"adapter path {given!r} is outside the allowed directory {root}")
    return path


def allowed_base(allowed_dir: Path, spec: str, registry: AdapterRegistry) -> None:
    """Refuse a base model that an adapter loaded at run time names, unless the server holds it already or it lies
    inside `allowed_dir` (relative names taken from the working directory, where loading looks for them)."""
    held = {registry.base_spec, DEFAULT_MODEL, *registry.lm_bases.bases,
            *(a.base_model for a in registry.adapters.values())}
    if spec in held:
        return
    root = Path(allowed_dir).resolve()
    if _inside(root, Path.cwd(), spec) is None:
        raise PathRefused(f"the adapter's base model {spec!r} is outside the allowed directory {root}")


def _inside(root: Path, start: Path, given: str) -> Path | None:
    """`given` resolved from `start` (links included) if it lies inside `root`, else None."""
    try:
        path = (start / Path(given).expanduser()).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    return path if path.is_relative_to(root) else None
