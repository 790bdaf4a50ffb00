#!/usr/bin/env bash
# Install everything w4a-httpd needs to build, run and test, from Debian 12's
# packages. Idempotent; run as root.
set -euo pipefail

PKGS=(
    build-essential autoconf automake libtool pkg-config
    apache2 apache2-dev libapr1-dev libaprutil1-dev
    check valgrind
    python3 python3-pytest python3-requests
    curl wrk apache2-utils procps passwd openssl
    php-fpm php-cli apache2-suexec-custom
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the lists when they are missing or older than an hour.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
        apt-get update -q
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The packages start Debian's own apache2 and php-fpm; ours run from our own
# configurations, so theirs must not hold ports or sockets. Stop them by
# their own pid files only: their init scripts match processes by name and
# would stop ours too.
for pidf in /var/run/apache2/apache2.pid /run/php/php*-fpm.pid; do
    [ -s "$pidf" ] || continue
    pid=$(cat "$pidf")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidf"
done
exit 0
