"""Build SST-2 instruction data for causal-LM tuning from the vendored SST-2 splits.

Each sentence becomes {"prompt": "Is this review positive or negative? ...", "response": "positive" | "negative"}.
The splits come from different vendored files (train_8k, dev_1k, heldout_2k), which never share a
sentence (scripts/make_sst2_splits.py de-duplicates before splitting), so held-out answers are never trained on.

    python scripts/make_sst2_instructions.py data/sst2 data/sst2_instruct
"""

import gzip
import json
import sys
from pathlib import Path

PROMPT = "Is this review positive or negative? Answer with one word: positive or negative.\n\nReview: {sentence}"
ANSWERS = {"0": "negative", "1": "positive"}
SPLITS = {"train_1k": ("train_8k", 1000), "dev_200": ("dev_1k", 200), "heldout_500": ("heldout_2k", 500)}


def rows(tsv_gz: Path, count: int) -> list[dict]:
    with gzip.open(tsv_gz, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]  # header: label<TAB>sentence
    out = []
    for line in lines[:count]:
        label, sentence = line.split("\t", 1)
        out.append({"prompt": PROMPT.format(sentence=sentence.strip()), "response": ANSWERS[label]})
    return out


def main(source: str, out_dir: str) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name, (split, count) in SPLITS.items():
        part = rows(Path(source) / f"{split}.tsv.gz", count)
        with open(Path(out_dir) / f"{name}.jsonl.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:  # mtime 0: same bytes each run
            f.write("".join(json.dumps(r) + "\n" for r in part).encode("utf-8"))
        positive = sum(r["response"] == "positive" for r in part)
        print(f"{name}: {len(part)} rows ({positive} positive)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
