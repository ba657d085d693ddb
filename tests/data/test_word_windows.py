import random

import pytest

from slimtune.data.batching import LABEL_PAD
from slimtune.data.word_windows import assign_owners, encode_words, plan_windows, stitch
from slimtune.errors import SlimtuneError
from slimtune.models.loading import load_backbone
from tests.conftest import FILLER, PEOPLE, PLACES


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_backbone(tiny_model).tokenizer


def test_a_words_label_sits_on_its_first_sub_token(tokenizer):
    (feature,) = encode_words([["the", "paris", "film"]], tokenizer, 64, [[0, 1, 2]])
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert pieces == ["[CLS]", "the", "p", "##a", "##r", "##i", "##s", "film", "[SEP]"]
    assert feature["labels"] == [LABEL_PAD, 0, 1, LABEL_PAD, LABEL_PAD, LABEL_PAD, LABEL_PAD, 2, LABEL_PAD]
    assert feature["owned"] == [(0, 1), (1, 2), (2, 7)]
    assert len(feature["token_type_ids"]) == len(feature["input_ids"])


def test_a_word_the_tokenizer_drops_becomes_unknown_and_keeps_its_label(tokenizer):
    (feature,) = encode_words([["the", "\u200b", "film"]], tokenizer, 64, [[0, 1, 2]])
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"])[2] == "[UNK]"
    assert feature["labels"] == [LABEL_PAD, 0, 1, 2, LABEL_PAD]


def test_plan_windows_cover_everything_within_capacity_and_overlap():
    counts = [1, 3, 1, 1, 2, 1, 1, 1, 4, 1, 1, 1, 1, 2]
    windows = plan_windows(counts, capacity=8)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    assert all(sum(counts[a:b]) <= 8 for a, b in windows)
    assert all(b2 > b1 and a2 <= b1 for (_, b1), (a2, b2) in zip(windows, windows[1:]))
    assert any(a2 < b1 for (_, b1), (a2, _) in zip(windows, windows[1:])), "no window repeats context"
    owners = assign_owners(counts, windows)
    assert all(windows[o][0] <= w < windows[o][1] for w, o in enumerate(owners))


def test_a_word_longer_than_a_window_sits_alone():
    assert plan_windows([1, 9, 1], capacity=4) == [(0, 1), (1, 2), (2, 3)]


def _random_sentences(n, seed):
    rng = random.Random(seed)
    vocabulary = FILLER + [w for name in PEOPLE + PLACES for w in name] + ["supercalifragilistic", "\u200b", ","]
    return [[rng.choice(vocabulary) for _ in range(rng.choice([1, 3, 12, 40, 90]))] for _ in range(n)]


@pytest.mark.parametrize("max_length", [3, 4, 7, 16, 128])
def test_windows_round_trip_every_word_gets_exactly_one_value(tokenizer, max_length):
    sentences = _random_sentences(30, max_length)
    labels = [[(7 * s + w) % 1000 for w in range(len(words))] for s, words in enumerate(sentences)]
    features = encode_words(sentences, tokenizer, max_length, labels)
    assert all(len(f["input_ids"]) <= max_length for f in features)
    owned = [(f["sentence"], word) for f in features for word, _ in f["owned"]]
    assert len(owned) == len(set(owned)) == sum(map(len, sentences))
    assert stitch(features, [f["labels"] for f in features]) == labels
    if max_length < 128:
        assert len(features) > len(sentences), "long sentences were not split"


def test_a_window_must_hold_a_word(tokenizer):
    with pytest.raises(SlimtuneError, match="--max-length 2 leaves no room"):
        encode_words([["the"]], tokenizer, 2)
