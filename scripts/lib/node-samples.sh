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
        # The home's name sits in root's vol1: made and given by root. The
        # home is the hosting's, closed to the other hostings (whose PHP
        # and CGI run as their own uids). Everything in it is written as
        # the hosting: on a second run, a symlink the tenant put there
        # (index.html -> /etc/shadow) leads only where it can write anyway.
        mkdir -p "$home"
        chown "$user:www-data" "$home"
        chmod 0750 "$home"
        # (its output to nowhere of root's, not the operator's terminal
        # nor a root file: the hosting could attach to its own process;
        # a deadline: it could stop it)
        timeout -k 5 60 setpriv --reuid="$uid" --regid="$uid" --clear-groups \
            env -i PATH=/usr/bin:/bin sh -s "$home" "$domain" "$user" \
            < scripts/lib/node-sample-site.sh > /dev/null 2>&1 \
            || echo "node: sample hosting $user: some of its files not written (run scripts/lib/node-sample-site.sh as $user to see why)" >&2
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
