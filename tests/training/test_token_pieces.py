"""Batches past `max_batch_tokens` run in pieces: bounded memory, the same gradient and loss as one pass."""

import pytest
import torch

from slimtune.tasks import get_task
from slimtune.training.batch_source import FeatureBatches
from slimtune.training.batch_source import token_pieces
from slimtune.training.config import TrainConfig
from slimtune.training.trainer import Trainer
from tests.conftest import TASK_LABELS, build_classifier, ner_sentences, sentiment_rows, write_conll, write_tsv


def test_pieces_keep_order_and_stay_within_the_budget():
    rows = [{"input_ids": [0] * n} for n in (3, 5, 4, 9, 2, 2)]
    pieces = token_pieces(rows, budget=12)
    assert [row for piece in pieces for row in piece] == rows
    assert all(len(p) * max(len(r["input_ids"]) for r in p) <= 12 for p in pieces)
    assert token_pieces([{"input_ids": [0] * 20}], budget=12) == [[{"input_ids": [0] * 20}]]  # a long row alone
    assert len(token_pieces(rows, budget=10_000)) == 1


@pytest.mark.parametrize("task_name", ["ner", "classify"])
def test_pieces_give_the_gradient_and_loss_of_one_pass(tiny_model, tmp_path, task_name):
    task = get_task(task_name)
    labels = TASK_LABELS[task_name]
    model, method, params, backbone = build_classifier(tiny_model, "lora", {"dropout": "0"}, task=task_name)
    if task_name == "ner":
        rows = task.read(write_conll(tmp_path / "train.conll", ner_sentences(12, 3)))
    else:
        rows = task.read(write_tsv(tmp_path / "train.tsv", sentiment_rows(12, 3)))
    features = task.encode(rows, backbone.tokenizer, labels, backbone.max_length)
    model.eval()  # no dropout: both passes see the same function
    pad = backbone.tokenizer.pad_token_id
    results = []
    for budget in (100_000, 24):
        trainer = Trainer(model, method, task, params, TrainConfig(max_batch_tokens=budget), tmp_path, pad, labels)
        for p in params:
            p.grad = None
        loss = trainer._backward(model, FeatureBatches(features, 12, 0, pad), features, group_size=1, sync=True)
        results.append((loss, [p.grad.clone() for p in params]))
    assert len(token_pieces(features, 24)) > 2
    (whole_loss, whole_grads), (piece_loss, piece_grads) = results
    assert piece_loss == pytest.approx(whole_loss, rel=1e-5)
    for whole, piece in zip(whole_grads, piece_grads):
        torch.testing.assert_close(piece, whole, rtol=1e-4, atol=1e-6)
