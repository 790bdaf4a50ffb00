#!/usr/bin/env bash
# Run a w4a web node the way an operator runs one (Debian 12, as root, with
# or without systemd, with or without sudo): build the Debian packages from
# this tree, install them, enable the modules in Debian's apache2, create
# sample hostings (Unix users, trees, map), their pools in Debian's
# php8.2-fpm, a sample GeoIP database and the PHP INI table, start (or
# reload) both services, and print examples.  docs/install.md explains
# each step.  Re-runnable.  PORT (default 80, Debian's) and BASE (default
# /datas) may be set.  scripts/node-dev.sh runs a node from the build tree
# instead (for development).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-80}
BASE=${BASE:-/datas}
ETC=/etc/w4a
MODS="w4a_vhost w4a_php w4a_geoip w4a_htcompat w4a_media w4a_guard w4a_metrics"
export DEBIAN_FRONTEND=noninteractive
bash scripts/deps.sh
PHPV=$(php -r 'echo PHP_MAJOR_VERSION.".".PHP_MINOR_VERSION;')
apt-get install -y -q --no-install-recommends apache2-suexec-custom >/dev/null

say() { printf 'node: %s\n' "$*"; }

# --- the build-tree node (scripts/node-dev.sh) would hold the same sockets ---
for pidfile in /run/w4a/httpd.pid /run/php/w4a-php"$PHPV"-fpm.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping the build-tree node's $(basename "$pidfile" .pid) (scripts/node-dev.sh)"
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
done

# --- 1. the packages, built from a copy of the tree -------------------------
build=/var/tmp/w4a-node-build
rm -rf "$build"
mkdir -p "$build/w4a-httpd"
git ls-files -z | xargs -0 cp --parents -t "$build/w4a-httpd"
say "building the packages in $build (dpkg-buildpackage -us -uc -b)"
( cd "$build/w4a-httpd" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
      dpkg-buildpackage -us -uc -b >"$build/build.log" 2>&1 ) || {
    echo "node: dpkg-buildpackage failed; the end of $build/build.log:" >&2
    tail -n 30 "$build/build.log" >&2
    exit 1
}

# --- 2. install ----------------------------------------------------------------
say "installing $(cd "$build" && echo libapache2-mod-w4a_*.deb w4a-tools_*.deb)"
apt-get install -y -q -o Dpkg::Options::=--force-confold \
    "$build"/libapache2-mod-w4a_*.deb "$build"/w4a-tools_*.deb >/dev/null
# the pools' socket directories (systemd-tmpfiles does it at boot)
/etc/init.d/w4a-tools start >/dev/null

# --- 3./4. the hostings and the map (the panel's job on a real node) ----------
. scripts/lib/node-samples.sh
map="$ETC/hostings.map"
w4a_samples "$map"
w4a-vhostmap compile --base "$BASE" --check-dirs --group www-data \
    "$map" "$ETC/hostings.index"
w4a-logrotate-hostings
mkdir -p "$ETC/php"
w4a-htcheck --dump-table "$PHPV" -o "$ETC/php/$PHPV.table" >/dev/null
w4a_geoip_sample /var/lib/w4a/geoip/country.mmdb

# --- 5. the modules, in Debian's apache2 -----------------------------------------
a2enmod -q $MODS suexec cgid
a2enconf -q w4a-node
# Debian's ScriptAlias /cgi-bin/ -> /usr/lib/cgi-bin would take every
# hosting's /cgi-bin/ (docs/install.md)
[ ! -e /etc/apache2/conf-enabled/serve-cgi-bin.conf ] || a2disconf -q serve-cgi-bin
# suEXEC (apache2-suexec-custom): CGI below /datas runs as the hosting
printf '%s\npublic_html/cgi-bin\n' "$BASE" > /etc/apache2/suexec/www-data
if [ "$PORT" != 80 ]; then
    printf '# scripts/node.sh (PORT=%s)\nListen %s\n' "$PORT" "$PORT" \
        > /etc/apache2/conf-available/w4a-node-port.conf
    a2enconf -q w4a-node-port
