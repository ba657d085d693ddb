from slimtune.models.kv_cache import kv_cache


def test_the_cache_is_found_under_its_current_or_its_old_name():
    cache = object()
    assert kv_cache({"cache": cache, "use_cache": True}) is cache
    assert kv_cache({"past_key_values": cache}) is cache  # callers of the old API (removed in transformers 5.40)
    assert kv_cache({"cache": None, "use_cache": False}) is None
