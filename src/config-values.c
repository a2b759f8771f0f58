/* The values of the configuration: one setter per kind of key (config-keys.h),
 * from a libconfig setting to the struct config field the key table names,
 * each value checked against the key's range with FILE:LINE in the
 * diagnostic. With config.c, the only files that include <libconfig.h>. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "config-values.h"
#include "util.h"

/* A user's string fit to quote in a one-line diagnostic: control and
 * non-ASCII bytes escaped (a newline must not forge a second line), long
 * strings cut. */
static const char *printable(const char *v, char buf[static 80]) {
        const unsigned char *p = (const unsigned char *) v;
        size_t o = 0;

        for (; *p && o < 68; p++) {
                if (*p >= 0x20 && *p < 0x7f && *p != '\\')
                        buf[o++] = (char) *p;
                else
                        o += (size_t) snprintf(buf + o, 80 - o, "\\x%02x", *p);
        }
        if (*p)
                o += (size_t) snprintf(buf + o, 80 - o, "...");
        buf[o] = 0;
        return buf;
}

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP: return "a group";
        case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
        case CONFIG_TYPE_FLOAT: return "a number with a fraction";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL: return "a boolean";
        case CONFIG_TYPE_ARRAY: return "an array";
        case CONFIG_TYPE_LIST: return "a list";
        default: return "an unknown type";
        }
}

static int set_integer(const char *name, const struct key *k, config_setting_t *s,
                       struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s);
        long long v;

        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
                config_diag_add(diag, "%s:%u: %s must be an integer, not %s", name, line, k->name, type_name(type));
                return -EINVAL;
        }
        v = config_setting_get_int64(s);
        if (v < 0 || (uint64_t) v < k->min || (uint64_t) v > k->max) {
                config_diag_add(diag, "%s:%u: %s = %lld is out of range (%" PRIu64 "..%" PRIu64 ")",
                                name, line, k->name, v, k->min, k->max);
                return -ERANGE;
        }
        if (k->kind == KIND_U16)
                *(uint16_t *) config_field(c, k) = (uint16_t) v;
        else if (k->kind == KIND_U32)
                *(uint32_t *) config_field(c, k) = (uint32_t) v;
        else
                *(uint64_t *) config_field(c, k) = (uint64_t) v;
        return 0;
}

/* Durations and rates: a whole number or one with a fraction, kept in
 * thousandths. 0 is always allowed (no limit). */
static int set_fixed3(const char *name, const struct key *k, config_setting_t *s,
                      struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s);
        bool duration = k->kind == KIND_DURATION;
        const char *unit = duration ? " s" : "";
        double v;
        uint64_t milli;

        if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
                v = (double) config_setting_get_int64(s);
        else if (type == CONFIG_TYPE_FLOAT)
                v = config_setting_get_float(s);
        else {
                config_diag_add(diag, "%s:%u: %s must be %s, not %s", name, line, k->name,
                                duration ? "a number of seconds" : "a number", type_name(type));
                return -EINVAL;
        }
        /* Compare what would be stored: rounded to thousandths first, so
         * 300.0005 (stored as 300.001) is over a maximum of 300. */
        if (!isfinite(v) || v < 0 || v * 1000.0 > (double) k->max + 1.0 ||
            (milli = (uint64_t) llround(v * 1000.0)) > k->max || (v > 0 && milli == 0)) {
                config_diag_add(diag, "%s:%u: %s = %.10g%s is out of range (0 for no limit, or 0.001..%" PRIu64 "%s)",
                                name, line, k->name, v, unit, k->max / 1000, unit);
                return -ERANGE;
        }
        *(uint32_t *) config_field(c, k) = (uint32_t) milli;
        return 0;
}

static const char *get_string(const char *name, const struct key *k, config_setting_t *s,
                              struct config_diag *diag) {
        const char *v = config_setting_get_string(s);

        if (!v)
                config_diag_add(diag, "%s:%u: %s must be a string, not %s", name,
                                config_setting_source_line(s), k->name, type_name(config_setting_type(s)));
        return v;
}

/* A string that names one of a set: from_name() gives its value, or < 0
 * when it names none of `choices`. */
static int set_named(const char *name, const struct key *k, config_setting_t *s, int (*from_name)(const char *),
                     const char *choices, int *out, struct config_diag *diag) {
        const char *v = get_string(name, k, s, diag);
        int value;

        if (!v)
                return -EINVAL;
        value = from_name(v);
        if (value < 0) {
                config_diag_add(diag, "%s:%u: %s = \"%s\" is not one of %s", name, config_setting_source_line(s),
                                k->name, printable(v, (char[80]) { 0 }), choices);
                return -EINVAL;
        }
        *out = value;
        return 0;
}

