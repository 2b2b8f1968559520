#!/bin/sh
# Coverage-guided fuzzing of the scanner and rewriter with libFuzzer:
#   fuzz/run.sh [SECONDS] [libFuzzer options...]     (make fuzz)
# Builds the extension with clang (-fsanitize=fuzzer-no-link,address) into
# build-fuzz/ (meson and ninja from PATH), links fuzz/libfuzzer.c against the
# libpython of $PYTHON (default python3), and fuzzes
# from fuzz/corpus/ (new interesting inputs go to build-fuzz/corpus, not into
# the repository's small corpus). An input that fails is written to
# build-fuzz/crash-*: copy it into tests/regressions/ (see its README).
set -eu
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
[ $# -gt 0 ] && shift
PYTHON=${PYTHON:-python3}
OUT=build-fuzz
if ! command -v clang >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    echo "Installing clang and its sanitizer runtimes with apt-get"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev >/dev/null 2>&1 ||
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
if [ ! -f "$OUT/meson/build.ninja" ]; then
    CC=clang meson setup "$OUT/meson" -Dbuildtype=debugoptimized -Db_sanitize=address \
        -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C "$OUT/meson" >/dev/null
mkdir -p "$OUT/stage/devstash" "$OUT/corpus"
cp devstash/*.py "$OUT/stage/devstash/"
ln -sf "$(pwd)/$OUT"/meson/_core*.so "$OUT/stage/devstash/"
LIBDIR=$($PYTHON -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
INCLUDE=$($PYTHON -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
VERSION=$($PYTHON -c 'import sys; print("%d.%d" % sys.version_info[:2])')
clang -g -O1 -fsanitize=fuzzer,address -rdynamic fuzz/libfuzzer.c -o "$OUT/fuzz-devstash" \
    -I"$INCLUDE" -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lpython"$VERSION" -ldl -lm
# Python's own allocator would hide overflows of its blocks from ASan.
export PYTHONMALLOC=malloc
export PYTHONPATH="$(pwd)/$OUT/stage:$(pwd)/fuzz"
export PYTHONHOME=$($PYTHON -c 'import sys; print(sys.base_prefix)')
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
exec "$OUT/fuzz-devstash" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=20 \
    -dict=fuzz/python.dict -artifact_prefix="$OUT/" "$@" "$OUT/corpus" fuzz/corpus
