"""Shared fixtures: a tiny randomly initialised BERT saved as a local model directory, and toy data
for both tasks (sentiment rows for classify, CoNLL sentences for ner)."""

import gzip
import os
import random
import string

# Tiny models gain nothing from intra-op threads, and on a shared two-core machine two threads per step run
# 10-70x slower than one (measured: 1 s against 15 ms per step). Said through the environment too, before torch is
# imported: `slimtune`'s in-process commands then default to one thread (`--threads`), so OpenMP never starts a
# thread pool here, which a test's forked child (tests/reliability/test_crash.py) would wait on forever.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402

torch.set_num_threads(1)

POSITIVE = ["good", "great", "fun", "lovely", "superb", "moving", "bright", "warm"]
NEGATIVE = ["bad", "dull", "awful", "boring", "weak", "flat", "grim", "cold"]
FILLER = ["the", "film", "was", "a", "plot", "and", "very", "story", "acting", "it", "is", "of"]
# NER entities: not in the tiny vocabulary, so each splits into several word pieces.
PEOPLE = [["anna"], ["bob", "marley"], ["carla"], ["dirk", "van", "dam"]]
PLACES = [["paris"], ["oslo"], ["new", "york"], ["rome"]]
TASK_LABELS = {"classify": ["neg", "pos"], "ner": ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], "causal-lm": [],
               "multilabel": ["a", "b", "c"]}


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    return special + letters + [f"##{c}" for c in letters] + POSITIVE + NEGATIVE + FILLER


def make_tiny_bert(directory, seed: int = 0, layers: int = 2, dropout: float = 0.1) -> str:
    """Save a 2-layer, 32-wide BERT with a word-piece tokenizer to `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> str:
    """A tiny Llama causal LM directory (tests/tiny_llama.py), with biases so every method has something to train."""
    from tests.tiny_llama import make_tiny_llama_lm

    return make_tiny_llama_lm(tmp_path_factory.mktemp("tiny-llama-lm"), attention_bias=True)


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1)


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, rng.randint(2, 5))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path, rows, header=("sentence", "label")) -> str:
    path.write_text("\t".join(header) + "\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
    return str(path)


@pytest.fixture
def toy_data(tmp_path) -> dict[str, str]:
    return {
        "train": write_tsv(tmp_path / "train.tsv", sentiment_rows(96, 0)),
        "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, 1)),
    }


def build_classifier(model_dir: str, method: str, options: dict | None = None, labels=None, seed=0, task="classify"):
    """(task model, method, trainable params, backbone) for a method on a tiny model, like `train` builds it."""
    from slimtune.methods.adaptation import attach
    from slimtune.methods.registry import create_method
    from slimtune.tasks import get_task

    backbone = get_task(task).load_backbone(model_dir)
    torch.manual_seed(seed)
    model = get_task(task).build_model(backbone, list(labels or TASK_LABELS[task]))
    m = create_method(method, options or {})
    params = attach(model, m)
    return model, m, params, backbone


def toy_batch(backbone, n: int = 6, seed: int = 0) -> dict:
    from slimtune.data.batching import pad_batch

    rows = sentiment_rows(n, seed)
    enc = backbone.tokenizer([t for t, _ in rows])
    feats = [{"input_ids": ids, "labels": int(l == "pos")} for ids, (_, l) in zip(enc["input_ids"], rows)]
    return pad_batch(feats, backbone.tokenizer.pad_token_id)


def tiny_llama(seed: int = 0):
    """A 2-layer Llama-style decoder with grouped-query attention (9 query heads, 3 key/value heads), random weights."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=100, hidden_size=36, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=64)
    return LlamaModel(config).eval()


def ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Sentences of (word, IOB2 tag): filler words around one or two people or places."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words = [(w, "O") for w in rng.sample(FILLER, rng.randint(2, 5))]
        for _ in range(rng.randint(1, 2)):
            entity_type, names = rng.choice([("PER", PEOPLE), ("LOC", PLACES)])
            name = rng.choice(names)
            tagged = [(w, ("B-" if i == 0 else "I-") + entity_type) for i, w in enumerate(name)]
            at = rng.choice([i for i in range(len(words) + 1) if i == len(words) or words[i][1][:1] != "I"])
            words[at:at] = tagged
        sentences.append(words)
    return sentences


def write_conll(path, sentences, scheme: str = "iob2", docstart: bool = True) -> str:
    """A CoNLL-2003-like file: token, a dummy POS column, tag (in `scheme`), trailing spaces like the real data."""
    from slimtune.data.tag_schemes import convert

    lines = ["-DOCSTART- -X- O ", ""] if docstart else []
    for sentence in sentences:
        tags = convert([t for _, t in sentence], "iob2", scheme)
        lines += [f"{w} NN {t} " for (w, _), t in zip(sentence, tags)] + [""]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def toy_ner_data(tmp_path) -> dict[str, str]:
    return {
        "train": write_conll(tmp_path / "train.conll", ner_sentences(96, 0)),
        "dev": write_conll(tmp_path / "dev.conll", ner_sentences(32, 1)),
    }


def toy_token_batch(backbone, n: int = 6, seed: int = 0) -> dict:
    """A padded ner batch: labels [B, T] on first sub-tokens, LABEL_PAD elsewhere."""
    from slimtune.data.batching import pad_batch
    from slimtune.data.word_windows import encode_words

    index = {name: i for i, name in enumerate(TASK_LABELS["ner"])}
    sentences = ner_sentences(n, seed)
    features = encode_words([[w for w, _ in s] for s in sentences], backbone.tokenizer, backbone.max_length,
                            [[index[t] for _, t in s] for s in sentences])
    return pad_batch(features, backbone.tokenizer.pad_token_id)


def toy_lm_batch(backbone, n: int = 6, seed: int = 0) -> dict:
    """A padded causal-lm batch of prompt/response pairs: labels [B, T] on the response tokens only."""
    from slimtune.data.batching import pad_batch
    from slimtune.data.instructions import Conversation, encode_conversation
    from tests.tiny_llama import instruction_rows

    rows = [Conversation(({"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}))
            for r in instruction_rows(n, seed)]
    return pad_batch([encode_conversation(backbone.tokenizer, row) for row in rows], backbone.tokenizer.pad_token_id)


TASK_BATCHES = {"classify": toy_batch, "ner": toy_token_batch, "causal-lm": toy_lm_batch}
TASK_MODELS = {"classify": "tiny_model", "ner": "tiny_model", "causal-lm": "tiny_lm"}  # fixture names


class Interrupt(Exception):
    """Stops a training run part-way, as a crash would, for the resume tests."""


def interrupt_at(step: int):
    """A step callback (`step_callbacks=[...]`) that raises Interrupt once training reaches `step`."""
    def stop(progress):
        if progress.step == step:
            raise Interrupt

    return stop


@pytest.fixture
def slimtune_cache(tmp_path, monkeypatch):
    """An empty $SLIMTUNE_CACHE for the test, so nothing reads or writes the user's cache."""
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
