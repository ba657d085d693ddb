"""Which adapters are in memory: loading and unloading at run time, and the adapter store.

`--adapter-dir DIR` serves any adapter directory inside DIR by its name, loaded
on first use (a miss) and kept while it is used (hits); at most
`--max-loaded-adapters` of those stay loaded, the least recently used idle one
evicted first (one serving a request is never evicted: the bound is then
exceeded until it is idle). Adapters given at start-up or loaded by an admin
request stay until unloaded. All loads go through `load`, which registers an
adapter only once it is fully built, checked and installed.
"""

import asyncio
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from slimtune.serve.registry import AdapterRegistry
from slimtune.serve.schemas import NAME_PATTERN
from slimtune.serve.served import ServedAdapter


class AdapterStore:
    def __init__(self, registry: AdapterRegistry, exclusive, directory: Path | None = None,
                 max_loaded: int | None = None, confine: Callable[[str], None] | None = None):
        self.registry = registry
        self.exclusive = exclusive  # runs a function in the model thread (MicroBatcher.exclusive)
        self.directory = Path(directory).resolve() if directory else None
        self.max_loaded = max_loaded
        self.confine = confine  # refuses base-model paths outside the allowed directory
        self.recent: OrderedDict[str, None] = OrderedDict()  # adapters loaded from the directory, oldest use first
        self.in_use: Counter[str] = Counter()
        self.hits = self.misses = self.evictions = 0
        self._loading: dict[str, asyncio.Future] = {}

    def available(self) -> list[str]:
        """Adapter names the directory offers (loaded or not)."""
        if self.directory is None:
            return []
        try:
            return sorted(p.name for p in self.directory.iterdir() if (p / "adapter_config.json").is_file())
        except OSError:  # the directory went away or became unreadable: nothing to offer
            return []

    async def resolve(self, name: str) -> ServedAdapter:
        """The adapter called `name`, loaded from the store directory if it is there and not loaded yet."""
        adapter = self.registry.adapters.get(name)
        if adapter is not None:
            if name in self.recent:
                self.hits += 1
                self.recent.move_to_end(name)
            return adapter
        path = self._in_directory(name)
        if path is None:
            return self.registry.get(name)  # raises UnknownAdapter with the loaded names
        if name in self._loading:  # another request is loading it already
            return await asyncio.shield(self._loading[name])
        self.misses += 1
        future = self._loading[name] = asyncio.get_running_loop().create_future()
        try:
            adapter = await self.load(name, path, evictable=True)
            future.set_result(adapter)
            return adapter
        except Exception as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiting requests get it, nobody else need
            raise
        finally:
            del self._loading[name]

    @asynccontextmanager
    async def held(self, target):
        """Keep `target` (an adapter, or a base: harmless) from eviction while the block runs."""
        self.in_use[target.name] += 1
        try:
            yield target
        finally:
            self.in_use[target.name] -= 1
            if self.max_loaded is not None and len(self.recent) > self.max_loaded:
                await self._evict(keep=None)  # the bound was exceeded while this one was busy

    async def load(self, name: str, path: Path, evictable: bool = False) -> ServedAdapter:
        """Build, check, install and register an adapter; on any failure nothing of it remains."""
        self.registry.reserve(name)
        try:
            adapter = await asyncio.to_thread(self.registry.prepare, name, path, confine=self.confine)
            await self.exclusive(self.registry.install, adapter)
            self.registry.register(adapter)
        finally:
            self.registry.release(name)
        if evictable:
            self.recent[name] = None
            await self._evict(keep=name)
        return adapter

    async def unload(self, name: str) -> ServedAdapter:
        adapter = self.registry.unregister(name)
        self.recent.pop(name, None)
        await self.exclusive(self.registry.uninstall, adapter)
        return adapter

    async def _evict(self, keep: str) -> None:
        while self.max_loaded is not None and len(self.recent) > self.max_loaded:
            idle = next((n for n in self.recent if n != keep and not self.in_use[n]), None)
            if idle is None:
                return  # every other one is serving a request: evict when they are done
            await self.unload(idle)
            self.evictions += 1

    def _in_directory(self, name: str) -> Path | None:
        if self.directory is None or not re.fullmatch(NAME_PATTERN, name):  # a plain directory name only
            return None
        try:
            path = (self.directory / name).resolve()
            found = path.is_relative_to(self.directory) and (path / "adapter_config.json").is_file()
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a link loop: no such adapter
            return None
        return path if found else None

    def stats(self) -> dict:
        return {"directory": str(self.directory) if self.directory else None, "loaded": len(self.recent),
                "max_loaded": self.max_loaded, "hits": self.hits, "misses": self.misses, "evictions": self.evictions}

