#!/usr/bin/env bash
# Run a w4a web node from the build tree (Debian 12, as root; for
# development: scripts/node.sh is the operator's path, with the Debian
# packages): install, build, make install the modules and tools, create
# sample hostings (Unix users, trees, map), generate their PHP-FPM pools, a sample GeoIP database and the PHP
# INI table, and start PHP-FPM and httpd with every w4a module.
# Re-runnable. PORT (default 8080) and BASE (default /datas) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
BASE=${BASE:-/datas}
ETC=/etc/w4a
bash scripts/deps.sh
PHPV=$(php -r 'echo PHP_MAJOR_VERSION.".".PHP_MINOR_VERSION;')
bash scripts/build.sh
make install >/dev/null
SBIN=$(sed -n 's/^prefix = //p' Makefile)/sbin
MODDIR=$(apxs -q LIBEXECDIR)

# --- sample hostings (scripts/lib/node-samples.sh) ---------------------------
. scripts/lib/node-samples.sh
mkdir -p "$ETC"
install -m 0644 conf/w4a-overrides.conf "$ETC/w4a-overrides.conf"
# slow clients and noisy neighbours: docs/security.md, "Slow clients"
install -m 0644 conf/w4a-node.conf "$ETC/w4a-node.conf"
map="$ETC/hostings.map"
w4a_samples "$map"
"$SBIN/w4a-vhostmap" compile --base "$BASE" --check-dirs --group www-data \
    "$map" "$ETC/hostings.index"

