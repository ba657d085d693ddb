"""Where slimtune keeps what it can rebuild (converted models, base fingerprints, feature caches, the method
listing): $SLIMTUNE_CACHE, default ~/.cache/slimtune."""

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SLIMTUNE_CACHE") or Path.home() / ".cache" / "slimtune").expanduser()
