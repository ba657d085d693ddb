"""A seeded, noisy copy of a TSV text file's first N rows, for robustness measurements (docs/results.md, "Remedies").

Each sentence gets character typos in about 15% of its words of four letters or more (swap two adjacent letters,
drop one, or double one, chosen at random) and one swap of two adjacent words; the label column is kept.

    python scripts/perturb_texts.py data/sst2/heldout_2k.tsv.gz 500 clean.tsv typos.tsv --seed 0
"""

import argparse
import gzip
import random


def typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def perturb(sentence: str, rng: random.Random, rate: float = 0.15) -> str:
    words = sentence.split()
    words = [typo(w, rng) if len(w) >= 4 and w.isalpha() and rng.random() < rate else w for w in words]
    if len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("n", type=int)
    p.add_argument("clean_out")
    p.add_argument("noisy_out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    opener = gzip.open if args.source.endswith(".gz") else open
    with opener(args.source, "rt", encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    rows = rows[: args.n]
    rng = random.Random(args.seed)
    text_col = header.split("\t").index("sentence")
    noisy = []
    for row in rows:
        fields = row.split("\t")
        fields[text_col] = perturb(fields[text_col], rng)
        noisy.append("\t".join(fields))
    for path, lines in ((args.clean_out, rows), (args.noisy_out, noisy)):
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join([header, *lines]) + "\n")


if __name__ == "__main__":
    main()
