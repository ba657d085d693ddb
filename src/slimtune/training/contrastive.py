"""Contrastive few-shot training (SetFit's recipe) for any method that adapts the encoder.

Phase 1 trains the method's encoder parameters (LoRA by default) on seeded, balanced sentence pairs
(data/pairs.py) with SetFit's CosineSimilarityLoss: MSE between cos(u, v) of the two pooled sentence
vectors [B, H] and the target (1 same class, 0 different). Phase 2 freezes the adapted encoder, pools every
training row once and fits a logistic regression (scikit-learn, as SetFit's default head) on the vectors,
then writes its coefficients into the task head, so the result is an ordinary slimtune adapter.

SetFit fits its regression on L2-normalised embeddings (its body ends in a Normalize module); slimtune's head
is linear on the pooled vector, so the vectors are divided by their mean norm instead — linear, hence folded
into the head's weights — which keeps the regression's C=1 regularisation on the scale it was set for.
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slimtune.methods.adaptation import head_parameters
from slimtune.data.batching import pad_batch, to_device
from slimtune.data.pairs import sample_pairs
from slimtune.errors import SlimtuneError
from slimtune.models.task_models import pool
from slimtune.progress import progress_bar
from slimtune.training.checkpoint import Progress
from slimtune.training.trainer import linear_warmup_then_decay

MAX_PAIRS_PER_ROW = 1000  # refused from the flag alone, before any data is read; MAX_PAIRS bounds the epoch
MAX_PAIRS = 10_000_000  # an epoch's pairs are held as one list (about 1 GB at this count)


@dataclass
class ContrastiveConfig:
    """Measured defaults (docs/results.md, "Few-shot"); warm-up, clipping and seed come from the TrainConfig.

    --epochs and --batch-size size the supervised recipes; this phase has its own `epochs` and `pairs_per_row`
    (`slimtune train --pair-epochs/--pairs-per-row`).
    """

    epochs: int = 1  # passes over freshly drawn pairs; SetFit's default
    pairs_per_row: int = 20  # 10 positive + 10 negative per row; measured against 10 and 40 (docs/results.md)
    pair_batch_size: int = 16  # SetFit's default
    head_c: float = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's and SetFit's default)
    reference_steps: int = 20  # pair steps at which the method's own lr measured best (SST-2, 8 per class)
    reference_tokens: float = 13.0  # mean tokens per row of SST-2 (all-MiniLM's tokenizer), where that lr was set
    length_factor_range: tuple[float, float] = (0.38, 3.0)  # as measured: 5-token mentions, 22-token sentences

    def validate(self) -> None:
        if not 1 <= self.pairs_per_row <= MAX_PAIRS_PER_ROW:
            raise SlimtuneError(f"--pairs-per-row must be in 1-{MAX_PAIRS_PER_ROW}, got {self.pairs_per_row}")
        if self.epochs < 1:
            raise SlimtuneError(f"--pair-epochs must be at least 1, got {self.epochs}")

    def check_pairs(self, n_rows: int) -> None:
        """Refuse, before training, a pair phase too large to hold: `pairs_per_row` × `n_rows` pairs an epoch."""
        if self.pairs_per_row * n_rows > MAX_PAIRS:
            raise SlimtuneError(f"{n_rows} rows × {self.pairs_per_row} pairs per row is over {MAX_PAIRS:,} pairs an "
                                "epoch; lower --pairs-per-row or use the supervised recipe")

    def given_flags(self) -> list[str]:
        """The pair flags set to other than their defaults: they mean something only to the contrastive recipe."""
        default = ContrastiveConfig()
        return [flag for flag, field in (("--pairs-per-row", "pairs_per_row"), ("--pair-epochs", "epochs"))
                if getattr(self, field) != getattr(default, field)]

    def scaled_lr(self, method_lr: float, steps: int, mean_tokens: float) -> float:
        """The phase's peak lr without --lr: the method's, times √(reference_steps / steps) once the pair budget
        outgrows the reference, times (mean_tokens / reference_tokens)², held within `length_factor_range`.

        Steps: LoRA's 2e-3, best at 20 steps, cost 2 points at 160 and 320 steps (64 per class of 2 and 4 classes)
        against 5e-4-7e-4; the root keeps lr·√steps constant. Length: at the same 80 steps (16 per class, 4 classes)
        22-token sentences scored best at 3e-3 (3x the steps rule), 5-token mentions at 4e-4-1e-3 and worse at
        1.5e-4; the square of the length ratio is the measured fit, and the range keeps it to the lengths
        measured (docs/results.md, "Few-shot", eighth measurement).

        >>> settings = ContrastiveConfig()
        >>> settings.scaled_lr(2e-3, steps=80, mean_tokens=13.0), settings.scaled_lr(2e-3, steps=80, mean_tokens=26.0)
        (0.001, 0.003)
        """
        low, high = self.length_factor_range
        length = min(high, max(low, (mean_tokens / self.reference_tokens) ** 2))
        return method_lr * min(1.0, math.sqrt(self.reference_steps / max(steps, 1))) * length

    def explain_lr(self, method_lr: float, steps: int, mean_tokens: float) -> str:
        """`scaled_lr`'s terms in words, for the `pairs:` line, kept beside the rule they describe."""
        low, high = self.length_factor_range
        return (f"the method's {method_lr:.2g} × √({self.reference_steps}/{steps}) at most 1, "
                f"× ({mean_tokens:.1f}/{self.reference_tokens:g} tokens per row)² within {low:g}-{high:g}")


