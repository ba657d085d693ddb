"""The interface the trainer and CLI use to stay task-agnostic."""

import torch
from torch import nn


class Task:
    name: str
    primary_metric: str  # higher is better; drives early stopping and best-weight selection

    def read(self, path, **columns) -> list:
        raise NotImplementedError

    def label_names(self, rows: list) -> list[str]:
        raise NotImplementedError

    def encode(self, rows: list, tokenizer, labels: list[str], max_length: int) -> list[dict]:
        """Tokenised features; each has `input_ids` and, when labelled, `labels`."""
        raise NotImplementedError

    def build_model(self, backbone, labels: list[str]) -> nn.Module:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int, labels: list[str]) -> dict:
        raise NotImplementedError
