/*
 * The INI table loader (htc_table_load in
 * modules/htcompat/htcompat_table.c) on a file of any content.
 *
 * Invariants: a table it accepts has a version and settings; every
 * setting has a name of [A-Za-z0-9_.-], an access of 1 to 7, a start
 * value that is safe to send (htc_value_safe) or none; by_name and the
 * by_bit chains hold every setting once, each in its own slot; and the
 * PHP_VALUE text that resets every setting to its start value (every slot
 * delivered) reads back, as PHP reads it, to exactly those values.
 */
#include "fuzz_htc_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[32];
    apr_pool_t *p;
    htc_table_t *t = NULL;
    const char *err = NULL;
    apr_status_t rv;
    apr_uint32_t bits[HTC_BITS / 32];
    fz_send_t *send;
    int i, n = 0, nsend = 0, withdef = 0;
    char *text;

    apr_pool_create(&p, fuzz_pool());
    fuzz_file(data, size, path);
    rv = htc_table_load(&t, path, &err, p);
    if (rv != APR_SUCCESS) {
        FUZZ_CHECK(err && *err, "refused without a reason");
        apr_pool_destroy(p);
        return 0;
    }
    FUZZ_CHECK(t->version && t->count > 0, "no version or no setting");
    FUZZ_CHECK((int)apr_hash_count(t->by_name) == t->count,
               "%u names, %d settings", apr_hash_count(t->by_name), t->count);
    for (i = 0; i < HTC_BITS; i++) {
        const htc_setting_t *s;
        for (s = t->by_bit[i]; s; s = s->next_bit) {
            const char *c;
            FUZZ_CHECK(s->bit == (unsigned)i && htc_bit(s->name) == s->bit,
                       "'%s' in slot %d", s->name, i);
            FUZZ_CHECK(htc_table_get(t, s->name) == s, "'%s' by name",
                       s->name);
            FUZZ_CHECK(*s->name, "empty name");
            for (c = s->name; *c; c++) {
                FUZZ_CHECK(apr_isalnum(*c) || *c == '_' || *c == '.'
                           || *c == '-', "name '%s'", s->name);
            }
            FUZZ_CHECK(s->access >= 1 && s->access <= 7, "access %d",
                       s->access);
            FUZZ_CHECK(!s->defval || htc_value_safe(s->defval),
                       "unsafe start value of '%s'", s->name);
            withdef += s->defval != NULL;
            n++;
        }
    }
    FUZZ_CHECK(n == t->count, "%d in the slots, %d settings", n, t->count);

    memset(bits, 0xff, sizeof(bits));
    send = apr_palloc(p, sizeof(*send) * (t->count + 1));
    text = fz_build(t, bits, NULL, 0, send, &nsend, p);
    FUZZ_CHECK(nsend == withdef, "%d sent, %d with a start value", nsend,
               withdef);
    fz_check_text(text, send, nsend, p);
    apr_pool_destroy(p);
    return 0;
}