def sentence_vectors(model, batch: dict) -> torch.Tensor:
    """The pooled vectors [B, H] the task head reads, computed as `model.forward` computes them."""
    extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
    out = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra)
    if model.pooling == "pooler":
        return out.pooler_output
    return pool(out.last_hidden_state, batch["attention_mask"], model.pooling)


def encoder_parameters(model, params: list) -> list:
    """The trained parameters outside the task head: what phase 1 adapts."""
    head = {id(p) for p in head_parameters(model).values()}
    return [p for p in params if id(p) not in head]


def embed_rows(model, features: list[dict], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """[N, H] pooled vectors of `features`, in order, without gradients (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = to_device(pad_batch(features[start:start + batch_size], pad_id), device)
            out.append(sentence_vectors(model, batch).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def fit_head(model, vectors: torch.Tensor, label_ids: list[int], num_labels: int, c: float, seed: int) -> None:
    """Fit a logistic regression on `vectors` [N, H] and write it into the head's final linear layer."""
    from sklearn.linear_model import LogisticRegression

    scale = vectors.norm(dim=-1).mean().clamp(min=1e-12).item()
    regression = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    regression.fit((vectors / scale).numpy(), np.array(label_ids))
    coef = torch.tensor(regression.coef_, dtype=torch.float32) / scale  # [C or 1, H]
    intercept = torch.tensor(regression.intercept_, dtype=torch.float32)
    if num_labels == 2 and coef.shape[0] == 1:  # binary: p(1) = σ(w·x + b) = softmax([-z/2, z/2])[1]
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(coef.to(linear.weight.device))
        linear.bias.copy_(intercept.to(linear.bias.device))


def pair_loss(model, pairs: list, features: list[dict], pad_id: int) -> tuple[list[int], torch.Tensor]:
    """SetFit's CosineSimilarityLoss over `pairs`: MSE of cos(u, v) against each pair's target; each row in the
    pairs is encoded once. Returns the rows encoded and the loss."""
    rows = sorted({i for pair in pairs for i in (pair.first, pair.second)})
    where = {row: k for k, row in enumerate(rows)}
    device = next(model.parameters()).device
    vectors = sentence_vectors(model, to_device(pad_batch([features[i] for i in rows], pad_id), device))  # [R, H]
    first = vectors[[where[p.first] for p in pairs]]
    second = vectors[[where[p.second] for p in pairs]]
    target = torch.tensor([p.target for p in pairs], device=device)
    return rows, F.mse_loss(F.cosine_similarity(first, second), target)


def fit_contrastive(model, method, task, params: list, train_features: list[dict], dev_features: list[dict],
                    config, pad_id: int, labels: list[str], metrics_path,
                    settings: ContrastiveConfig = ContrastiveConfig(), step_callbacks=(),
                    given_lr: float | None = None) -> dict:
    """Phase 1 and 2 on `model` in place; returns the summary `Trainer.fit` would (same keys).

    The pair phase's peak lr is `given_lr` (the user's --lr) when set, else `settings.scaled_lr` of `config.lr` for
    the pair steps and the training rows' mean length in tokens.
    `step_callbacks` are called after each optimizer step with a `Progress` (step, examples, seconds), as the
    trainer calls them.
    """
    encoder = encoder_parameters(model, params)
    label_ids = [f["labels"] for f in train_features]
    n_pairs = settings.pairs_per_row * len(train_features)
    steps_per_epoch = math.ceil(n_pairs / settings.pair_batch_size)
    total_steps = steps_per_epoch * settings.epochs
    mean_tokens = sum(len(f["input_ids"]) for f in train_features) / max(len(train_features), 1)
    lr = given_lr if given_lr is not None else settings.scaled_lr(config.lr, total_steps, mean_tokens)
    why = "" if given_lr is not None else f" ({settings.explain_lr(config.lr, total_steps, mean_tokens)})"
    epochs = f" × {settings.epochs} epochs" if settings.epochs > 1 else ""
    print(f"pairs: {n_pairs} ({settings.pairs_per_row} per row){epochs} in {total_steps} steps of "
          f"{settings.pair_batch_size}, lr {lr:.2g}{why}", file=sys.stderr)
    optimizer = torch.optim.AdamW(encoder, lr=lr, weight_decay=config.weight_decay)
    scheduler = linear_warmup_then_decay(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    torch.manual_seed(config.seed)
    model.train()
    step, examples, tokens, started = 0, 0, 0, time.perf_counter()
    losses = []  # since the last log record
    log = []
    bar = progress_bar(total_steps, "pairs")
    for epoch in range(settings.epochs):
        pairs = sample_pairs(label_ids, n_pairs, seed=config.seed * 1000 + epoch)
        for start in range(0, len(pairs), settings.pair_batch_size):
            rows, loss = pair_loss(model, pairs[start:start + settings.pair_batch_size], train_features, pad_id)
            extra = method.extra_loss(model.backbone)
            (loss + extra if extra is not None else loss).backward()
            torch.nn.utils.clip_grad_norm_(encoder, config.grad_clip)
            optimizer.step()
            scheduler.step()
            method.on_step(model.backbone, step + 1, total_steps)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            examples += len(rows)
            tokens += sum(len(train_features[i]["input_ids"]) for i in rows)
            for callback in step_callbacks:
                callback(Progress(step=step, epoch=epoch, examples_seen=examples, tokens_seen=tokens,
                                  train_seconds=time.perf_counter() - started))
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if step % config.log_every == 0 or step == total_steps:
                log.append({"type": "pairs", "step": step, "epoch": epoch, "cosine_loss": sum(losses) / len(losses),
                            "lr": scheduler.get_last_lr()[0]})
                losses = []
    bar.close()
    fit_head(model, embed_rows(model, train_features, pad_id), label_ids, len(labels), settings.head_c, config.seed)
    train_seconds = time.perf_counter() - started
    best = None
    if dev_features:
        metrics = task.evaluate(model, dev_features, pad_id, config.batch_size * 2, labels)
        best = metrics[task.primary_metric]
        log.append({"type": "eval", "step": step, "epoch": settings.epochs - 1,
                    **{f"dev_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}})
    partial = metrics_path.with_name(metrics_path.name + ".tmp")  # written whole, then renamed
    partial.write_text("".join(json.dumps(record) + "\n" for record in log))
    os.replace(partial, metrics_path)
    return {
        "steps": step,
        "epochs_run": settings.epochs,
        "best_step": step,
        f"best_dev_{task.primary_metric}": best,
        "stopped_early": False,
        "train_seconds": round(train_seconds, 2),
        "train_examples_seen": examples,
        "examples_per_second": round(examples / max(train_seconds, 1e-9), 1),
        "tokens_per_second": round(tokens / max(train_seconds, 1e-9), 1),
        "history": [r for r in log if r["type"] == "eval"],
        "contrastive": {"pairs": n_pairs, "pairs_per_row": settings.pairs_per_row, "lr": lr,
                        "mean_tokens": round(mean_tokens, 2),
                        "pair_batch_size": settings.pair_batch_size, "epochs": settings.epochs, "head": "logistic"},
    }
