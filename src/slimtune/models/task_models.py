"""Task models: a pretrained backbone plus a small task head that is always trained."""

import torch
from torch import nn

from slimtune.data.batching import LABEL_PAD


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, T, H] token states → [B, H] sentence vector, ignoring padding."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def head_dropout(config) -> float:
    """The backbone's own classifier dropout, as transformers' task heads use it (0.1 when it names none)."""
    for name in ("classifier_dropout", "hidden_dropout_prob"):
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    return 0.1


class SequenceClassifier(nn.Module):
    """Backbone → pooling → dropout → linear; logits [B, num_labels]."""

    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str):
        super().__init__()
        if pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused: dropping it saves compute and keeps "full" honest
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(head_dropout(backbone.config)), nn.Linear(hidden, num_labels))

    def head_modules(self) -> list[nn.Module]:
        """Modules trained with every method: the head, and the pooler when pooling goes through it."""
        pooler = getattr(self.backbone, "pooler", None)
        return [self.head] + ([pooler] if self.pooling == "pooler" and pooler is not None else [])

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        if self.pooling == "pooler":
            return self.head(out.pooler_output)
        return self.from_hidden(out.last_hidden_state, attention_mask)

    def from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_labels] from the backbone's token states [B, T, H] (any pooling but 'pooler')."""
        return self.head(pool(hidden, attention_mask, self.pooling))


class TokenClassifier(nn.Module):
    """Backbone → dropout → linear on every token; logits [B, T, num_labels]."""

    def __init__(self, backbone: nn.Module, num_labels: int):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused per token; transformers' token classifiers have none either
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(head_dropout(backbone.config)), nn.Linear(hidden, num_labels))

    def head_modules(self) -> list[nn.Module]:
        return [self.head]

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return self.from_hidden(out.last_hidden_state, attention_mask)

    def from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, num_labels] from the backbone's token states [B, T, H]."""
        return self.head(hidden)


class CausalLM(nn.Module):
    """A causal LM split into `backbone` (the decoder stack) and `head` (the vocabulary projection).

    The head stays frozen with every method (`head_modules` is empty): in SmolLM2 and many
    small LMs it is tied to the input embeddings, so training it would put the whole
    embedding matrix into the adapter. Methods adapt the decoder; the whole model
    (`self.lm`, kept outside the module tree so its weights are not listed twice) sees
    the adapted layers because they are replaced in place, which is what `generate` uses.

    forward: input_ids, attention_mask [B, T] → logits [B, T, V]; with `position_ids` [B, T] restarting at every
    example (packed rows, training/packing.py) the mask is left to the model. With `labels` [B, T]
    (LABEL_PAD where no loss applies) only the positions that predict a labelled token
    are projected: logits [N, V], N = the number of labelled tokens after the first
    position, in row-major order. The vocabulary projection is the largest matmul of a
    small LM and the loss needs no other rows.
    """

    def __init__(self, lm: nn.Module, tokenizer):
        super().__init__()
        self.__dict__["lm"] = lm
        self.tokenizer = tokenizer
        self.backbone = lm.base_model
        self.head = lm.get_output_embeddings()

    def head_modules(self) -> list[nn.Module]:
        return []

    def forward(self, input_ids, attention_mask, labels=None, position_ids=None, **_) -> torch.Tensor:
        if position_ids is not None:  # packed rows: attention kept inside each example by its positions
            attention_mask = None
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
        if labels is None:
            return self.head(hidden)
        predicts_label = labels[:, 1:] != LABEL_PAD  # [B, T-1]: position t predicts token t+1
        return self.head(hidden[:, :-1][predicts_label])  # [N, V]

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """transformers' generate on the adapted model: [B, T] left-padded prompts → [B, T + new] ids."""
        return self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