static int set_log_level(const char *name, const struct key *k, config_setting_t *s,
                         struct config *c, struct config_diag *diag) {
        return set_named(name, k, s, config_log_level_from_name, "error, warning, notice, info, debug",
                         &c->log_level, diag);
}

static int set_addr_mode(const char *name, const struct key *k, config_setting_t *s,
                         struct config *c, struct config_diag *diag) {
        return set_named(name, k, s, config_log_addresses_from_name, "full, prefix, hash", &c->log_addresses, diag);
}

static int set_secret(const char *name, const struct key *k, config_setting_t *s,
                      struct config *c, struct config_diag *diag) {
        const char *v = get_string(name, k, s, diag);
        size_t len;

        if (!v)
                return -EINVAL;
        len = strlen(v);
        /* Empty means "a random key at each start", and is what --dump-config
         * writes for it. */
        if ((len > 0 && len < k->min) || len > k->max || strpbrk(v, "\"\\")) {
                config_diag_add(diag, "%s:%u: %s must be empty or %" PRIu64 " to %" PRIu64 " characters without "
                                "quotes or backslashes", name, config_setting_source_line(s), k->name, k->min, k->max);
                return -EINVAL;
        }
        memset(c->log_hash_key, 0, sizeof(c->log_hash_key));
        memcpy(c->log_hash_key, v, len);
        return 0;
}

/* Empty means "no credential". */
static int set_credential(const char *name, const struct key *k, config_setting_t *s,
                          struct config *c, struct config_diag *diag) {
        const char *v = get_string(name, k, s, diag);

        if (!v)
                return -EINVAL;
        /* A key pasted in place of the name is never printed, here or later
         * (a valid name cannot be one). */
        if (v[0] && credential_name_looks_like_key(v)) {
                config_diag_add(diag, "%s:%u: %s looks like a key, not a credential name (more than %d letters "
                                "and digits in a row); the value is not shown. Put the key in a file the service "
                                "manager passes as a credential and name that credential here (see "
                                "echo-mpserv.conf(5))", name, config_setting_source_line(s), k->name,
                                CREDENTIAL_NAME_RUN_MAX);
                return -EINVAL;
        }
        if (v[0] && !credential_name_valid(v)) {
                config_diag_add(diag, "%s:%u: %s = \"%s\" is not a credential name (1 to %" PRIu64 " letters, "
                                "digits, '.', '_' or '-')", name, config_setting_source_line(s), k->name,
                                printable(v, (char[80]) { 0 }), k->max);
                return -EINVAL;
        }
        memset(c->log_hash_key_credential, 0, sizeof(c->log_hash_key_credential));
        memcpy(c->log_hash_key_credential, v, strlen(v));
        return 0;
}

static int add_address(const char *name, unsigned line, _unused_ const struct key *k, const char *v,
                       struct config *c, struct config_diag *diag) {
        unsigned char bin[sizeof(struct in6_addr)];

        if (!v) {
                config_diag_add(diag, "%s:%u: listen entries must be strings", name, line);
                return -EINVAL;
        }
        if (inet_pton(AF_INET, v, bin) != 1 && inet_pton(AF_INET6, v, bin) != 1) {
                config_diag_add(diag, "%s:%u: listen: \"%s\" is not a numeric IPv4 or IPv6 address",
                                name, line, printable(v, (char[80]) { 0 }));
                return -EINVAL;
        }
        for (uint32_t i = 0; i < c->n_listen; i++)
                if (config_listen_same(c->listen[i], v)) {
                        config_diag_add(diag, "%s:%u: listen: \"%s\" is given twice", name, line,
                                        printable(v, (char[80]) { 0 }));
                        return -EINVAL;
                }
        if (c->n_listen >= CONFIG_MAX_LISTEN) {
                config_diag_add(diag, "%s:%u: listen: more than %d addresses", name, line, CONFIG_MAX_LISTEN);
                return -E2BIG;
        }
        memset(c->listen[c->n_listen], 0, CONFIG_ADDR_MAX);
        snprintf(c->listen[c->n_listen++], CONFIG_ADDR_MAX, "%s", v);
        return 0;
}

