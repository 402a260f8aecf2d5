# Set-up and everyday commands. `make demo` and `make test` are all a newcomer needs.
VENV ?= .venv
PY := $(VENV)/bin/python
L2V := $(VENV)/bin/l2v-search
# Where no NVIDIA driver is present, pin the CPU wheel of torch (pip finds it on disk on our
# machines; elsewhere PyPI serves it). With a GPU, let pip pick the newest CUDA build.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.4,torch==2.13.0)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-slow lint bench clean-index browser

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Index the bundled sample corpus with the embedded default encoder, then ask it a question.
demo: install
	$(L2V) index --sample --name demo
	$(L2V) query "How do vaccines train the immune system?" --index demo -k 5

# The search page's end-to-end test drives Debian's chromium (Playwright's own browser download
# cannot run offline). Installed here when missing and apt-get can (root); skipped otherwise.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped (apt-get install chromium)"; }

test: install browser
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check llm2vec_search tests benchmarks recipes
