"""`train --pack`: examples packed into rows keep apart (same loss and gradient as one example a row), rows are
packed within the budget, and what cannot be packed is refused with one line."""

import json
import random

import pytest
import torch

from slimtune.data.batching import pad_batch
from slimtune.data.instructions import Conversation, encode_conversation
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.tasks import get_task
from slimtune.training.packing import PackedBatches, check_packable, check_packed_attention, pack_rows
from tests.conftest import build_classifier
from tests.tiny_llama import instruction_rows


def test_rows_hold_every_example_once_within_the_budget():
    lengths = [random.Random(i).randint(3, 40) for i in range(200)]
    rows = pack_rows(lengths, budget=64)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) < 0.8 * 200 and len(rows) >= sum(lengths) / 64
    assert pack_rows([70, 10], budget=64) == [[0], [1]]  # too long for any row: a row of its own


def _features(backbone, n=8):
    rows = [Conversation(({"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}))
            for r in instruction_rows(n, seed=5)]
    return [encode_conversation(backbone.tokenizer, row) for row in rows]


def test_packed_rows_give_the_loss_and_gradient_of_one_example_a_row(tiny_lm):
    model, _, params, backbone = build_classifier(tiny_lm, "lora", task="causal-lm")
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2)
    model.eval()  # no dropout: both passes must see the same network
    task, features, pad = get_task("causal-lm"), _features(backbone), backbone.tokenizer.pad_token_id
    source = PackedBatches(features, budget=90, batch_size=8, seed=0, pad_id=pad)
    assert len(source.packed) < len(features) and sum(r["examples"] for r in source.packed) == len(features)

    def loss_and_grad(batch):
        model.zero_grad()
        loss = task.batch_loss(model(**batch), batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    packed_loss, packed_grad = loss_and_grad(source.collate(source.rows(source.epoch(0)[0])))
    plain_loss, plain_grad = loss_and_grad(pad_batch(features, pad))
    assert torch.allclose(packed_loss, plain_loss, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(packed_grad, plain_grad))


def test_a_model_that_lets_packed_examples_see_each_other_is_refused(tiny_lm):
    model, _, _, backbone = build_classifier(tiny_lm, "lora", task="causal-lm")
    check_packed_attention(model, backbone.model.config.vocab_size)  # transformers' Llama keeps them apart

    class Leaky(torch.nn.Module):  # attends across the whole row, ignoring where positions restart
        def forward(self, input_ids, attention_mask, position_ids=None):
            return model(input_ids, torch.ones_like(input_ids))

    with pytest.raises(SlimtuneError, match="does not keep packed examples apart"):
        check_packed_attention(Leaky(), backbone.model.config.vocab_size)


def test_packing_other_tasks_or_prompt_methods_is_refused():
    with pytest.raises(SlimtuneError, match="--pack packs causal-lm examples; task classify"):
        check_packable(get_task("classify"), create_method("lora", {}))
    with pytest.raises(SlimtuneError, match="method prompt adds positions of its own"):
        check_packable(get_task("causal-lm"), create_method("prompt", {}))


def test_train_with_pack_runs_and_counts_examples(tiny_lm, tmp_path, capsys):
    from slimtune.cli import main

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in instruction_rows(40, seed=1)))
    out = tmp_path / "run"
    assert main(["train", "--task", "causal-lm", "--model", str(tiny_lm), "--method", "lora", "--train", str(data),
                 "--dev", str(data), "--epochs", "1", "--batch-size", "2", "--pack", "128", "--few-shot", "off",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] < 20  # 40 examples in fewer than 40 rows, 2 rows a step
    assert "pack: 128" in (out / "train_config.yaml").read_text()
    assert main(["train", "--task", "classify", "--method", "lora", "--train", str(data), "--pack", "64",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--pack packs causal-lm examples" in capsys.readouterr().err
