"""Feature mapping: the frozen encoder runs once per sentence; a fixed reduction and a low-rank map train on top.

`FeatureBackbone` takes the backbone's place in the task model (see `Method.inject`). For each input it takes a
sentence feature x — the frozen encoder's pooled last hidden state [H] (cls or mean over real tokens), or with
reducer=tfidf the TF-IDF vector of the token ids [k], for which the encoder never runs — reduces it with a map
fitted once on the training set (PCA, LDA, or truncated SVD for TF-IDF; see feature_reducers.py),
z = x @ projᵀ + offset [dim], and maps it back to the hidden width through a trained low-rank product,
h = U Vᵀ z with U [H, r], V [dim, r]. h is given to every token position, so the task model's pooling (mean or
cls) returns h as its sentence vector (with pooling=pooler the pooler is applied to h and trains with the head),
and the task head, trained with every method, turns it into logits: logits = head(U Vᵀ z), a classifier on z of
rank at most r. Keeping the task head (rather than letting
U Vᵀ emit logits) leaves the task model, the trainer and the adapter format as they are, at the cost of one
redundant linear factor; the method has no bias of its own for the same reason (the head has one).

Encoder features are kept per example, keyed by its real token ids: `prepare` (called by train() before the first
step) computes them for the whole training set once, or reads them from a disk cache keyed by the model's weights,
the pooling and the training data's token ids ($SLIMTUNE_CACHE, default ~/.cache/slimtune, under features/), and
fits the reducer. Training epochs then never run the encoder; inputs not seen before (dev, eval, predict) run it
once and are kept in memory. Classification only: one sentence vector per text has nothing to say per token.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from slimtune.atomic import write_safetensors
from slimtune.cache import cache_dir
from slimtune.data.batching import example_keys
from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.feature_reducers import fit_lda, fit_pca, fit_tfidf, tfidf_vectors
from slimtune.models.loading import fingerprint
from slimtune.models.task_models import pool
from slimtune.progress import note, progress_bar

REDUCERS = ("pca", "lda", "tfidf")
POOLINGS = ("mean", "cls")
KEPT_EXAMPLES = 200_000  # bound on unseen inputs kept in memory (~300 MB at H=384); training examples always stay
CACHE_FORMAT = b"slimtune-features-1"


def features_dir() -> Path:
    return cache_dir() / "features"


class LowRankMap(nn.Module):
    """h = U Vᵀ z: [B, dim] → [B, H] through rank r."""

    def __init__(self, dim: int, hidden: int, rank: int):
        super().__init__()
        self.V = nn.Parameter(torch.randn(dim, rank) * dim**-0.5)  # [dim, r]
        self.U = nn.Parameter(torch.randn(hidden, rank) * rank**-0.5)  # [H, r]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.V) @ self.U.T


class FeatureBackbone(nn.Module):
    """Stands in for the frozen backbone (kept as `base_layer`): sentence feature → z → h, h at every position."""

    def __init__(self, base_layer: nn.Module, reducer: str, dim: int, rank: int, pooling: str):
        super().__init__()
        self.base_layer = base_layer
        self.config = base_layer.config
        self.reducer, self.pooling = reducer, pooling
        hidden = base_layer.config.hidden_size
        if reducer == "tfidf":  # fitted in prepare(); until then there is no vocabulary
            self.register_buffer("terms", torch.zeros(0, dtype=torch.long))  # [k] token ids
            self.register_buffer("idf", torch.zeros(0))  # [k]
            self.register_buffer("proj", torch.zeros(dim, 0))  # [dim, k]
        else:  # until prepare() fits the reducer: the feature's first dim coordinates
            self.register_buffer("proj", torch.eye(dim, hidden))  # [dim, H]
        self.register_buffer("offset", torch.zeros(dim))  # [dim]
        self.low_rank = LowRankMap(dim, hidden, rank)
        self.known: dict[bytes, torch.Tensor] = {}  # example key → pooled encoder feature [H]
        self.base_layer.eval()

    @property
    def pooler(self) -> nn.Module | None:
        """The base's pooler, when the task model pools through it (it is then trained as part of the head)."""
        return getattr(self.base_layer, "pooler", None)

    def train(self, mode: bool = True):
        super().train(mode)
        self.base_layer.eval()  # the frozen encoder is a fixed feature extractor: no dropout, ever
        return self

    @torch.no_grad()
    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Run the frozen encoder: [B, T] → pooled last hidden states [B, H]."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.base_layer(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def encoder_features(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """[B, H], from `known` where possible; the rest are encoded in one call and kept while there is room."""
        keys = example_keys(input_ids, attention_mask, token_type_ids)
        new = [i for i, key in enumerate(keys) if key not in self.known]
        fresh = {}
        if new:
            types = token_type_ids[new] if token_type_ids is not None else None
            for i, row in zip(new, self.encode(input_ids[new], attention_mask[new], types)):
                fresh[keys[i]] = row
                if len(self.known) < KEPT_EXAMPLES:
                    self.known[keys[i]] = row
        return torch.stack([self.known.get(key, fresh.get(key)) for key in keys])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        """A transformers BaseModelOutputWithPooling, as the encoder it stands for returns."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling  # here: listing methods needs none

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.reducer == "tfidf":
            if not len(self.terms):
                raise SlimtuneError("features: reducer=tfidf has no vocabulary; prepare() fits it on training data")
            x = tfidf_vectors(input_ids, attention_mask, self.terms, self.idf)  # [B, k]
        else:
            x = self.encoder_features(input_ids, attention_mask, token_type_ids)  # [B, H]
        h = self.low_rank(x @ self.proj.T + self.offset)  # [B, H]
        states = h.unsqueeze(1).expand(-1, input_ids.shape[1], -1)  # [B, T, H]
        pooled = self.pooler(states) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=pooled)


