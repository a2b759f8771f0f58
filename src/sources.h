/* Per-source state: how many sessions a source has, its connection-rate
 * bucket, whether it is blocked, and what was refused since the last report.
 *
 * A fixed pool of entries, found through an open-addressing index keyed with
 * SipHash under a random key, so addresses an attacker picks cannot be made
 * to collide. The table stays bounded and never refuses to hold a source:
 *
 * - An entry with live sessions is never dropped. The pool has room for
 *   `live_max` of them on top of `capacity`, and the caller never has more
 *   live sessions than that, so they always fit.
 * - At most `capacity` entries rest (no live session). When one more would
 *   rest, the least recently seen resting entry is forgotten, taken first
 *   from the entries that only tally denied refusals, then from the idle
 *   ones. At most half of them are blocked: one more block forgets the
 *   least recently seen blocked entry. So neither kind can push the other
 *   out: a resting entry is forgotten only after capacity / 2 others of its
 *   kind were seen after it. Each choice is the head of a list kept in the
 *   order entries were last seen, so making room costs O(1).
 * - What a forgotten entry still had to report is folded into `forgotten`,
 *   so no refusal goes uncounted.
 *
 * A forgotten source starts again with a full bucket, like a source never
 * seen. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admission-types.h"
#include "cidr.h"
#include "siphash.h"

/* The lists resting entries are kept in, least recently seen first, in the
 * order they are forgotten. */
enum source_list {
        SOURCE_DENIED,          /* never judged past the deny list: a tally only */
        SOURCE_IDLE,
        SOURCE_BLOCKED,
        _SOURCE_LISTS,
        SOURCE_LIVE = _SOURCE_LISTS,    /* has sessions: in no list */
};

/* a + b, at most UINT32_MAX: refusal counts held for a report (while
 * log_level filters it out) saturate rather than wrap. */
static inline uint32_t sat_add_u32(uint32_t a, uint32_t b) {
        return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

struct source {
        struct cidr key;
        uint32_t hash;
        uint32_t active;
        bool checked;                   /* went through the rate and session checks */
        uint8_t list;                   /* enum source_list */
        double tokens;
        uint64_t refilled_usec;
        uint64_t blocked_until;
        uint32_t refused[_REFUSE_MAX];  /* since the last report */
        uint32_t prev, next;            /* in its list, or the free list */
};

/* What went unnamed since the last report: refusals of forgotten entries
 * and of sources that never had one (`untracked`). The forgotten sources
 * are kept as one bit each, chosen by hash: a source forgotten twice sets
 * its bit twice, two sources may share one, so the bits set never
 * outnumber the sources they stand for (8 KiB: few collisions below some
 * thousands of sources per report). */
#define SOURCE_TALLY_BITS 65536

struct source_tally {
        uint32_t refused[_REFUSE_MAX];
        uint32_t untracked;             /* refusals of sources without an entry */
        uint64_t seen[SOURCE_TALLY_BITS / 64];
};

static inline void source_tally_mark(struct source_tally *t, uint32_t hash, bool on) {
        uint32_t bit = hash % SOURCE_TALLY_BITS;

        if (on)
                t->seen[bit / 64] |= UINT64_C(1) << (bit % 64);
        else
                t->seen[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
}

static inline bool source_tally_has(const struct source_tally *t, uint32_t hash) {
        uint32_t bit = hash % SOURCE_TALLY_BITS;

        return t->seen[bit / 64] & (UINT64_C(1) << (bit % 64));
}

/* The number of distinct sources `t` stands for, at most. */
static inline uint32_t source_tally_sources(const struct source_tally *t) {
        uint32_t n = 0;

        for (size_t i = 0; i < SOURCE_TALLY_BITS / 64; i++)
                n += (uint32_t) __builtin_popcountll(t->seen[i]);
        return n;
}

struct sources {
        struct source *pool;
        uint32_t *index;                /* pool position + 1; 0: empty */
        uint32_t index_mask;
        uint32_t pool_size, capacity;
        uint32_t count, resting;
        uint32_t free_head;             /* entries dropped, linked by next */
        uint32_t unused;                /* pool[unused..] never used yet */
        struct { uint32_t head, tail, n; } lists[_SOURCE_LISTS];
        uint64_t forgotten_total;       /* entries forgotten to make room, since start */
        struct source_tally forgotten;  /* their refusals since the last report */
        uint8_t key[SIPHASH_KEY_SIZE];
};

/* Room for `capacity` resting entries and `live_max` with sessions. Returns
 * 0, -EINVAL or -ENOMEM. */
int sources_init(struct sources *s, uint32_t capacity, uint32_t live_max);
void sources_done(struct sources *s);

struct source *sources_find(const struct sources *s, const struct cidr *key);

/* The entry for `key`, created when absent (with a full bucket of `burst`
 * tokens), forgetting another entry when the resting ones are at capacity.
 * A tally (`tally_only`) may only take the place of another tally: NULL
 * when there is none. Otherwise NULL only when the pool holds nothing but
 * live entries, which the caller's bound on live sessions rules out. A new
 * entry rests; call sources_seen() once it changed. */
struct source *sources_get(struct sources *s, const struct cidr *key, bool tally_only, double burst,
                           uint64_t now);

/* The entry was seen or changed (sessions, block, checked): moves it to the
 * list its state puts it in, as the most recently seen, and forgets the
 * least recently seen resting entries while more than `capacity` rest
 * (after a session ended); never e itself. */
void sources_seen(struct sources *s, struct source *e, uint64_t now);

/* Takes one token, refilling at `rate` per second up to `burst` first.
 * False when no token is left. */
bool source_take_token(struct source *e, double rate, double burst, uint64_t now);

/* Drops resting entries that hold nothing a fresh entry would not: no
 * refusals to report, not blocked, a full bucket. One pass over the pool;
 * meant for the periodic report, never for the accept path. */
uint32_t sources_sweep(struct sources *s, double rate, double burst, uint64_t now);

void sources_foreach(struct sources *s, void (*fn)(struct source *e, void *userdata), void *userdata);

/* Replaces the table with an empty one of a new capacity (a reload that
 * changes how sources are counted); what the old entries had to report is
 * kept in `forgotten`. Returns 0 or -ENOMEM (the table is then unchanged). */
int sources_reset(struct sources *s, uint32_t capacity, uint32_t live_max);
