#!/usr/bin/env bash
# Install everything w4a-httpd needs to build, run and test, from Debian 12's
# packages. Idempotent; run as root.
set -euo pipefail

PKGS=(
    build-essential autoconf automake libtool pkg-config
    apache2 apache2-dev libapr1-dev libaprutil1-dev
    check valgrind clang libclang-rt-14-dev
    python3 python3-pytest python3-requests python3-prometheus-client
    curl wrk apache2-utils procps passwd openssl
    php-fpm php-cli apache2-suexec-custom
    libmaxminddb-dev mmdb-bin libmaxmind-db-writer-perl
    zlib1g-dev
    memcached libmemcached-dev libmemcached-tools
    libssl-dev
    nftables
    debhelper dpkg-dev fakeroot lintian logrotate
    sqlite3 libaprutil1-dbd-sqlite3 libaprutil1-dbd-mysql
    mariadb-server mariadb-client
    postgresql libaprutil1-dbd-pgsql
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the lists when they are older than an hour, or when they do
    # not know our packages (a fresh image ships without lists).
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ] \
       || ! apt-cache policy apache2-dev 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -q
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The packages start Debian's own apache2 and php-fpm; ours run from our own
# configurations, so theirs must neither hold ports or sockets now nor come
# back at boot. Under systemd, systemctl stops exactly its own units (by
# cgroup). Without it (a plain container), stop them by their own pid files
# only: `service php8.2-fpm stop` ends every php-fpm8.2 process by name
# (start-stop-daemon --exec), ours included, and apache2's init script falls
# back to pidof.
units=(apache2 memcached mariadb postgresql)
for f in /lib/systemd/system/php*-fpm.service /etc/init.d/php*-fpm; do
    [ -e "$f" ] && units+=("$(basename "${f%.service}")")
done
mapfile -t units < <(printf '%s\n' "${units[@]}" | sort -u)
if [ -d /run/systemd/system ]; then
    systemctl disable --now "${units[@]/%/.service}" >/dev/null 2>&1 || true
else
    for pidf in /var/run/apache2/apache2.pid /run/php/php*-fpm.pid \
                /run/memcached/memcached.pid /run/mysqld/mysqld.pid \
                /run/postgresql/*.pid; do
        [ -s "$pidf" ] || continue
        pid=$(cat "$pidf")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidf"
    done
    for u in "${units[@]}"; do
        update-rc.d "$u" disable >/dev/null 2>&1 || true
    done
fi
exit 0
