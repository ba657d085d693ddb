"""EDA (data/eda.py): embedding-space synonyms and seeded text variants."""

import random

import torch

from slimtune.data.eda import STOP_WORDS, EmbeddingSynonyms, eda
from slimtune.tasks import get_task


def _synonyms(tiny_model):
    backbone = get_task("classify").load_backbone(tiny_model)
    return EmbeddingSynonyms(backbone.tokenizer, backbone.model.get_input_embeddings().weight, k=3), backbone


def test_synonyms_are_the_nearest_whole_words_by_cosine(tiny_model):
    synonyms, backbone = _synonyms(tiny_model)
    assert "good" in synonyms.words and "film" in synonyms.words
    assert not any(w.startswith("##") or w.lower() in STOP_WORDS or len(w) < 2 for w in synonyms.words)
    weight = backbone.model.get_input_embeddings().weight.detach()
    vocab = backbone.tokenizer.get_vocab()
    rows = torch.nn.functional.normalize(weight[[vocab[w] for w in synonyms.words]], dim=-1)
    similarity = rows @ rows[synonyms.words.index("good")]
    similarity[synonyms.words.index("good")] = -2
    assert synonyms("good") == [synonyms.words[i] for i in similarity.topk(3).indices.tolist()]
    assert synonyms("GOOD") == synonyms("good") and synonyms("notaword") == []


def test_eda_is_seeded_and_changes_texts(tiny_model):
    synonyms, _ = _synonyms(tiny_model)
    text = "the film was good and the acting was lovely"
    variants = [eda(text, 0.2, random.Random(f"7:0:{i}"), synonyms) for i in range(40)]
    assert variants == [eda(text, 0.2, random.Random(f"7:0:{i}"), synonyms) for i in range(40)]
    assert len(set(variants)) > 5 and text in variants  # "original" is one of the draws
    assert all(v.split() for v in variants)
    assert eda("good", 1.0, random.Random(0), synonyms).strip()  # deletion never empties a text
