"""The key/value cache argument of transformers' decoder calls, under either of its names.

transformers 5.24 renamed it `past_key_values` → `cache` (the old name is still accepted with a warning
and is removed in 5.40). Hooks and wrappers that look at the calls a model makes read it with `kv_cache`,
so they see the cache whichever name the caller used.
"""

CACHE_ARGUMENT = "cache"
OLD_CACHE_ARGUMENT = "past_key_values"


def kv_cache(arguments: dict):
    """The cache object in a call's keyword arguments, or None."""
    cache = arguments.get(CACHE_ARGUMENT)
    return cache if cache is not None else arguments.get(OLD_CACHE_ARGUMENT)
