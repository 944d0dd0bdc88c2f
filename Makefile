# The two commands of the README: `make benchmark` (the main job) and `make test`. Each installs what it needs.
PYTHON ?= python
PIP := $(PYTHON) -m pip
DEBIAN_PACKAGES := espeak-ng flite asterisk-core-sounds-en-wav

.PHONY: install test benchmark lint

install:
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install --quiet --disable-pip-version-check torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev]"
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then echo "apt-get install $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root: install $(DEBIAN_PACKAGES) with apt-get for the audio data (tests that need them skip)"; fi

test: install
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .

benchmark: install
	$(PYTHON) examples/run_benchmark.py
