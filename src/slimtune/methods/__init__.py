"""PEFT methods: one module each, found through the registry.

The names below are loaded on first use, so that a light submodule (methods/catalogue.py) can be imported
without torch, which every method module needs."""

__all__ = ["Method", "available_methods", "create_method", "get_method_class"]


def __getattr__(name: str):
    if name == "Method":
        from slimtune.methods.base import Method

        return Method
    if name in __all__:
        from slimtune.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
