"""PEFT methods: one module each, found through the registry."""

from slimtune.methods.base import Method
from slimtune.methods.registry import available_methods, create_method, get_method_class

__all__ = ["Method", "available_methods", "create_method", "get_method_class"]
