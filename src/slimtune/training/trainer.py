"""The training loop: plain PyTorch, every step visible.

AdamW with linear warm-up then decay, gradient clipping and accumulation,
evaluation on dev each epoch (or every N steps), early stopping that keeps the
best weights, a JSONL metrics log, and checkpoints that `resume` continues to
the same result as an uninterrupted run.
"""

import contextlib
import json
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from slimtune.atomic import write_text
from slimtune.data.batching import to_device
from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.progress import note, progress_bar
from slimtune.tasks.base import Objective
from slimtune.training.adversarial import Adversary
from slimtune.training.batch_source import BatchSource, FeatureBatches, token_pieces
from slimtune.training.checkpoint import Progress, has_checkpoint, load_checkpoint, save_checkpoint
from slimtune.training.config import TrainConfig
from slimtune.training.distributed import Ranks
from slimtune.training.loggers import open_loggers


def linear_warmup_then_decay(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' `get_linear_schedule_with_warmup`, same formula and state dict.

    Importing it from transformers loads transformers.trainer_utils, which imports peft when peft is installed:
    measured 13 of the 30 s start-up of `slimtune train` on the shared machine, paid again by every
    `slimtune compare` run.
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Trains on one process, or as one rank of several (`ranks`, see training/distributed.py)."""

    def __init__(self, model, method, task: Objective, params, config: TrainConfig, run_dir: Path, pad_id: int,
                 labels, ranks: Ranks = Ranks()):
        config.validate()
        if config.batch_size < ranks.world_size:
            raise SlimtuneError(f"--batch-size {config.batch_size} is the global batch, shared by "
                                f"{ranks.world_size} processes; give each at least one row")
        self.model, self.method, self.task, self.ranks = model, method, task, ranks
        self.params, self.config, self.run_dir = params, config, Path(run_dir)
        self.pad_id, self.labels = pad_id, labels
        self.step_callbacks: list[Callable[[Progress], None]] = []  # called after each optimizer step
        # id(param) → its own peak learning rate, no weight decay (a multi-task run's learned loss weights)
        self.own_lr: dict[int, float] = {id(p): lr for p, lr in task.own_learning_rates()}
        self.loggers: list = []  # opened by fit() from config.log_to
        self.run_settings: dict = {}  # what determines the run: saved with each checkpoint (see runs/run_commit.py)
        self.checkpoint_dir = self.run_dir / "checkpoint"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        adversarial = config.adversarial_config()
        self.adversary = Adversary.for_model(adversarial, model) if adversarial else None

    def _optimizer(self):
        shared_lr = [p for p in self.params if id(p) not in self.own_lr]
        decay = [p for p in shared_lr if p.ndim >= 2]
        no_decay = [p for p in shared_lr if p.ndim < 2]  # biases and norms, by shape
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        groups += [{"params": [p], "lr": self.own_lr[id(p)], "weight_decay": 0.0}
                   for p in self.params if id(p) in self.own_lr]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.config.lr)

    def _log(self, record: dict) -> None:
        if not self.ranks.is_main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for logger in self.loggers:
            logger(record)

    def _trim_log(self, step: int) -> None:
        """Drop records written after the checkpoint we resume from, so the log reads as one run.

        A process killed mid-append leaves a torn last line; it is dropped with the rest after `step`.
        """
        if self.metrics_path.exists():
            kept = []
            for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    continue  # a line torn by the interruption; the records up to the checkpoint are whole
                if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                    kept.append(line)
            write_text(self.metrics_path, "".join(l + "\n" for l in kept))

    def _resume(self, optimizer, scheduler) -> tuple[Progress, dict]:
        """(progress, best state) from the checkpoint, the model, optimizer, scheduler and RNG restored from it.

        A damaged checkpoint, or one from other settings, is refused in one line whatever broke in reading it.
        """
        try:
            progress, trainable, best_state = load_checkpoint(self.checkpoint_dir, optimizer, scheduler,
                                                              self.ranks.rank)
            load_adapter_state(self.model, self.method, trainable)
        except SlimtuneError as e:
            raise SlimtuneError(f"{self.checkpoint_dir}: cannot resume, the checkpoint does not fit this run "
                                f"(another method or options?): {e}") from None
        except Exception as e:  # a file from outside, damaged: refuse it, whatever broke
            first = str(e).splitlines()[0] if str(e) else ""
            raise SlimtuneError(f"{self.checkpoint_dir}: cannot resume, the checkpoint is damaged or from other "
                                f"settings ({type(e).__name__}: {first})") from None
        return progress, best_state

    def evaluation_outputs(self, dev_features) -> list:
        """The model's outputs on dev; with several ranks each computes its share and all get every output."""
        return self.task.gathered_outputs(self.model, dev_features, self.pad_id, self.config.batch_size * 2,
                                          self._on_shares)

    def evaluate(self, dev_features) -> dict:
        """Dev metrics, scored from `evaluation_outputs`."""
        return self.task.score(self.evaluation_outputs(dev_features), dev_features, self.labels)

    def _on_shares(self, rows: list, compute: Callable[[list], list]) -> list:
        """`compute` of all `rows`: each rank computes its share, then every rank has all the outputs in order."""
        return self.ranks.gather_shares(compute(self.ranks.share(rows)), len(rows))

    def fit(self, train: list[dict] | BatchSource, dev_features, resume: bool = False) -> dict:
        """Train on `train`, one task's features or a `BatchSource` (several tasks' batches by a schedule)."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        source = train if isinstance(train, BatchSource) else FeatureBatches(train, cfg.batch_size, cfg.seed, self.pad_id)
        batches_per_epoch = source.batches_per_epoch
        total_steps = math.ceil(batches_per_epoch / cfg.grad_accum) * cfg.epochs
        optimizer = self._optimizer()
        scheduler = linear_warmup_then_decay(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
        torch.manual_seed(cfg.seed + self.ranks.rank)  # each rank its own dropout masks
        progress, best_state = Progress(), {}
        if resume:
            if not has_checkpoint(self.checkpoint_dir):
                raise SlimtuneError(f"{self.run_dir}: no checkpoint to resume from")
            progress, best_state = self._resume(optimizer, scheduler)
            if self.ranks.is_main:
                self._trim_log(progress.step)
        elif self.metrics_path.exists() and self.ranks.is_main:
            self.metrics_path.unlink()

        if self.ranks.is_main:
            self.loggers = open_loggers(cfg.log_to, self.run_dir, {**dataclasses.asdict(cfg), **self.run_settings})
        self.model.train()
        training_model = self.ranks.wrap(self.model)
        bar = progress_bar(batches_per_epoch * cfg.epochs, "train",
                           initial=progress.epoch * batches_per_epoch + progress.batch_in_epoch,
                           disable=not self.ranks.is_main)
        while progress.epoch < cfg.epochs and not progress.stopped_early:
            batches = source.epoch(progress.epoch)
            for b in range(progress.batch_in_epoch, len(batches)):
                started = time.perf_counter()
                group_start = b - b % cfg.grad_accum
                group_size = min(cfg.grad_accum, len(batches) - group_start)
                stepped = b - group_start + 1 == group_size
                rows = source.rows(batches[b])
                batch_loss = self._backward(training_model, source, rows, group_size, sync=stepped)
                if not math.isfinite(batch_loss):
                    self._stop_non_finite("loss", batch_loss, progress)
                progress.loss_sum += batch_loss
                progress.loss_count += 1
                if stepped:
                    norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
                    if not math.isfinite(norm):
                        self._stop_non_finite("gradient norm", norm, progress)
                    optimizer.step()
                    scheduler.step()
                    self.method.on_step(self.model.backbone, progress.step + 1, total_steps)
                    optimizer.zero_grad(set_to_none=True)
                    progress.step += 1
                progress.batch_in_epoch = b + 1
                progress.examples_seen += sum(row.get("examples", 1) for row in rows)  # packed rows hold several
                progress.tokens_seen += sum(len(f["input_ids"]) for f in rows)  # global batch
                progress.train_seconds += time.perf_counter() - started
                speed = progress.examples_seen / max(progress.train_seconds, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{batch_loss:.4f}", ex_s=f"{speed:.0f}", refresh=False)
                if not stepped:
                    continue
                if progress.step % cfg.log_every == 0:
                    self._log({"type": "train", "step": progress.step, "epoch": progress.epoch,
                               "loss": progress.loss_sum / progress.loss_count, "lr": scheduler.get_last_lr()[0],
                               "examples_per_second": speed})
                    progress.loss_sum, progress.loss_count = 0.0, 0
                if cfg.eval_every and progress.step % cfg.eval_every == 0 and b + 1 < len(batches):
                    best_state = self._evaluate_and_track(dev_features, progress, best_state)
                    if progress.stopped_early:
                        break
                if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                    self._checkpoint(progress, best_state, optimizer, scheduler)
                record = self.task.step_record(progress.step)
                if record is not None:
                    self._log(record)
                for callback in self.step_callbacks:
                    callback(progress)
            if not progress.stopped_early:
                best_state = self._evaluate_and_track(dev_features, progress, best_state)
                progress.epoch += 1
                progress.batch_in_epoch = 0
                self._checkpoint(progress, best_state, optimizer, scheduler)
        bar.close()
        for logger in self.loggers:
            logger.close()
        if best_state:
            load_adapter_state(self.model, self.method, best_state)
        return {
            "steps": progress.step,
            "epochs_run": progress.epoch,
            "best_step": progress.best_step,
            f"best_dev_{self.task.primary_metric}": progress.best_metric,
            "stopped_early": progress.stopped_early,
            "train_seconds": round(progress.train_seconds, 2),
            "train_examples_seen": progress.examples_seen,
            "examples_per_second": round(progress.examples_seen / max(progress.train_seconds, 1e-9), 1),
            "tokens_per_second": round(progress.tokens_seen / max(progress.train_seconds, 1e-9), 1),
            "history": progress.history,
        }

    def _stop_non_finite(self, what: str, value: float, progress: Progress) -> None:
        """Stop before a NaN or infinity reaches the weights; the checkpoint on disk stays the last good one."""
        kept = (f"the last checkpoint ({self.checkpoint_dir}) is kept" if has_checkpoint(self.checkpoint_dir)
                else "no checkpoint was written yet")
        raise SlimtuneError(f"training stopped at step {progress.step + 1}: the {what} is {value}; {kept}; "
                            "try a lower --lr or other method options")

    def _backward(self, training_model, source: BatchSource, rows: list[dict], group_size: int, sync: bool) -> float:
        """Gradients of this rank's share of the global batch `rows`; returns the global batch's mean loss.

        The share runs in pieces of at most `max_batch_tokens` padded tokens (`token_pieces`), each piece's mean
        loss weighted by its share of the loss units, so the gradient is the share's mean loss's.
        DDP all-reduces gradients on every backward unless told not to; only the step's last piece (`sync`)
        needs it. An empty share (a last batch smaller than the world) still joins, with weight 0.
        """
        share = self.ranks.share(rows)
        units, batch_units = self.task.loss_units(share), self.task.loss_units(rows)
        scale = self.ranks.loss_scale(units, batch_units)
        pieces = token_pieces(share, self.config.max_batch_tokens) if share else [rows[:1]]
        share_loss = 0.0
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            piece_units = self.task.loss_units(piece) if units else 0
            weight = scale * (piece_units / units if units else 1.0)
            batch = to_device(source.collate(piece), self.ranks.device)
            skip_sync = not (sync and last) and training_model is not self.model

            def loss_of(model, batch=batch, piece_units=piece_units) -> torch.Tensor:
                logits = model(**batch)
                return self.task.batch_loss(logits, batch) if piece_units else logits.sum() * 0.0

            extra = self.method.extra_loss(self.model.backbone) if last else None
            with training_model.no_sync() if skip_sync else contextlib.nullcontext():
                if self.adversary is not None:  # the clean and the perturbed pass, each backward (adversarial.py)
                    loss = self.adversary.backward(training_model, self.model, loss_of, weight / group_size,
                                                   batch["attention_mask"],
                                                   extra / group_size if extra is not None else None)
                else:
                    loss = loss_of(training_model)
                    total = loss * weight
                    total = total + extra if extra is not None else total
                    (total / group_size).backward()
            share_loss += loss.item() * (piece_units / units if units else 0.0)
        return self.ranks.sum(share_loss * (units / batch_units))

    def _evaluate_and_track(self, dev_features, progress: Progress, best_state: dict) -> dict:
        if not dev_features:  # small data without --dev: fixed steps, final weights (training/small_data.py)
            return best_state
        metrics = self.evaluate(dev_features)
        score = metrics[self.task.primary_metric]
        record = {"type": "eval", "step": progress.step, "epoch": progress.epoch,
                  **{f"dev_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self._log(record)
        progress.history.append(record)
        if self.ranks.is_main:
            note(f"step {progress.step}: dev {self.task.primary_metric} {score:.4f}")
        if progress.best_metric is None or score > progress.best_metric:
            progress.best_metric, progress.best_step, progress.evals_without_gain = score, progress.step, 0
            return adapter_state(self.model, self.method)
        progress.evals_without_gain += 1
        if self.config.patience and progress.evals_without_gain >= self.config.patience:
            progress.stopped_early = True
            if self.ranks.is_main:
                note(f"early stop: no gain for {self.config.patience} evaluations")
        return best_state

    def _checkpoint(self, progress, best_state, optimizer, scheduler) -> None:
        rng_states = self.ranks.all_objects(torch.get_rng_state())  # each rank's dropout stream, for --resume
        if self.ranks.is_main:
            save_checkpoint(self.checkpoint_dir, progress, adapter_state(self.model, self.method), best_state,
                            optimizer, scheduler, rng_states, self.run_settings)