@dataclass
class FeaturesOptions:
    reducer: str = field(default="pca", metadata={
        "help": "pca or lda on the frozen encoder's sentence features, or tfidf (TF-IDF of the token ids + "
                "truncated SVD; the encoder never runs)"})
    dim: int = field(default=128, metadata={"help": "reduced feature size (lda gives at most classes - 1)"})
    rank: int = field(default=16, metadata={"help": "rank r of the trained map U·Vᵀ from the reduced feature"})
    pooling: str = field(default="mean", metadata={"help": "sentence feature from the encoder: mean or cls"})

    def validate(self) -> None:
        if self.reducer not in REDUCERS:
            raise SlimtuneError(f"features: reducer must be one of {', '.join(REDUCERS)}, got {self.reducer!r}")
        if self.pooling not in POOLINGS:
            raise SlimtuneError(f"features: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.dim < 1 or self.rank < 1:
            raise SlimtuneError(f"features: dim and rank must be at least 1, got dim={self.dim}, rank={self.rank}")
        if self.rank > self.dim:
            raise SlimtuneError(f"features: rank {self.rank} above dim {self.dim} adds parameters but no capacity")


class Features(Method):
    name = "features"
    summary = ("a low-rank head on frozen sentence features (computed once, cached on disk) reduced by pca or "
               "lda, or on TF-IDF + SVD without the encoder; one vector per text, so classification only")
    Options = FeaturesOptions
    tasks = ("classify",)
    # Measured (docs/results.md, "features"): 2,000 SST-2 sentences, 3 epochs, pca: dev 0.801 at 3e-3 against
    # 0.771 / 0.791 / 0.771 at 1e-3 / 1e-2 / 3e-2; lda was flat (0.788-0.791), tfidf liked 1e-2 (0.679 vs 0.667).
    default_lr = 3e-3

    def inject(self, backbone: nn.Module) -> FeatureBackbone:
        o = self.options
        return FeatureBackbone(backbone, o.reducer, o.dim, o.rank, o.pooling)

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for m in backbone.modules() if isinstance(m, LowRankMap) for p in (m.V, m.U)]

    def count_parameters(self, backbone: nn.Module) -> int:
        return self.options.rank * (self.options.dim + backbone.config.hidden_size)

    def state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """The trained U, V and the fitted reduction (proj, offset; terms and idf for tfidf) as plain tensors."""
        state = {f"low_rank.{n}": p.detach().clone() for n, p in backbone.low_rank.named_parameters()}
        state.update({n: b.detach().clone() for n, b in backbone.named_buffers(recurse=False)})
        return state

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict(backbone))
        if set(state) != expected:
            raise KeyError(f"adapter and model disagree on {sorted(set(state) ^ expected)[:5]}")
        with torch.no_grad():
            for name, param in backbone.low_rank.named_parameters():
                param.copy_(state[f"low_rank.{name}"])
            for name, buffer in list(backbone.named_buffers(recurse=False)):
                setattr(backbone, name, state[name].to(buffer.device, buffer.dtype))  # tfidf's k is the data's

    def prepare(self, model: nn.Module, batches, loss_fn) -> None:
        """Fit the reducer on the training set, computing (or reading the cached) encoder features first.

        `batches` yields every training example once (padded batches with `labels`); `loss_fn` is not needed.
        """
        backbone: FeatureBackbone = model.backbone
        batches, reducer, dim = list(batches), self.options.reducer, self.options.dim
        if reducer == "tfidf":
            fitted = fit_tfidf([ids[mask.bool()].tolist() for b in batches
                                for ids, mask in zip(b["input_ids"], b["attention_mask"])], dim)
        elif reducer == "pca":
            fitted = fit_pca(self._training_features(backbone, batches).numpy(), dim)
        else:
            labels = np.concatenate([b["labels"].numpy() for b in batches])
            fitted = fit_lda(self._training_features(backbone, batches).numpy(), labels, dim)
        device = backbone.proj.device
        for name, tensor in fitted.items():
            setattr(backbone, name, tensor.to(device))

    def _training_features(self, backbone: FeatureBackbone, batches: list[dict]) -> torch.Tensor:
        """Encoder features [N, H] of the training rows in batch order: read from the disk cache, or computed once."""
        keys = [k for b in batches for k in example_keys(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))]
        unique = sorted(set(keys))
        digest = hashlib.sha256(CACHE_FORMAT + fingerprint(backbone.base_layer).encode() + backbone.pooling.encode())
        for key in unique:
            digest.update(len(key).to_bytes(8, "little") + key)
        path = features_dir() / f"{digest.hexdigest()[:40]}.safetensors"
        device = backbone.proj.device
        cached = self._read_cache(path, len(unique))
        if cached is not None:
            backbone.known.update(zip(unique, cached.to(device).unbind(0)))
            note(f"features: {len(unique)} examples read from the cache {path}")
        else:
            bar = progress_bar(len(batches), "features")
            for b in batches:
                batch_keys = example_keys(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
                types = b.get("token_type_ids")
                rows = backbone.encode(b["input_ids"].to(device), b["attention_mask"].to(device),
                                       types.to(device) if types is not None else None)
                backbone.known.update(zip(batch_keys, rows))
                bar.update(1)
            bar.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(path, {"features": torch.stack([backbone.known[k] for k in unique]).cpu()})
            note(f"features: {len(unique)} examples encoded, cached at {path}")
        return torch.stack([backbone.known[k] for k in keys]).cpu()

    @staticmethod
    def _read_cache(path: Path, rows: int) -> torch.Tensor | None:
        """The cached features [rows, H], or None when there is no usable file (absent, unreadable, wrong size)."""
        if not path.is_file():
            return None
        try:
            features = load_file(str(path))["features"]
        except (SafetensorError, OSError, KeyError):
            return None
        return features if features.shape[0] == rows else None
