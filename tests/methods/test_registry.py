import pytest

from slimtune.errors import SlimtuneError
from slimtune.methods.registry import available_methods, create_method


def test_core_methods_are_registered():
    assert {"full", "head", "lora"} <= set(available_methods())


def test_unknown_method_lists_available():
    with pytest.raises(SlimtuneError, match="unknown method 'lorra'; available: .*lora"):
        create_method("lorra")


def test_unknown_option_lists_known_ones():
    with pytest.raises(SlimtuneError, match="unknown option 'rank' for method lora; its options are: r, alpha"):
        create_method("lora", {"rank": "4"})


def test_options_are_typed():
    method = create_method("lora", {"r": "16", "alpha": "8", "targets": "query, key"})
    assert (method.options.r, method.options.alpha, method.options.targets) == (16, 8.0, ("query", "key"))
    with pytest.raises(SlimtuneError, match="r='x' for method lora is not an integer$"):
        create_method("lora", {"r": "x"})
    with pytest.raises(SlimtuneError, match="alpha='big' for method lora is not a number$"):
        create_method("lora", {"alpha": "big"})


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_options_come_back_from_their_saved_json(name):
    """adapter_config.json keeps `options_dict()` as JSON; `method_from_saved` must rebuild the same options."""
    import json

    from slimtune.methods.registry import method_from_saved

    method = create_method(name)
    saved = json.loads(json.dumps(method.options_dict()))
    assert method_from_saved(name, saved).options == method.options