/* Lists of strings: a single string is accepted as a list of one. */
static int for_each_string(const char *name, const struct key *k, config_setting_t *s, struct config *c,
                           struct config_diag *diag, bool allow_empty,
                           int (*add)(const char *, unsigned, const struct key *, const char *,
                                      struct config *, struct config_diag *)) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s), n, r = 0;

        if (type == CONFIG_TYPE_STRING)
                return add(name, line, k, config_setting_get_string(s), c, diag);
        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
                config_diag_add(diag, "%s:%u: %s must be an array of strings, not %s",
                                name, line, k->name, type_name(type));
                return -EINVAL;
        }
        n = config_setting_length(s);
        if (n == 0 && !allow_empty) {
                config_diag_add(diag, "%s:%u: %s must name at least one address", name, line, k->name);
                return -EINVAL;
        }
        for (int i = 0; i < n && r >= 0; i++)
                r = add(name, line, k, config_setting_get_string_elem(s, i), c, diag);
        return r;
}

static int set_addresses(const char *name, const struct key *k, config_setting_t *s,
                         struct config *c, struct config_diag *diag) {
        c->n_listen = 0;
        memset(c->listen, 0, sizeof(c->listen));
        return for_each_string(name, k, s, c, diag, false, add_address);
}

static uint32_t *count_of(struct config *c, const struct key *k) {
        return (uint32_t *) ((char *) c + k->count_offset);
}

static int add_cidr(const char *name, unsigned line, const struct key *k, const char *v,
                    struct config *c, struct config_diag *diag) {
        struct cidr *list = config_field(c, k);
        uint32_t *count = count_of(c, k);
        const char *cidr_key = k->name;
        struct cidr p;

        if (!v) {
                config_diag_add(diag, "%s:%u: %s entries must be strings", name, line, cidr_key);
                return -EINVAL;
        }
        if (cidr_parse(v, &p) < 0) {
                config_diag_add(diag, "%s:%u: %s: \"%s\" is not an address or prefix such as 192.0.2.0/24 "
                                "or 2001:db8::/32 (with no bits set past the length)", name, line, cidr_key,
                                printable(v, (char[80]) { 0 }));
                return -EINVAL;
        }
        if (*count >= CONFIG_MAX_CIDRS) {
                config_diag_add(diag, "%s:%u: %s: more than %d prefixes", name, line, cidr_key, CONFIG_MAX_CIDRS);
                return -E2BIG;
        }
        list[(*count)++] = p;
        return 0;
}

static int set_cidrs(const char *name, const struct key *k, config_setting_t *s,
                     struct config *c, struct config_diag *diag) {
        *count_of(c, k) = 0;
        memset(config_field(c, k), 0, sizeof(struct cidr) * CONFIG_MAX_CIDRS);
        return for_each_string(name, k, s, c, diag, true, add_cidr);
}

static int set_key(const char *name, const struct key *k, config_setting_t *s,
                   struct config *c, struct config_diag *diag) {
        switch (k->kind) {
        case KIND_U16: case KIND_U32: case KIND_U64:
                return set_integer(name, k, s, c, diag);
        case KIND_DURATION: case KIND_RATE:
                return set_fixed3(name, k, s, c, diag);
        case KIND_LOG_LEVEL:
                return set_log_level(name, k, s, c, diag);
        case KIND_ADDRESSES:
                return set_addresses(name, k, s, c, diag);
        case KIND_CIDRS:
                return set_cidrs(name, k, s, c, diag);
        case KIND_ADDR_MODE:
                return set_addr_mode(name, k, s, c, diag);
        case KIND_CREDENTIAL:
                return set_credential(name, k, s, c, diag);
        case KIND_SECRET:
                return set_secret(name, k, s, c, diag);
        }
        return -EINVAL;
}

static const struct key *find_key(const char *n) {
        for (size_t i = 0; i < config_n_keys; i++)
                if (strcmp(config_keys[i].name, n) == 0)
                        return &config_keys[i];
        return NULL;
}

void config_set_all(const char *name, config_setting_t *root, struct config *c, struct config_diag *diag) {
        int n = config_setting_length(root);

        for (int i = 0; i < n; i++) {
                config_setting_t *s = config_setting_get_elem(root, (unsigned) i);
                const char *key = config_setting_name(s);
                const struct key *k = key ? find_key(key) : NULL;

                if (!k)
                        config_diag_add(diag, "%s:%u: unknown key '%s'", name,
                                        config_setting_source_line(s), key ? printable(key, (char[80]) { 0 }) : "?");
                else
                        (void) set_key(name, k, s, c, diag);
        }
}

