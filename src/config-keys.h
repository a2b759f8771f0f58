/* Inside the config module only (and its fuzz harness): the table that
 * describes every key once, and what the module's files share besides.
 * Parsing (config.c), formatting and comparing (config-format.c) all walk
 * the table, so they cannot disagree about a key. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum kind {
        KIND_U16,
        KIND_U32,
        KIND_U64,
        KIND_DURATION,  /* seconds in the file (up to 3 decimals), thousandths in memory */
        KIND_RATE,      /* per second in the file (up to 3 decimals), thousandths in memory */
        KIND_LOG_LEVEL,
        KIND_ADDRESSES, /* listen: numeric addresses */
        KIND_CIDRS,     /* allow, deny: prefixes */
        KIND_ADDR_MODE, /* log_addresses */
        KIND_CREDENTIAL, /* log_hash_key_credential: the name of a credential */
        KIND_SECRET,    /* log_hash_key: never shown in change reports or dumps */
};

struct key {
        const char *name;
        enum kind kind;
        size_t offset;
        size_t count_offset;    /* lists: where the element count lives */
        uint64_t min, max;      /* fixed-point kinds: in thousandths; 0 always allowed */
        bool reloadable;
};

extern const struct key config_keys[];
extern const size_t config_n_keys;

static inline void *config_field(struct config *c, const struct key *k) {
        return (char *) c + k->offset;
}

static inline const void *config_cfield(const struct config *c, const struct key *k) {
        return (const char *) c + k->offset;
}

/* Formats a key's value in libconfig syntax; returns the length. */
int config_format_value(const struct config *c, const struct key *k, char *buf, size_t size);

int config_log_addresses_from_name(const char *name);
const char *config_log_addresses_name(int mode);
const char *config_log_level_name(int level);
