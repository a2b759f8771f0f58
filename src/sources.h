/* Per-source state: how many sessions a source has, its connection-rate
 * bucket, whether it is blocked, and what was refused since the last report.
 *
 * Open addressing keyed with SipHash under a random key, so addresses an
 * attacker picks cannot be made to collide. The table holds at most half its
 * slots; idle entries (no session, a full bucket, not blocked, nothing to
 * report) are dropped by sources_sweep(), and on demand when it is full. A
 * source that still finds no room is not tracked (sources_get() returns
 * NULL): the global cap still applies, and the caller counts it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cidr.h"
#include "siphash.h"

enum refuse_reason {
        REFUSE_DENIED,          /* deny list, or not in a non-empty allow list */
        REFUSE_RATE,            /* over its connection rate, or blocked for it */
        REFUSE_PER_SOURCE,      /* max_clients_per_source sessions already */
        _REFUSE_MAX,
};

struct source {
        struct cidr key;
        bool used;
        uint32_t active;
        double tokens;
        uint64_t refilled_usec;
        uint64_t blocked_until;
        uint32_t refused[_REFUSE_MAX];  /* since the last report */
};

struct sources {
        struct source *table;
        uint32_t mask;
        uint32_t count;
        uint8_t key[SIPHASH_KEY_SIZE];
};

/* capacity: a power of two. */
int sources_init(struct sources *s, uint32_t capacity);
void sources_done(struct sources *s);

/* The entry for `key`, created when absent (with a full bucket of `burst`
 * tokens); NULL when the table has no room even after a sweep. */
struct source *sources_get(struct sources *s, const struct cidr *key, double burst, uint64_t now);
struct source *sources_find(const struct sources *s, const struct cidr *key);

/* Takes one token, refilling at `rate` per second up to `burst` first.
 * False when no token is left. */
bool source_take_token(struct source *e, double rate, double burst, uint64_t now);

/* Drops idle entries (see above). Returns how many. */
uint32_t sources_sweep(struct sources *s, double rate, double burst, uint64_t now);

void sources_foreach(struct sources *s, void (*fn)(struct source *e, void *userdata), void *userdata);

/* Forgets every entry (a reload that changes how sources are counted).
 * Returns 0 or -ENOMEM (the table is then unchanged). */
int sources_clear(struct sources *s);
