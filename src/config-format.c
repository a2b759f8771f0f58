/* Writing the configuration back: --dump-config and the reload report. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config-keys.h"
#include "util.h"

int config_format_value(const struct config *c, const struct key *k, char *buf, size_t size) {
        const void *p = config_cfield(c, k);
        uint32_t milli, n;
        size_t used = 0;
        char cidr[CIDR_STR_MAX];

        switch (k->kind) {
        case KIND_U16:
                return snprintf(buf, size, "%u", *(const uint16_t *) p);
        case KIND_U32:
                return snprintf(buf, size, "%" PRIu32, *(const uint32_t *) p);
        case KIND_U64: {
                uint64_t v = *(const uint64_t *) p;
                /* Without the L suffix libconfig would wrap anything past 32 bits. */
                return snprintf(buf, size, "%" PRIu64 "%s", v, v > INT32_MAX ? "L" : "");
        }
        case KIND_DURATION: case KIND_RATE:
                milli = *(const uint32_t *) p;
                if (milli % 1000 == 0)
                        return snprintf(buf, size, "%" PRIu32, milli / 1000);
                return snprintf(buf, size, "%" PRIu32 ".%03" PRIu32, milli / 1000, milli % 1000);
        case KIND_LOG_LEVEL:
                return snprintf(buf, size, "\"%s\"", config_log_level_name(c->log_level));
        case KIND_ADDR_MODE:
                return snprintf(buf, size, "\"%s\"", config_log_addresses_name(c->log_addresses));
        case KIND_CREDENTIAL: case KIND_SECRET:
                return snprintf(buf, size, "\"%s\"", (const char *) p);
        case KIND_ADDRESSES:
                used += (size_t) snprintf(buf, size, "[");
                for (uint32_t i = 0; i < c->n_listen && used < size; i++)
                        used += (size_t) snprintf(buf + used, size - used, "%s\"%s\"",
                                                  i ? ", " : " ", c->listen[i]);
                if (used < size)
                        used += (size_t) snprintf(buf + used, size - used, " ]");
                return (int) used;
        case KIND_CIDRS:
                n = *(const uint32_t *) ((const char *) c + k->count_offset);
                used += (size_t) snprintf(buf, size, "[");
                for (uint32_t i = 0; i < n && used < size; i++)
                        used += (size_t) snprintf(buf + used, size - used, "%s\"%s\"", i ? ", " : " ",
                                                  cidr_format(&((const struct cidr *) p)[i], cidr));
                if (used < size)
                        used += (size_t) snprintf(buf + used, size - used, n ? " ]" : "]");
                return (int) used;
        }
        return -EINVAL;
}

/* Big enough for the longest value: 64 IPv6 prefixes. */
#define VALUE_MAX (CONFIG_MAX_CIDRS * (CIDR_STR_MAX + 4) + 8)

int config_dump(const struct config *c, FILE *f) {
        char v[VALUE_MAX];

        fputs("# echo-mpserv: effective configuration (durations in seconds)\n", f);
        for (size_t i = 0; i < config_n_keys; i++) {
                const struct key *k = &config_keys[i];

                /* A secret is never printed: dumps end up in bug reports.
                 * Loaded back, the dump has none. */
                if (k->kind == KIND_SECRET && *(const char *) config_cfield(c, k)) {
                        fprintf(f, "# %s is set in the file and not shown\n%s = \"\";\n", k->name, k->name);
                        continue;
                }
                config_format_value(c, k, v, sizeof(v));
                fprintf(f, "%s = %s;\n", k->name, v);
        }
        return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

/* log_addresses applies at a reload, the hash key only at the next start:
 * a switch to "hash" while the key's source changes would hash with the
 * running key (a random one, if none was set), which the configured key
 * never reproduces. Such a switch waits for the restart with the key. */
static bool hash_waits_for_key(const struct config *running, const struct config *next) {
        return next->log_addresses == LOG_ADDRESSES_HASH && running->log_addresses != LOG_ADDRESSES_HASH &&
               (strcmp(next->log_hash_key_credential, running->log_hash_key_credential) != 0 ||
                strcmp(next->log_hash_key, running->log_hash_key) != 0);
}

/* Whether a change of k from running to next takes effect only at the next
 * start. */
static bool after_restart(const struct key *k, const struct config *running, const struct config *next) {
        return !k->reloadable || (k->kind == KIND_ADDR_MODE && hash_waits_for_key(running, next));
}

unsigned config_describe_changes(const struct config *old, const struct config *new,
                                 char *buf, size_t size, bool *needs_restart) {
        static char a[VALUE_MAX], b[VALUE_MAX];
        unsigned changes = 0;
        size_t used = 0;

        *needs_restart = false;
        if (size > 0)
                buf[0] = 0;
        for (size_t i = 0; i < config_n_keys; i++) {
                const struct key *k = &config_keys[i];

                config_format_value(old, k, a, sizeof(a));
                config_format_value(new, k, b, sizeof(b));
                if (strcmp(a, b) == 0)
                        continue;
                changes++;
                bool later = after_restart(k, old, new);
                if (later)
                        *needs_restart = true;
                if (used >= size)
                        continue;
                if (k->kind == KIND_SECRET) /* never into the log */
                        used += (size_t) snprintf(buf + used, size - used, "%s%s changed%s",
                                                  changes > 1 ? ", " : "", k->name,
                                                  later ? " (pending)" : "");
                else
                        used += (size_t) snprintf(buf + used, size - used, "%s%s %s -> %s%s",
                                                  changes > 1 ? ", " : "", k->name, a, b,
                                                  later ? " (pending)" : "");
        }
        return changes;
}

/* The bytes a key's value takes in struct config (a list's count apart). */
static size_t value_size(const struct key *k) {
        switch (k->kind) {
        case KIND_U16:
                return sizeof(uint16_t);
        case KIND_U32: case KIND_DURATION: case KIND_RATE:
                return sizeof(uint32_t);
        case KIND_U64:
                return sizeof(uint64_t);
        case KIND_LOG_LEVEL: case KIND_ADDR_MODE:
                return sizeof(int);
        case KIND_ADDRESSES:
                return sizeof(((const struct config *) NULL)->listen);
        case KIND_CIDRS:
                return sizeof(struct cidr) * CONFIG_MAX_CIDRS;
        case KIND_CREDENTIAL: case KIND_SECRET:
                return (size_t) k->max + 1; /* the characters and their NUL */
        }
        return 0;
}

unsigned config_keep_restart_keys(struct config *next, const struct config *running, char *pending, size_t size) {
        static char a[VALUE_MAX], b[VALUE_MAX];
        unsigned n = 0;
        size_t used = 0;
        /* Decided on the file's values, before the key's are put back. */
        bool hash_waits = hash_waits_for_key(running, next);

        if (size > 0)
                pending[0] = 0;
        for (size_t i = 0; i < config_n_keys; i++) {
                const struct key *k = &config_keys[i];

                if (k->reloadable && !(k->kind == KIND_ADDR_MODE && hash_waits))
                        continue;
                config_format_value(running, k, a, sizeof(a));
                config_format_value(next, k, b, sizeof(b));
                if (strcmp(a, b) != 0) {
                        if (used < size)
                                used += (size_t) snprintf(pending + used, size - used, "%s%s",
                                                          n ? ", " : "", k->name);
                        n++;
                }
                memcpy(config_field(next, k), config_cfield(running, k), value_size(k));
                if (k->kind == KIND_ADDRESSES || k->kind == KIND_CIDRS)
                        memcpy((char *) next + k->count_offset, (const char *) running + k->count_offset,
                               sizeof(uint32_t));
        }
        return n;
}
