#!/usr/bin/env bash
# The test command: installs what is needed, builds, runs the C unit tests
# (Check) and the integration tests (pytest against a real httpd, real
# PHP-FPM pools as real users). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
bash scripts/build.sh

echo "== unit tests (make check)"
if ! make check; then
    cat test-suite.log t/unit/*.log 2>/dev/null || true
    exit 1
fi

echo "== fuzz targets, a short run each (scripts/fuzz.sh SECONDS for more)"
FUZZ_NICE=19 bash scripts/fuzz.sh 5

echo "== integration tests (pytest)"
exec /usr/bin/python3 -m pytest -ra -p no:cacheprovider t/integration "$@"
