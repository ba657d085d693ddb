"""A seeded, noisy copy of a TSV text file's first N rows, or of a CoNLL file's first N sentences, for robustness
measurements (docs/results.md, "Remedies"); N = 0: all of them.

Each sentence gets character typos in about 15% of its words of four letters or more (swap two adjacent letters,
drop one, or double one, chosen at random) and one swap of two adjacent words; the label column is kept. In a
CoNLL file (--conll) every word keeps its line, so its tags stay aligned: typos change the word column only
(entity words included), and the swap exchanges two adjacent words both tagged O (none: no swap), so the gold
tags stay a valid sequence. -DOCSTART- lines are left alone.

    python scripts/perturb_texts.py data/sst2/heldout_2k.tsv.gz 500 clean.tsv typos.tsv --seed 0
    python scripts/perturb_texts.py --conll ../shared/data/conll2003/valid.txt 0 clean.conll typos.conll --seed 0
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


def perturb_conll(block: list[str], rng: random.Random, rate: float = 0.15) -> list[str]:
    """One CoNLL sentence (one "word tag..." line per word) with typos in its words and one swap of two adjacent
    O-tagged words; every line keeps its tag columns."""
    split = [line.split(" ", 1) if " " in line else [line, ""] for line in block]
    if split[0][0] == "-DOCSTART-":
        return block
    words = [typo(w, rng) if len(w) >= 4 and w.isalpha() and rng.random() < rate else w for w, _ in split]
    outside = [i for i in range(len(split) - 1) if split[i][1].split()[-1:] == ["O"] == split[i + 1][1].split()[-1:]]
    if outside:
        i = rng.choice(outside)
        words[i], words[i + 1] = words[i + 1], words[i]
    return [f"{word} {rest}" if rest else word for word, (_, rest) in zip(words, split)]


def conll_sentences(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip("\n").split("\n\n") if block.strip()]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("n", type=int)
    p.add_argument("clean_out")
    p.add_argument("noisy_out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conll", action="store_true", help="the source is CoNLL: one word per line, blank between "
                                                        "sentences, the tags after the word")
    args = p.parse_args()
    opener = gzip.open if args.source.endswith(".gz") else open
    with opener(args.source, "rt", encoding="utf-8") as f:
        text = f.read()
    rng = random.Random(args.seed)
    if args.conll:
        sentences = conll_sentences(text)[: args.n or None]
        noisy_sentences = [perturb_conll(block, rng) for block in sentences]
        for path, blocks in ((args.clean_out, sentences), (args.noisy_out, noisy_sentences)):
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n\n".join("\n".join(block) for block in blocks) + "\n")
        return
    header, *rows = text.splitlines()
    rows = rows[: args.n or None]
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
