"""slimtune: parameter-efficient fine-tuning of pretrained transformers, measured."""

__version__ = "0.1.0"