elif [ -e /etc/apache2/conf-enabled/w4a-node-port.conf ]; then
    a2disconf -q w4a-node-port
fi

# --- 6. the pools, in Debian's php-fpm ------------------------------------------
systemd=
[ -d /run/systemd/system ] && systemd=1
fpm_pid=/run/php/php"$PHPV"-fpm.pid
fpm_running() { [ -s "$fpm_pid" ] && kill -0 "$(cat "$fpm_pid")" 2>/dev/null; }
rc=0
w4a-fpm-pools "$ETC/hostings.index" || rc=$?
# exit 1: pools written, FPM not running yet (W4A00904); started below
[ "$rc" -le 1 ] || exit "$rc"

# --- 7. start or reload both services ---------------------------------------------
apache2ctl configtest 2>/dev/null || { apache2ctl configtest; exit 1; }
if [ -n "$systemd" ]; then
    systemctl reload-or-restart "php$PHPV-fpm" apache2
else
    fpm_running || service "php$PHPV-fpm" start >/dev/null
    if [ -s /run/apache2/apache2.pid ] && kill -0 "$(cat /run/apache2/apache2.pid)" 2>/dev/null; then
        # a parent without mod_cgid cannot start its CGI daemon on a
        # graceful restart: stop and start when it was not loaded
        if [ -e /run/apache2/cgisock."$(cat /run/apache2/apache2.pid)" ]; then
            apache2ctl graceful
        else
            apache2ctl stop
            for _ in $(seq 100); do [ -s /run/apache2/apache2.pid ] || break; sleep 0.1; done
            service apache2 start >/dev/null
        fi
    else
        service apache2 start >/dev/null
    fi
fi

# --- wait until both hostings answer, PHP included ----------------------------
ok=
for _ in $(seq 100); do
    if curl -s -m 2 -H 'Host: shop.example.net' "http://127.0.0.1:$PORT/info.php" \
            | grep -q "as w4a100011"; then
        ok=1
        break
    fi
    sleep 0.2
done
if [ -z "$ok" ]; then
    echo "node: http://127.0.0.1:$PORT/info.php of shop.example.net does not answer; /var/log/apache2/error.log says:" >&2
    tail -n 20 /var/log/apache2/error.log >&2 || true
    exit 1
fi
[ "$PORT" = 80 ] && u="http://127.0.0.1" || u="http://127.0.0.1:$PORT"

cat <<MSG

w4a web node running in Debian's apache2 and php$PHPV-fpm on $u
(packages: libapache2-mod-w4a, w4a-tools; map: $map, index: $ETC/hostings.index)
  curl -H 'Host: example.com' $u/
  curl -H 'Host: www.example.com' $u/info.php          (PHP as w4a100010; memory_limit 256M from .htaccess)
  curl -H 'Host: shop.example.net' $u/info.php         (PHP as w4a100011)
  curl -H 'Host: anything.sites.example.org' $u/
  curl -H 'Host: shop.example.net' $u/cgi-bin/whoami.cgi   (suEXEC)
  curl -H 'Host: closed.example.com' $u/               (suspended: 403)
  curl -H 'Host: example.com' $u/                      (assets on media.example.com)
  curl -i -H 'Host: media.example.com' $u/style.css    (CORS, caching, static only)
  curl -H 'Host: media.example.com' $u/info.php        (never runs PHP: 403)
  w4a-htcheck --map $ETC/hostings.index                 (mod_php-era .htaccess lines)
  w4a-top                                               (the busiest hostings, live; --once --json for scripts)
Status pages (/w4a-vhost-status, ..., /w4a-metrics) answer the monitoring host of
/etc/apache2/mods-available/w4a_*.conf only (192.0.2.10 as shipped).
Edit $map, then: w4a-vhostmap compile --base $BASE --group www-data $map $ETC/hostings.index
                 w4a-fpm-pools $ETC/hostings.index
(no restart needed). Logs: /var/log/apache2/, per hosting: $BASE/vol1/w4a100010/log/apache2/access.log
MSG