# --- PHP-FPM: one master of our own, pools from the map ---------------------
# pool files (0640, written by w4a-fpm-pools) are for the root master
# only; httpd (www-data) only passes through the socket directory to
# connect (the sockets are 0600 www-data); the hostings can do neither.
# pool files (0640 root) for the root master; the .settings beside them
# (0640 root:www-data) for mod_w4a_htcompat in httpd's children
install -d -m 750 -g www-data "$ETC/fpm" "$ETC/fpm/pool.d"
chgrp www-data "$ETC/fpm" "$ETC/fpm/pool.d"
chmod 750 "$ETC/fpm" "$ETC/fpm/pool.d"
install -d -m 755 /run/php
install -d -m 710 -g www-data /run/w4a-php /run/w4a-php/"$PHPV"
chgrp www-data /run/w4a-php /run/w4a-php/"$PHPV"
chmod 710 /run/w4a-php /run/w4a-php/"$PHPV"
cat > "$ETC/fpm/php-fpm.conf" <<CONF
[global]
pid = /run/php/w4a-php$PHPV-fpm.pid
error_log = /var/log/w4a-php$PHPV-fpm.log
daemonize = yes
include = $ETC/fpm/pool.d/*.conf
CONF
fpmpid=/run/php/w4a-php$PHPV-fpm.pid
if [ -s "$fpmpid" ] && kill -0 "$(cat "$fpmpid")" 2>/dev/null; then
    # running: the tool reloads it when a pool changed
    "$SBIN/w4a-fpm-pools" --pool-dir "$ETC/fpm/pool.d" --pid-file "$fpmpid" "$ETC/hostings.index"
else
    "$SBIN/w4a-fpm-pools" --pool-dir "$ETC/fpm/pool.d" --pid-file '' "$ETC/hostings.index"
    "php-fpm$PHPV" -y "$ETC/fpm/php-fpm.conf"
fi

# --- PHP's own INI table, for mod_w4a_htcompat's checks -----------------------
mkdir -p "$ETC/php"
"$SBIN/w4a-htcheck" --dump-table "$PHPV" -o "$ETC/php/$PHPV.table" >/dev/null

# --- a sample GeoIP database (try other countries through X-Forwarded-For:
# 127.0.0.1 is a trusted proxy here) ------------------------------------------
w4a_geoip_sample /var/lib/w4a/geoip/country.mmdb
# our monitoring: BTW_FORBIDDEN_GEOIP=1 for these clients
printf '# supervisors (CIDR, one a line)\n192.0.2.250/32\n' > "$ETC/geoip-supervisors.txt"

# --- suEXEC: CGI runs as the hosting (apache2-suexec-custom's docroot) ------
printf '%s\npublic_html/cgi-bin\n' "$BASE" > /etc/apache2/suexec/www-data

# --- httpd -------------------------------------------------------------------
mkdir -p /var/log/w4a /run/w4a "$ETC/htdocs"
# every hosting's requests and errors: not for the hostings (Debian's
# /var/log/apache2 is root:adm 0750 likewise)
chgrp adm /var/log/w4a && chmod 750 /var/log/w4a
echo "default server: this Host is not in the map" > "$ETC/htdocs/index.html"
cat > "$ETC/httpd.conf" <<CONF
# Written by scripts/node-dev.sh.
ServerRoot $ETC
Listen 127.0.0.1:$PORT
ServerName localhost
PidFile /run/w4a/httpd.pid
DefaultRuntimeDir /run/w4a
Mutex file:/run/w4a default
ErrorLog /var/log/w4a/error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module $MODDIR/mod_mpm_event.so
LoadModule authz_core_module $MODDIR/mod_authz_core.so
LoadModule authz_host_module $MODDIR/mod_authz_host.so
LoadModule mime_module $MODDIR/mod_mime.so
LoadModule dir_module $MODDIR/mod_dir.so
LoadModule alias_module $MODDIR/mod_alias.so
LoadModule rewrite_module $MODDIR/mod_rewrite.so
LoadModule setenvif_module $MODDIR/mod_setenvif.so
LoadModule env_module $MODDIR/mod_env.so
LoadModule headers_module $MODDIR/mod_headers.so
LoadModule reqtimeout_module $MODDIR/mod_reqtimeout.so
LoadModule proxy_module $MODDIR/mod_proxy.so
LoadModule proxy_fcgi_module $MODDIR/mod_proxy_fcgi.so
LoadModule cgid_module $MODDIR/mod_cgid.so
ScriptSock /run/w4a/cgid.sock
LoadModule w4a_vhost_module $MODDIR/mod_w4a_vhost.so
LoadModule w4a_php_module $MODDIR/mod_w4a_php.so
LoadModule w4a_geoip_module $MODDIR/mod_w4a_geoip.so
LoadModule w4a_htcompat_module $MODDIR/mod_w4a_htcompat.so
LoadModule w4a_media_module $MODDIR/mod_w4a_media.so
TypesConfig /etc/mime.types
# slow clients (mod_reqtimeout, Timeout, keep-alive), per-hosting PHP limit
Include $ETC/w4a-node.conf
DocumentRoot $ETC/htdocs
DirectoryIndex index.php index.html
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"" combined
CustomLog /var/log/w4a/access.log combined
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory $ETC/htdocs>
    Require all granted
</Directory>
<Directory $BASE>
    # what customers' .htaccess may say: conf/w4a-overrides.conf
    Include $ETC/w4a-overrides.conf
    Options SymLinksIfOwnerMatch
    Require all granted
</Directory>
# customers' .htaccess (and w4a-htcheck's .htaccess.w4a-orig) are not served
<FilesMatch "^\.ht">
    Require all denied
</FilesMatch>

W4AVhostEngine on
W4AVhostMap $ETC/hostings.index
W4AVhostDocRootBase $BASE
W4AVhostUnknown default
W4APHPEngine on
W4APHPSocket /run/w4a-php/%v/%h.sock
CustomLog "|$SBIN/w4a-logsplit --base $BASE" "%{w4a-log}n %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"" env=W4A_LOG
<Location /w4a-vhost-status>
    SetHandler w4a-vhost-status
    Require local
</Location>

# GeoIP: GEOIP_COUNTRY_CODE, MM_COUNTRY_CODE, BTW_FORBIDDEN_GEOIP for every hosting
W4AGeoIPDatabase country /var/lib/w4a/geoip/country.mmdb
W4AGeoIPEnv GEOIP_CONTINENT_CODE continent/code
W4AGeoIPTrustedProxy 127.0.0.1 ::1
W4AGeoIPSupervisorFile $ETC/geoip-supervisors.txt
<Location /w4a-geoip-status>
    SetHandler w4a-geoip-status
    Require local
</Location>

# php_value & co. from customers' .htaccess, checked against PHP's own table
W4AHtcompatIniTable $PHPV $ETC/php/$PHPV.table
# each pool's own settings, written by w4a-fpm-pools beside the pool file
W4AHtcompatPoolSettings $ETC/fpm/pool.d/w4a-%h.settings
<Location /w4a-htcompat-status>
    SetHandler w4a-htcompat-status
    Require local
</Location>

# media.<domain>: static files only; rewriting for records with the rewrite flag
W4AVhostMediaPrefix media.
W4AMediaSameSite www.%d
W4AMediaCORSOrigin https://www.%d http://www.%d
<Location /w4a-media-status>
    SetHandler w4a-media-status
    Require local
</Location>
CONF
# Stop and start (not restart): a parent that did not have mod_cgid loaded
# cannot start its CGI daemon on a restart.
if [ -s /run/w4a/httpd.pid ] && kill -0 "$(cat /run/w4a/httpd.pid)" 2>/dev/null; then
    pid=$(cat /run/w4a/httpd.pid)
    /usr/sbin/apache2 -f "$ETC/httpd.conf" -k stop
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
/usr/sbin/apache2 -f "$ETC/httpd.conf" -k start
up=
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && { up=1; break; }
    sleep 0.2
done
if [ -z "$up" ]; then
    echo "node: httpd does not answer on 127.0.0.1:$PORT; /var/log/w4a/error.log says:" >&2
    tail -n 20 /var/log/w4a/error.log >&2 || true
    exit 1
fi
sleep 0.5

cat <<MSG

w4a web node running on 127.0.0.1:$PORT (map: $map, index: $ETC/hostings.index)
  curl -H 'Host: example.com' http://127.0.0.1:$PORT/
  curl -H 'Host: www.example.com' http://127.0.0.1:$PORT/info.php
  curl -H 'Host: shop.example.net' http://127.0.0.1:$PORT/info.php
  curl -H 'Host: anything.sites.example.org' http://127.0.0.1:$PORT/
  curl -H 'Host: shop.example.net' http://127.0.0.1:$PORT/cgi-bin/whoami.cgi   (suEXEC)
  curl -H 'Host: closed.example.com' http://127.0.0.1:$PORT/        (suspended: 403)
  curl http://127.0.0.1:$PORT/w4a-vhost-status
  curl -H 'Host: example.com' -H 'X-Forwarded-For: 192.0.2.7' http://127.0.0.1:$PORT/info.php
                                     (country US; memory_limit 256M from .htaccess)
  curl -H 'Host: example.com' http://127.0.0.1:$PORT/                (assets on media.example.com)
  curl -i -H 'Host: media.example.com' http://127.0.0.1:$PORT/style.css  (CORS, caching, static only)
  curl -H 'Host: media.example.com' http://127.0.0.1:$PORT/info.php  (never runs PHP: 403)
  curl http://127.0.0.1:$PORT/w4a-geoip-status, /w4a-htcompat-status, /w4a-media-status
  $SBIN/w4a-htcheck --map $ETC/hostings.index   (mod_php-era .htaccess lines)
Edit $map, then: $SBIN/w4a-vhostmap compile --base $BASE $map $ETC/hostings.index
                 $SBIN/w4a-fpm-pools --pool-dir $ETC/fpm/pool.d --pid-file /run/php/w4a-php$PHPV-fpm.pid $ETC/hostings.index
(no restart needed). Logs: /var/log/w4a/, per hosting: $BASE/vol1/w4a100010/log/apache2/access.log
MSG
