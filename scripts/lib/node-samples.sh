# Sample hostings and a sample GeoIP database, for scripts/node.sh (the
# Debian packages) and scripts/node-dev.sh (the build tree).  Sourced;
# needs BASE, ETC and PHPV set, run from the top of the tree.

# w4a_samples MAP: the Unix users, their trees and a map text in MAP
# (written to MAP.new first, then renamed; 0640).
w4a_samples() {
    local map=$1
    # hosting    uid     domains
    SAMPLES=(
      "w4a100010 100010 example.com,www.example.com"
      "w4a100011 100011 shop.example.net"
      "w4a100012 100012 *.sites.example.org"
      "w4a100013 100013 closed.example.com"
    )
    mkdir -p "$ETC" "$BASE/vol1"
    chmod 755 "$BASE" "$BASE/vol1"
    {
      echo "# Sample map written by scripts/node.sh (or node-dev.sh): see docs/w4a-vhostmap.md"
      echo "# names hosting uid gid docroot php state flags"
    } > "$map.new"
    for s in "${SAMPLES[@]}"; do
        read -r user uid names <<<"$s"
        getent group "$user" >/dev/null || groupadd -g "$uid" "$user"
        getent passwd "$user" >/dev/null || \
            useradd -u "$uid" -g "$uid" -M -d "$BASE/vol1/$user" -s /usr/sbin/nologin "$user" 2>/dev/null
        first=${names%%,*}
        domain=${first#\*.}
        home="$BASE/vol1/$user"
        docroot="$home/var/www/$domain"
        mkdir -p "$docroot" "$home/log/apache2"
        printf '<!doctype html><title>%s</title><link rel="stylesheet" href="/style.css">\n<h1>%s</h1><p><img src="img/logo.svg" alt=""> hosting %s</p>\n' \
            "$domain" "$domain" "$user" > "$docroot/index.html"
        printf 'h1 { color: #246; }\n' > "$docroot/style.css"
        mkdir -p "$docroot/img"
        printf '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16" fill="#246"/></svg>\n' \
            > "$docroot/img/logo.svg"
        printf '<?php\nheader("Content-Type: text/plain");\necho "PHP ", PHP_VERSION, " as ", posix_getpwuid(posix_geteuid())["name"], " for ", $_SERVER["HTTP_HOST"], "\\n";\necho "memory_limit ", ini_get("memory_limit"), ", country ", $_SERVER["GEOIP_COUNTRY_CODE"] ?? "-", ", supervisor ", $_SERVER["BTW_FORBIDDEN_GEOIP"] ?? "-", "\\n";\n' \
            > "$docroot/info.php"
        mkdir -p "$docroot/cgi-bin"
        printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "CGI as $(id -un)"\n' > "$docroot/cgi-bin/whoami.cgi"
        printf 'Options +ExecCGI\nSetHandler cgi-script\n' > "$docroot/cgi-bin/.htaccess"
        chmod 755 "$docroot/cgi-bin/whoami.cgi"
        # example.com: a mod_php-era .htaccess line (mod_w4a_htcompat delivers
        # it to that directory only; the other hostings keep PHP's default)
        if [ "$user" = w4a100010 ]; then
            printf 'php_value memory_limit 256M\n' > "$docroot/.htaccess"
        else
            rm -f "$docroot/.htaccess"
        fi
        chown -R "$uid:$uid" "$home"
        chmod 755 "$home/var" "$home/var/www" "$docroot"
        # the home: the hosting's and httpd's group's, closed to the other
        # hostings (whose PHP and CGI run as their own uids)
        chown "$user:www-data" "$home"
        chmod 0750 "$home"
        state=active; flags=-
        [ "$user" = w4a100013 ] && state=suspended
        # example.com: per-hosting access log, asset URLs rewritten to media.
        [ "$user" = w4a100010 ] && flags=log,rewrite
        echo "$names $user $uid $uid $docroot $PHPV $state $flags" >> "$map.new"
    done
    # The map and its index name every hosting's domains, users and paths:
    # root writes them, httpd's group reads the index, the hostings neither.
    chmod 640 "$map.new"
    mv "$map.new" "$map"
}

# w4a_geoip_sample MMDB: a small country database (a real node installs
# MaxMind's monthly file).  Loopback is FR; 192.0.2.0/24 US,
# 198.51.100.0/24 UA, 203.0.113.0/24 BR.
w4a_geoip_sample() {
    local mmdb=$1
    mkdir -p "$(dirname "$mmdb")"
    cat > "$ETC/geoip-sample.json" <<'JSON'
{"ip_version":6,"database_type":"W4A-Sample-Country","networks":[
 ["127.0.0.0/8",{"country":{"iso_code":"FR"},"continent":{"code":"EU"}}],
 ["::1/128",{"country":{"iso_code":"FR"},"continent":{"code":"EU"}}],
 ["192.0.2.0/24",{"country":{"iso_code":"US"},"continent":{"code":"NA"}}],
 ["198.51.100.0/24",{"country":{"iso_code":"UA"},"continent":{"code":"EU"}}],
 ["203.0.113.0/24",{"country":{"iso_code":"BR"},"continent":{"code":"SA"}}]]}
JSON
    perl t/integration/mkmmdb.pl "$mmdb.new" "$ETC/geoip-sample.json"
    chmod 644 "$mmdb.new"
    mv "$mmdb.new" "$mmdb"
}
