# w4a-tools: every minute, what is new in each PHP-FPM pool's slow log
# (written by the FPM master as root in /var/log/php/w4a) is appended to
# the hosting's own <home>/log/php/slow.log by a process running as the
# hosting; see w4a-fpm-pools(8), --copy-slow-logs. Failures (one line per
# hosting, W4A0092x) go to /var/log/w4a/slowlog-copy.log. Give the same
# --slowlog as when the pools were written, if not the default.
* * * * *	root	[ -x /usr/sbin/w4a-fpm-pools ] && [ -r /etc/w4a/hostings.index ] && /usr/sbin/w4a-fpm-pools --copy-slow-logs -q /etc/w4a/hostings.index >> /var/log/w4a/slowlog-copy.log 2>&1
