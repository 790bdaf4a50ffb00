/*
 * php_value / php_flag / php_admin_* lines and the PHP_VALUE text built
 * from them (modules/htcompat/htcompat_table.c htc_check, htc_value_safe,
 * htc_flag_value; the text as mod_w4a_htcompat.c builds it, see
 * fuzz_htc_common.h).
 *
 * Input: byte 0: which of the table's first 8 settings some earlier
 * request already delivered on this node (their start values are sent
 * too); then lines separated by NUL bytes: a kind byte (bit 0 php_flag,
 * bit 1 php_admin_*, bit 2 from the server's configuration, not
 * .htaccess), the setting name up to the first TAB, the value (any bytes:
 * newlines, quotes...).  The lines go through the module's php_line()
 * logic (syntax, admin from .htaccess, flag values, "engine", last line
 * of a name wins), then htc_check() against a fixed INI table.
 *
 * Invariant: whatever the lines, the text PHP receives reads back (as
 * PHP's INI scanner reads it) to exactly the settings sent: each accepted
 * line's value and the start value of each other delivered setting, never
 * one setting more (a value must never close its quotes and start
 * another), and only settings of the table that .htaccess may set.
 */
#include "fuzz_htc_common.h"

static const char table_text[] =
    "# a table as w4a-htcheck --dump-table writes it\n"
    "version 8.2\n"
    "memory_limit 7 =128M\n"
    "display_errors 7 =0\n"
    "error_reporting 7 =\n"
    "upload_max_filesize 6 =2M\n"
    "session.name 7 =PHPSESSID\n"
    "include_path 7 =.%3A/usr/share/php\n"
    "short_open_tag 6 =Off\n"
    "date.timezone 7 =UTC\n"
    "open_basedir 7 =\n"
    "disable_functions 4 =\n"
    "max_execution_time 7 !\n"
    "expose_php 4 =On\n"
    "auto_prepend_file 6 =\n"
    "default_charset 7 =UTF-8\n"
    "error_log 7 =\n"
    "engine 7 =1\n"
    "bad.default 7 =a%22b\n"
    "mbstring.language 7 =neutral\n";

static const char *const first8[] = {
    "memory_limit", "display_errors", "error_reporting",
    "upload_max_filesize", "session.name", "include_path",
    "short_open_tag", "date.timezone"
};

static htc_table_t *table;

static void load_table(void)
{
    char path[32];
    const char *err = NULL;

    fuzz_file(table_text, sizeof(table_text) - 1, path);
    if (htc_table_load(&table, path, &err, fuzz_pool()) != APR_SUCCESS) {
        fprintf(stderr, "table: %s\n", err);
        abort();
    }
}

typedef struct {
    const char *name, *value;
    int admin;
} fz_line_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    apr_uint32_t bits[HTC_BITS / 32];
    fz_line_t *lines;
    fz_send_t *local, *send;
    int nlines = 0, nlocal = 0, nsend = 0, i, j;
    const char *q, *end;
    char *buf, *text;

    if (!table) {
        load_table();
    }
    if (size < 1) {
        return 0;
    }
    apr_pool_create(&p, fuzz_pool());
    memset(bits, 0, sizeof(bits));
    for (i = 0; i < 8; i++) {
        if (data[0] & (1u << i)) {
            unsigned b = htc_bit(first8[i]);
            bits[b / 32] |= 1u << (b % 32);
        }
    }
    buf = apr_pcalloc(p, size + 1);
    memcpy(buf, data + 1, size - 1);
    end = buf + (size - 1);
    lines = apr_pcalloc(p, sizeof(*lines) * (size + 1));

    /* php_line(): what is kept per directory (a name's last line wins) */
    for (q = buf; q < end; q += strlen(q) + 1) {
        int kind = (unsigned char)q[0];
        int is_flag = kind & 1, is_admin = (kind & 2) != 0;
        int htaccess = !(kind & 4);
        char *name, *tab, *value;
        if (!*q) {
            continue;
        }
        name = apr_pstrdup(p, q + 1);
        tab = strchr(name, '\t');
        value = tab ? tab + 1 : name + strlen(name);
        if (tab) {
            *tab = '\0';
        }
        if (!*name || (is_admin && htaccess)) {
            continue;                   /* HTC_SYNTAX, HTC_ADMIN */
        }
        if (is_flag && !(value = (char *)htc_flag_value(value))) {
            continue;                   /* HTC_BADFLAG */
        }
        if (is_flag) {
            FUZZ_CHECK(!strcmp(value, "0") || !strcmp(value, "1"),
                       "flag value '%s'", value);
        }
        if (!strcmp(name, "engine")) {
            continue;                   /* c->engine, never sent */
        }
        for (j = 0; j < nlines && strcmp(lines[j].name, name); j++) {
            ;
        }
        lines[j].name = name;
        lines[j].value = value;
        lines[j].admin = is_admin && !htaccess;
        if (j == nlines) {
            nlines++;
        }
    }

    /* w4a_htcompat_php_value(): the checks, then the text */
    local = apr_palloc(p, sizeof(*local) * (nlines + 1));
    for (i = 0; i < nlines; i++) {
        const htc_setting_t *s = NULL;
        htc_reason_e why = htc_check(table, lines[i].name, lines[i].value,
                                     lines[i].admin, &s);
        if (why != HTC_OK || nlocal == 256) {
            continue;
        }
        FUZZ_CHECK(s && !strcmp(s->name, lines[i].name), "setting of '%s'",
                   lines[i].name);
        FUZZ_CHECK(htc_value_safe(lines[i].value), "unsafe value accepted");
        FUZZ_CHECK(!s->locked && !s->irreversible && s->defval,
                   "'%s' accepted: locked, irreversible or no default",
                   s->name);
        FUZZ_CHECK(lines[i].admin || (s->access & HTC_ACC_PERDIR),
                   "system setting '%s' accepted from .htaccess", s->name);
        local[nlocal].s = s;
        local[nlocal++].value = lines[i].value;
        bits[s->bit / 32] |= 1u << (s->bit % 32);
    }
    send = apr_palloc(p, sizeof(*send) * (table->count + 1));
    text = fz_build(table, bits, local, nlocal, send, &nsend, p);
    FUZZ_CHECK(nsend >= nlocal, "%d sent of %d accepted", nsend, nlocal);
    fz_check_text(text, send, nsend, p);
    for (i = 0; i < nlocal; i++) {
        for (j = 0; j < nsend && send[j].s != local[i].s; j++) {
            ;
        }
        FUZZ_CHECK(j < nsend && send[j].value == local[i].value,
                   "accepted '%s' not sent with its value", local[i].s->name);
    }
    apr_pool_destroy(p);
    return 0;
}
