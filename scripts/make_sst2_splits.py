"""Carve the vendored SST-2 splits from ../shared/data/sst2/train.tsv.

SST-2's train file repeats some phrases, so sentences are de-duplicated before
the seeded shuffle: no held-out sentence ever appears in train or dev.

    python scripts/make_sst2_splits.py ../shared/data/sst2/train.tsv data/sst2
"""

import gzip
import io
import random
import sys
from pathlib import Path

SIZES = {"train_8k": 8000, "dev_1k": 1000, "heldout_2k": 2000}
NAMES = {"0": "negative", "1": "positive"}  # GLUE's integer labels, written as names people read


def main(source: str, out_dir: str) -> None:
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    unique = list(dict.fromkeys(rows, None))
    seen_sentences: set[str] = set()
    deduped = []
    for row in unique:
        sentence = row.split("\t", 1)[1].strip()
        if sentence not in seen_sentences:
            seen_sentences.add(sentence)
            deduped.append(row)
    random.Random(0).shuffle(deduped)
    start = 0
    for name, size in SIZES.items():
        part = [NAMES[row.split("\t", 1)[0]] + "\t" + row.split("\t", 1)[1] for row in deduped[start : start + size]]
        start += size
        with gzip.GzipFile(Path(out_dir) / f"{name}.tsv.gz", "wb", compresslevel=9, mtime=0) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8") as f:
            f.write("\n".join([header, *part]) + "\n")
        print(f"{name}: {len(part)} rows")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
