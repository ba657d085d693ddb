"""EDA, "easy data augmentation" (Wei & Zou, 2019): synonym replacement, random insertion, random swap and
random deletion of words, for training texts only.

Synonyms need no download: they are the nearest neighbours, by cosine similarity, of a word's row in the
model's own input-embedding matrix, among the vocabulary entries that are whole words (one token each).
Each call draws from the `random.Random` it is given, so an augmentation is fixed by its seed.
"""

import random

import torch

AUGMENTATIONS = ("eda",)
OPERATIONS = ("original", "synonym", "insert", "swap", "delete")
# Function words are never replaced by or given "synonyms" (as in the EDA paper, a short list of its own).
STOP_WORDS = frozenset("""a an the and or but if of at by for with about to from in on off over under again
then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very can will just is are was were be been being have has had do does did i me my we our you
your he him his she her it its they them their what which who whom this that these those am""".split())


class EmbeddingSynonyms:
    """word → its `k` nearest whole-word neighbours in an input-embedding matrix [V, H] (cosine similarity)."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, k: int = 5):
        vocab = tokenizer.get_vocab()  # token → id
        special = set(tokenizer.all_special_tokens)
        words = {}
        for token, index in vocab.items():
            if token in special:
                continue
            text = tokenizer.convert_tokens_to_string([token]).strip()
            if len(text) >= 2 and text.isalpha() and text.lower() not in STOP_WORDS:
                words.setdefault(text, index)
        # a whole word is one token when tokenised on its own (not a word piece that only continues a word)
        candidates = sorted(words)
        encoded = tokenizer(candidates, add_special_tokens=False)["input_ids"] if candidates else []
        self.words = [w for w, ids in zip(candidates, encoded) if ids == [words[w]]]
        self.index = {w: i for i, w in enumerate(self.words)}
        rows = embeddings.detach().float()[[words[w] for w in self.words]] if self.words else torch.zeros(0, 1)
        self.unit = torch.nn.functional.normalize(rows, dim=-1)  # [N, H]
        self.k = k
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        key = word if word in self.index else word.lower()
        if key not in self.index:
            return []
        if key not in self.cache:
            similarity = self.unit @ self.unit[self.index[key]]  # [N]
            similarity[self.index[key]] = -2.0
            best = similarity.topk(min(self.k, len(self.words) - 1)).indices.tolist()
            self.cache[key] = [self.words[i] for i in best]
        return self.cache[key]


def _replace(words, count, rng, synonyms):
    candidates = [i for i, w in enumerate(words) if w.lower() not in STOP_WORDS and synonyms(w)]
    rng.shuffle(candidates)
    out = list(words)
    for i in candidates[:count]:
        out[i] = rng.choice(synonyms(words[i]))
    return out


def _insert(words, count, rng, synonyms):
    out = list(words)
    pool = [w for w in words if w.lower() not in STOP_WORDS and synonyms(w)]
    for _ in range(count if pool else 0):
        out.insert(rng.randint(0, len(out)), rng.choice(synonyms(rng.choice(pool))))
    return out


def _swap(words, count, rng, synonyms):
    out = list(words)
    for _ in range(count if len(out) > 1 else 0):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def _delete(words, rate, rng):
    kept = [w for w in words if rng.random() >= rate]
    return kept or [rng.choice(words)]  # never the empty text


def eda(text: str, rate: float, rng: random.Random, synonyms) -> str:
    """One EDA variant of `text`: an operation drawn uniformly from OPERATIONS (the text itself included),
    changing max(1, round(rate · words)) words (deletion drops each word with probability `rate`)."""
    words = text.split()
    if not words:
        return text
    operation = rng.choice(OPERATIONS)
    count = max(1, round(rate * len(words)))
    if operation == "synonym":
        words = _replace(words, count, rng, synonyms)
    elif operation == "insert":
        words = _insert(words, count, rng, synonyms)
    elif operation == "swap":
        words = _swap(words, count, rng, synonyms)
    elif operation == "delete":
        words = _delete(words, rate, rng)
    return " ".join(words)
