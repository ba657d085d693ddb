"""Word-level sentences as model inputs: word-piece alignment, windows for long sentences, and stitching back.

A word's label sits on its first sub-token and every other position gets
LABEL_PAD, so the loss and the prediction look at exactly one position per word.
A sentence longer than the model window is cut at word boundaries into windows
that overlap by about a quarter of the window; each word is owned by the one
window where its first sub-token has the most context on both sides. Nothing
is truncated: every word is owned by exactly one window. (A single word longer
than a whole window keeps only its first sub-tokens, which are all that its tag
is read from.)
"""

from itertools import accumulate

from slimtune.data.batching import LABEL_PAD
from slimtune.errors import SlimtuneError


def _check_tokenizer(tokenizer, max_length: int) -> int:
    """The number of sub-tokens a window holds besides the special tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise SlimtuneError("token classification needs a fast tokenizer (it aligns words through word_ids())")
    capacity = max_length - tokenizer.num_special_tokens_to_add()
    if capacity < 1:
        raise SlimtuneError(f"--max-length {max_length} leaves no room for words beside the special tokens")
    return capacity


def _piece_counts(word_ids: list[int | None], n_words: int) -> list[int]:
    counts = [0] * n_words
    for word in word_ids:
        if word is not None:
            counts[word] += 1
    return counts


def plan_windows(counts: list[int], capacity: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) covering all words; each holds at most `capacity` sub-tokens
    (a word longer than that sits alone), and each after the first repeats up to a quarter
    window of the previous one's last words as left context."""
    overlap = capacity // 4
    windows: list[tuple[int, int]] = []
    start, n = 0, len(counts)
    while True:
        end, used = start + 1, counts[start]
        while end < n and used + counts[end] <= capacity:
            used += counts[end]
            end += 1
        windows.append((start, end))
        if end == n:
            return windows
        next_start = end
        while next_start - 1 > start and sum(counts[next_start - 1 : end]) <= overlap:
            next_start -= 1
        if sum(counts[next_start:end]) + counts[end] > capacity:
            next_start = end  # the next word would not fit beside the repeated context
        start = next_start


def assign_owners(counts: list[int], windows: list[tuple[int, int]]) -> list[int]:
    """For each word, the index of the window where its first sub-token has the most context."""
    before = [0, *accumulate(counts)]  # before[w]: sub-tokens of words 0..w-1
    owners, best = [-1] * len(counts), [-1] * len(counts)
    for index, (start, end) in enumerate(windows):
        for word in range(start, end):
            left = before[word] - before[start]
            right = before[end] - before[word] - 1
            if min(left, right) > best[word]:
                owners[word], best[word] = index, min(left, right)
    return owners


def _readable(words: list[str], counts: list[int], unk_token: str | None) -> list[str]:
    """Words the tokenizer drops entirely (zero-width or control characters) become the unknown token."""
    if unk_token is None:
        missing = [w for w, c in zip(words, counts) if c == 0]
        raise SlimtuneError(f"the tokenizer produces no token for {missing!r} and has no unknown token")
    return [w if c else unk_token for w, c in zip(words, counts)]


def _window_feature(encoded, w: int, sentence: int, words: int, start: int, owned_here) -> dict:
    """Feature for window `w` of `encoded`, holding the sentence's words from `start` on.

    `owned_here(word)` says whether this window decides that word.
    """
    owned, seen = [], set()
    for position, local in enumerate(encoded.word_ids(w)):
        if local is not None and local not in seen:  # a word's first sub-token
            seen.add(local)
            if owned_here(start + local):
                owned.append((start + local, position))
    feature = {"input_ids": encoded["input_ids"][w], "sentence": sentence, "words": words, "owned": owned}
    if "token_type_ids" in encoded:
        feature["token_type_ids"] = encoded["token_type_ids"][w]
    return feature


def encode_words(sentences: list[list[str]], tokenizer, max_length: int,
                 labels: list[list[int]] | None = None) -> list[dict]:
    """Model features for word-split sentences, one per window.

    Each feature has `input_ids` (and `token_type_ids` when the model takes
    them), `sentence` (its index), `words` (that sentence's length), `owned`
    ([(word, position)] for the words this window decides) and, when per-word
    label ids are given, `labels` (per position: LABEL_PAD except at owned
    words' first sub-tokens).
    """
    capacity = _check_tokenizer(tokenizer, max_length)
    if not sentences:
        return []
    counted = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
    plans = []  # (words, windows, owners) per sentence
    for s, words in enumerate(sentences):
        counts = _piece_counts(counted.word_ids(s), len(words))
        if 0 in counts:
            words = _readable(words, counts, tokenizer.unk_token)
            counts = _piece_counts(tokenizer(words, is_split_into_words=True).word_ids(), len(words))
        windows = plan_windows(counts, capacity)
        plans.append((words, windows, assign_owners(counts, windows)))

    encoded = tokenizer([words[a:b] for words, windows, _ in plans for a, b in windows],
                        is_split_into_words=True, truncation=True, max_length=max_length)
    features, w = [], 0
    for s, (words, windows, owners) in enumerate(plans):
        for index, (start, _) in enumerate(windows):
            feature = _window_feature(encoded, w, s, len(words), start, lambda word: owners[word] == index)
            w += 1
            if not feature["owned"]:
                continue  # only continuation pieces of a long word, or context decided elsewhere
            if labels is not None:
                feature["labels"] = [LABEL_PAD] * len(feature["input_ids"])
                for word, position in feature["owned"]:
                    feature["labels"][position] = labels[s][word]
            features.append(feature)
    return features


def stitch(features: list[dict], values: list) -> list[list]:
    """Per-sentence, per-word values from per-feature, per-position `values` (values[i][position])."""
    lengths = {f["sentence"]: f["words"] for f in features}
    out = [[None] * lengths[s] for s in range(len(lengths))]
    for feature, row in zip(features, values):
        for word, position in feature["owned"]:
            out[feature["sentence"]][word] = row[position]
    return out
