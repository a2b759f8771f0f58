/* See sources.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "sources.h"
#include "util.h"

int sources_init(struct sources *s, uint32_t capacity) {
        *s = (struct sources) { 0 };
        if (capacity == 0 || (capacity & (capacity - 1)))
                return -EINVAL;
        /* Pages cost nothing until a source lands there, and workers never
         * see the table at all. */
        s->table = parent_only_alloc((size_t) capacity * sizeof(*s->table));
        if (!s->table)
                return -ENOMEM;
        s->mask = capacity - 1;
        if (getrandom(s->key, sizeof(s->key), 0) != (ssize_t) sizeof(s->key)) {
                sources_done(s);
                return -EIO;
        }
        return 0;
}

void sources_done(struct sources *s) {
        parent_only_free(s->table, ((size_t) s->mask + 1) * sizeof(*s->table));
        *s = (struct sources) { 0 };
}

static uint32_t slot_of(const struct sources *s, const struct cidr *key) {
        return (uint32_t) cidr_hash(key, s->key) & s->mask;
}

static bool same(const struct cidr *a, const struct cidr *b) {
        return a->len == b->len && memcmp(&a->addr, &b->addr, sizeof(a->addr)) == 0;
}

struct source *sources_find(const struct sources *s, const struct cidr *key) {
        for (uint32_t h = slot_of(s, key);; h = (h + 1) & s->mask) {
                if (!s->table[h].used)
                        return NULL;
                if (same(&s->table[h].key, key))
                        return &s->table[h];
        }
}

static void refill(struct source *e, double rate, double burst, uint64_t now) {
        if (now > e->refilled_usec) {
                e->tokens += rate * (double) (now - e->refilled_usec) / (double) USEC_PER_SEC;
                if (e->tokens > burst)
                        e->tokens = burst;
        }
        e->refilled_usec = now;
}

bool source_take_token(struct source *e, double rate, double burst, uint64_t now) {
        refill(e, rate, burst, now);
        if (e->tokens < 1.0)
                return false;
        e->tokens -= 1.0;
        return true;
}

static bool idle(struct source *e, double rate, double burst, uint64_t now) {
        if (e->active || e->blocked_until > now)
                return false;
        for (int r = 0; r < _REFUSE_MAX; r++)
                if (e->refused[r])
                        return false;
        if (rate > 0)
                refill(e, rate, burst, now);
        return rate <= 0 || e->tokens >= burst;
}

/* Backward-shift delete: no tombstones, so probes stay short. */
static void remove_at(struct sources *s, uint32_t hole) {
        uint32_t j = hole;

        s->table[hole].used = false;
        s->count--;
        for (;;) {
                uint32_t home;

                j = (j + 1) & s->mask;
                if (!s->table[j].used)
                        return;
                home = slot_of(s, &s->table[j].key);
                if ((hole < j) ? (home <= hole || home > j) : (home <= hole && home > j)) {
                        s->table[hole] = s->table[j];
                        s->table[j].used = false;
                        hole = j;
                }
        }
}

uint32_t sources_sweep(struct sources *s, double rate, double burst, uint64_t now) {
        uint32_t dropped = 0;

        /* An entry shifted into slot i is examined again before moving on;
         * one shifted from the start to the end is examined twice: harmless. */
        for (uint32_t i = 0; i <= s->mask;) {
                if (s->table[i].used && idle(&s->table[i], rate, burst, now)) {
                        remove_at(s, i);
                        dropped++;
                } else {
                        i++;
                }
        }
        return dropped;
}

struct source *sources_get(struct sources *s, const struct cidr *key, double burst, uint64_t now) {
        struct source *e = sources_find(s, key);
        uint32_t h;

        if (e)
                return e;
        if (s->count >= (s->mask + 1) / 2)
                return NULL; /* the caller sweeps and asks again, or goes untracked */
        for (h = slot_of(s, key); s->table[h].used; h = (h + 1) & s->mask)
                ;
        s->table[h] = (struct source) { .key = *key, .used = true, .tokens = burst, .refilled_usec = now };
        s->count++;
        return &s->table[h];
}

void sources_foreach(struct sources *s, void (*fn)(struct source *e, void *userdata), void *userdata) {
        for (uint32_t i = 0; i <= s->mask; i++)
                if (s->table[i].used)
                        fn(&s->table[i], userdata);
}

int sources_clear(struct sources *s) {
        /* A fresh zeroed mapping rather than memset(): the parent stays small. */
        struct source *t = parent_only_alloc(((size_t) s->mask + 1) * sizeof(*t));

        if (!t)
                return -ENOMEM;
        parent_only_free(s->table, ((size_t) s->mask + 1) * sizeof(*s->table));
        s->table = t;
        s->count = 0;
        return 0;
}
