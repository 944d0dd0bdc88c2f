# The two commands of the README: `make benchmark` (the main job) and `make test`. Each installs what it needs
# into the project's own virtual environment, .venv (Debian 12: python3 only, PEP 668 on the system interpreter).
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check
DEBIAN_PACKAGES := espeak-ng flite asterisk-core-sounds-en-wav

.PHONY: install test benchmark lint clean-venv

install: $(VENV)/.installed

# scripts/bootstrap.sh runs `python3 -m venv .venv` (apt-get python3-venv when missing), then pip installs into it.
# Re-installs when pyproject.toml changes; `make clean-venv` starts over.
$(VENV)/.installed: pyproject.toml
	@bash scripts/bootstrap.sh "$(VENV)" "$(DEBIAN_PACKAGES)"
	@touch $@

test: install
	$(PYTHON) -m pytest -q

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

benchmark: install
	$(PYTHON) examples/run_benchmark.py

clean-venv:
	rm -rf $(VENV)
