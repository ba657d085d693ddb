from slimtune.data.batching import LABEL_PAD, length_grouped_batches, pad_batch


def test_batches_cover_every_row_once_and_are_seeded():
    lengths = [(i * 7) % 23 + 1 for i in range(200)]
    batches = length_grouped_batches(lengths, 16, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert batches == length_grouped_batches(lengths, 16, seed=3, epoch=1)
    assert batches != length_grouped_batches(lengths, 16, seed=3, epoch=2)


def test_grouping_reduces_padding():
    lengths = [(i * 7) % 23 + 1 for i in range(800)]
    grouped = length_grouped_batches(lengths, 16, seed=0, epoch=0)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in grouped)
    assert padded < 1.2 * sum(lengths)


def test_padding_is_dynamic_and_labels_are_masked():
    batch = pad_batch([{"input_ids": [1, 2, 3], "labels": [0, 1, 2]}, {"input_ids": [1], "labels": [1]}], pad_id=0)
    assert batch["input_ids"].shape == (2, 3)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[0, 1, 2], [1, LABEL_PAD, LABEL_PAD]]
