# devstash: `make demo` to see it work, `make test` to run the test suite.
# Both set up everything they need on a fresh machine: LMDB's and xxHash's
# development packages (apt-get, when pkg-config cannot find them) and a
# virtual environment in .venv with the package built from this checkout.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOURCES := $(wildcard csrc/*.c csrc/*.h devstash/*.py devstash/*.pyi) meson.build pyproject.toml

.PHONY: demo test test-asan bench bench-quick sysdeps clean

sysdeps:
	@if ! command -v pkg-config >/dev/null || ! pkg-config --exists lmdb libxxhash; then \
	    echo "Installing liblmdb-dev, libxxhash-dev and pkg-config with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblmdb-dev libxxhash-dev pkg-config >/dev/null; \
	fi

$(VENV)/.tools: tests/requirements.txt | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check meson-python meson ninja -r tests/requirements.txt
	@touch $@

$(VENV)/.installed: $(VENV)/.tools $(SOURCES) | sysdeps
	$(VPY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall .
	@touch $@

BENCH_VENVS := bench/.venvs
BENCH_ENVS  := $(VENV)/.installed $(BENCH_VENVS)/devstash011/.installed $(BENCH_VENVS)/peers/.installed

# The peers each get a venv of their own: devstash 0.1.1 from PyPI, and
# joblib, diskcache and py-lmdb for the floors.
$(BENCH_VENVS)/%/.installed: bench/requirements-%.txt
	rm -rf $(BENCH_VENVS)/$*
	$(PYTHON) -m venv $(BENCH_VENVS)/$*
	$(BENCH_VENVS)/$*/bin/python -m pip install -q --disable-pip-version-check -r $<
	@touch $@

bench: $(BENCH_ENVS)
	$(PYTHON) bench/run.py --ours $(VPY)

bench-quick: $(BENCH_ENVS)
	$(PYTHON) bench/run.py --ours $(VPY) --quick

demo: $(VENV)/.installed
	@$(VPY) examples/run_quickstart.py

test: $(VENV)/.installed
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) $(BENCH_VENVS) build .devstash_cache
