# w4a-tools: every minute, what is new in each PHP-FPM pool's slow log
# (written by the FPM master as root in /var/log/php/w4a) is appended to
# the hosting's own <home>/log/php/slow.log by a process running as the
# hosting; see w4a-fpm-pools(8), --copy-slow-logs. Failures (one line per
# hosting, W4A0092x) go to /var/log/w4a/slowlog-copy.log. Give the same
# --slowlog as when the pools were written, if not the default.
* * * * *	root	[ -x /usr/sbin/w4a-fpm-pools ] && [ -r /etc/w4a/hostings.index ] && /usr/sbin/w4a-fpm-pools --copy-slow-logs -q /etc/w4a/hostings.index >> /var/log/w4a/slowlog-copy.log 2>&1
# Daily, each hosting's own access logs (w4a-logsplit), each in a logrotate
# run of its own as the hosting, stopped after --deadline (300 s): what a
# hosting puts in its log directory holds its own rotation only; see
# w4a-logrotate-hostings(8). Failures (W4A0097x) go to
# /var/log/w4a/logrotate-hostings.log.
40 6 * * *	root	[ -x /usr/sbin/w4a-logrotate-hostings ] && [ -d /etc/w4a/logrotate-hostings ] && /usr/sbin/w4a-logrotate-hostings --rotate >> /var/log/w4a/logrotate-hostings.log 2>&1
