# One sample hosting's files, for w4a_samples (node-samples.sh): run as
# the hosting itself (setpriv), never as root, on stdin of sh -s.
#   sh -s HOME DOMAIN USER
set -u
# (no -e: a file the tenant made unwritable for itself is its own; the
# rest is written all the same)
home=$1 domain=$2 user=$3
docroot="$home/var/www/$domain"
umask 022
mkdir -p "$docroot/img" "$docroot/cgi-bin" "$home/log/apache2"
printf '<!doctype html><title>%s</title><link rel="stylesheet" href="/style.css">\n<h1>%s</h1><p><img src="img/logo.svg" alt=""> hosting %s</p>\n' \
    "$domain" "$domain" "$user" > "$docroot/index.html"
printf 'h1 { color: #246; }\n' > "$docroot/style.css"
printf '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16" fill="#246"/></svg>\n' \
    > "$docroot/img/logo.svg"
printf '<?php\nheader("Content-Type: text/plain");\necho "PHP ", PHP_VERSION, " as ", posix_getpwuid(posix_geteuid())["name"], " for ", $_SERVER["HTTP_HOST"], "\\n";\necho "memory_limit ", ini_get("memory_limit"), ", country ", $_SERVER["GEOIP_COUNTRY_CODE"] ?? "-", ", supervisor ", $_SERVER["BTW_FORBIDDEN_GEOIP"] ?? "-", "\\n";\n' \
    > "$docroot/info.php"
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "CGI as $(id -un)"\n' > "$docroot/cgi-bin/whoami.cgi"
printf 'Options +ExecCGI\nSetHandler cgi-script\n' > "$docroot/cgi-bin/.htaccess"
chmod 755 "$docroot/cgi-bin/whoami.cgi"
# example.com: a mod_php-era .htaccess line (mod_w4a_htcompat delivers it
# to that directory only; the other hostings keep PHP's default)
if [ "$user" = w4a100010 ]; then
    printf 'php_value memory_limit 256M\n' > "$docroot/.htaccess"
else
    rm -f "$docroot/.htaccess"
fi
chmod 755 "$home/var" "$home/var/www" "$docroot"
