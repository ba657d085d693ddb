"""What every registered method is, without importing torch: `slimtune methods` in a tenth of the time.

Describing the methods means importing their modules, and every one needs torch (about 1.5 s of CPU before
anything is printed). The registry's description (registry.describe_methods) is therefore kept in
$SLIMTUNE_CACHE/methods.json under the identity of the method modules (name, size and modification time of each
file in this package, and slimtune's version): a method added, removed or edited changes it, and the registry is
asked again. A process that has imported the methods already asks the registry directly, so methods defined
outside the package in that process are listed too.
"""

import hashlib
import json
import sys
from pathlib import Path

from slimtune import __version__
from slimtune.cache import cache_dir
from slimtune.data.files import read_json_file
from slimtune.errors import SlimtuneError

MAX_CACHE_BYTES = 1 << 20  # the registry's descriptions take about 14 KB; a larger file is not one slimtune wrote


def method_catalogue() -> list[dict]:
    """One description per registered method, in the registry's order (see registry.describe_methods)."""
    if "slimtune.methods.base" in sys.modules:  # torch and the method classes are loaded already: nothing to save
        return _from_registry()
    key = _modules_identity()
    cached = _read(key)
    if cached is not None:
        return cached
    described = _from_registry()
    _write(key, described)
    return described


def _from_registry() -> list[dict]:
    from slimtune.methods.registry import describe_methods

    return describe_methods()


def _modules_identity() -> str:
    """Changes whenever a module the registry would import changes (or slimtune's version does)."""
    package = Path(__file__).parent
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in package.glob("*.py"))
    return hashlib.sha256(json.dumps([__version__, str(package), files]).encode()).hexdigest()


def _cache_path() -> Path:
    return cache_dir() / "methods.json"


def _read(key: str) -> list[dict] | None:
    """The cached descriptions if they were written for `key` and have the shape this module writes, else None."""
    try:
        cached = read_json_file(_cache_path(), max_bytes=MAX_CACHE_BYTES)
    except SlimtuneError:  # missing, unreadable, oversized or not JSON: described afresh
        return None
    if not isinstance(cached, dict) or cached.get("key") != key or not isinstance(cached.get("methods"), list):
        return None
    if not all(isinstance(entry, dict) and _FIELDS <= entry.keys() for entry in cached["methods"]):
        return None
    return cached["methods"]


_FIELDS = {"name", "summary", "default_lr", "mergeable", "peft_type", "options", "task_defaults"}


def _write(key: str, described: list[dict]) -> None:
    """Atomically; a cache that cannot be written only makes the next listing slower."""
    from slimtune.atomic import write_json

    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": key, "methods": described})
    except OSError:
        pass
