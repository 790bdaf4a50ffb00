#!/usr/bin/env bash
# The test command: installs what is needed, builds, runs the C unit tests
# (Check) and the integration tests (pytest against a real httpd, real
# PHP-FPM pools as real users), then the same unit tests and the vhost,
# php, htcompat, media, geoip and hostile integration tests again against
# an ASan + UBSan build (build-san/; see docs/testing.md). Run as root on
# Debian 12.
#
# Arguments go to the first pytest run (e.g. -k NAME, or test files).
# W4A_SANITIZE_PASS=0 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
bash scripts/build.sh

echo "== unit tests (make check)"
if ! make check; then
    cat test-suite.log t/unit/*.log 2>/dev/null || true
    exit 1
fi

echo "== fuzz targets, a fixed short run each (scripts/fuzz.sh SECONDS for more)"
FUZZ_NICE=19 FUZZ_SEED=1 FUZZ_RUNS=200000 bash scripts/fuzz.sh 120

echo "== integration tests (pytest)"
rc=0
/usr/bin/python3 -m pytest -ra -p no:cacheprovider t/integration "$@" || rc=$?

if [ "${W4A_SANITIZE_PASS:-1}" = 1 ]; then
    echo "== sanitizer build (ASan + UBSan, build-san/)"
    W4A_SANITIZE=1 bash scripts/build.sh
    echo "== unit tests under ASan + UBSan (make check in build-san/)"
    if ! ASAN_OPTIONS=abort_on_error=1:halt_on_error=1 \
         UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
         make -C build-san check; then
        cat build-san/test-suite.log build-san/t/unit/*.log 2>/dev/null || true
        rc=1
    fi
    echo "== integration tests under ASan + UBSan (httpd with the runtime preloaded)"
    W4A_SANITIZE=1 /usr/bin/python3 -m pytest -ra -p no:cacheprovider \
        t/integration/test_vhost.py t/integration/test_php.py \
        t/integration/test_htcompat.py t/integration/test_media.py \
        t/integration/test_geoip.py t/integration/test_hostile_static.py \
        t/integration/test_hostile_files.py t/integration/test_hostile_php.py \
        t/integration/test_hostile_tenant.py t/integration/test_metrics.py || rc=$?
fi
exit "$rc"
