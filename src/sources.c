/* See sources.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "openaddr.h"
#include "sources.h"
#include "util.h"

#define NONE UINT32_MAX

static size_t pool_bytes(const struct sources *s) {
        return (size_t) s->pool_size * sizeof(*s->pool);
}

static size_t index_bytes(const struct sources *s) {
        return ((size_t) s->index_mask + 1) * sizeof(*s->index);
}

int sources_init(struct sources *s, uint32_t capacity, uint32_t live_max) {
        uint64_t pool = (uint64_t) capacity + live_max, size = 1;

        *s = (struct sources) { .free_head = NONE };
        if (capacity == 0 || pool >= UINT32_MAX / 4)
                return -EINVAL;
        while (size < pool * 2) /* at most half full: every probe ends soon */
                size <<= 1;
        s->pool_size = (uint32_t) pool;
        s->capacity = capacity;
        s->index_mask = (uint32_t) size - 1;
        for (int l = 0; l < _SOURCE_LISTS; l++)
                s->lists[l].head = s->lists[l].tail = NONE;
        /* Pages cost nothing until a source lands there, and workers never
         * see the table at all. */
        s->pool = parent_only_alloc(pool_bytes(s));
        s->index = parent_only_alloc(index_bytes(s));
        if (!s->pool || !s->index) {
                sources_done(s);
                return -ENOMEM;
        }
        if (getrandom(s->key, sizeof(s->key), 0) != (ssize_t) sizeof(s->key)) {
                sources_done(s);
                return -EIO;
        }
        return 0;
}

void sources_done(struct sources *s) {
        parent_only_free(s->pool, pool_bytes(s));
        parent_only_free(s->index, index_bytes(s));
        *s = (struct sources) { .free_head = NONE };
}

static bool same(const struct cidr *a, const struct cidr *b) {
        return a->len == b->len && memcmp(&a->addr, &b->addr, sizeof(a->addr)) == 0;
}

/* The index slot holding key, or the empty one where it would go. */
static uint32_t slot_of(const struct sources *s, const struct cidr *key, uint32_t hash) {
        uint32_t h = hash & s->index_mask;

        while (s->index[h] && !same(&s->pool[s->index[h] - 1].key, key))
                h = (h + 1) & s->index_mask;
        return h;
}

struct source *sources_find(const struct sources *s, const struct cidr *key) {
        uint32_t h = slot_of(s, key, (uint32_t) cidr_hash(key, s->key));

        return s->index[h] ? &s->pool[s->index[h] - 1] : NULL;
}

static uint32_t pos(const struct sources *s, const struct source *e) {
        return (uint32_t) (e - s->pool);
}

static void unlink_entry(struct sources *s, struct source *e) {
        if (e->list == SOURCE_LIVE)
                return;
        if (e->prev != NONE)
                s->pool[e->prev].next = e->next;
        else
                s->lists[e->list].head = e->next;
        if (e->next != NONE)
                s->pool[e->next].prev = e->prev;
        else
                s->lists[e->list].tail = e->prev;
        s->lists[e->list].n--;
        s->resting--;
        e->list = SOURCE_LIVE;
}

static void link_tail(struct sources *s, struct source *e, enum source_list l) {
        e->list = (uint8_t) l;
        e->next = NONE;
        e->prev = s->lists[l].tail;
        if (e->prev != NONE)
                s->pool[e->prev].next = pos(s, e);
        else
                s->lists[l].head = pos(s, e);
        s->lists[l].tail = pos(s, e);
        s->lists[l].n++;
        s->resting++;
}

/* The index for openaddr_delete(): only index slots move; entries keep
 * their place in the pool. */
static bool index_occupied(const void *table, uint32_t slot) {
        const struct sources *s = table;

        return s->index[slot] != 0;
}

static uint32_t index_home(const void *table, uint32_t slot) {
        const struct sources *s = table;

        return s->pool[s->index[slot] - 1].hash & s->index_mask;
}

static void index_move(void *table, uint32_t from, uint32_t to) {
        struct sources *s = table;

        s->index[to] = s->index[from];
        s->index[from] = 0;
}

static const struct openaddr_ops index_table = { index_occupied, index_home, index_move };

static void unindex(struct sources *s, uint32_t hole) {
        s->index[hole] = 0;
        openaddr_delete(s, s->index_mask, hole, &index_table);
}

static void drop(struct sources *s, struct source *e) {
        unlink_entry(s, e);
        unindex(s, slot_of(s, &e->key, e->hash));
        e->next = s->free_head;
        s->free_head = pos(s, e);
        s->count--;
}

static void forget(struct sources *s, struct source *e) {
        bool reported = false;

        for (int r = 0; r < _REFUSE_MAX; r++) {
                s->forgotten.refused[r] = sat_add_u32(s->forgotten.refused[r], e->refused[r]);
                reported |= e->refused[r] != 0;
        }
        if (reported)
                source_tally_mark(&s->forgotten, e->hash, true);
        s->forgotten_total++;
        drop(s, e);
}

/* Forgets the least recently seen resting entry of the first non-empty
 * list up to `last`. False when they are all empty. */
static bool forget_one(struct sources *s, enum source_list last) {
        for (int l = 0; l <= (int) last; l++)
                if (s->lists[l].head != NONE) {
                        forget(s, &s->pool[s->lists[l].head]);
                        return true;
                }
        return false;
}

struct source *sources_get(struct sources *s, const struct cidr *key, bool tally_only, double burst,
                           uint64_t now) {
        uint32_t hash = (uint32_t) cidr_hash(key, s->key), h = slot_of(s, key, hash), p;
        struct source *e;

        if (s->index[h])
                return &s->pool[s->index[h] - 1];
        if (s->resting >= s->capacity || (s->free_head == NONE && s->unused == s->pool_size)) {
                if (!forget_one(s, tally_only ? SOURCE_DENIED : SOURCE_BLOCKED))
                        return NULL;
                h = slot_of(s, key, hash); /* the delete may have shifted the run */
        }
        if (s->free_head != NONE) {
                p = s->free_head;
                s->free_head = s->pool[p].next;
        } else {
                p = s->unused++; /* untouched pages stay untouched */
        }
        e = &s->pool[p];
        *e = (struct source) { .key = *key, .hash = hash, .tokens = burst, .refilled_usec = now,
                               .list = SOURCE_LIVE };
        s->index[h] = p + 1;
        s->count++;
        link_tail(s, e, SOURCE_DENIED);
        return e;
}

static enum source_list list_for(const struct source *e, uint64_t now) {
        if (e->active)
                return SOURCE_LIVE;
        if (e->blocked_until > now)
                return SOURCE_BLOCKED;
        return e->checked ? SOURCE_IDLE : SOURCE_DENIED;
}

void sources_seen(struct sources *s, struct source *e, uint64_t now) {
        enum source_list l = list_for(e, now);

        unlink_entry(s, e);
        if (l == SOURCE_LIVE)
                return;
        link_tail(s, e, l);
        if (s->lists[SOURCE_BLOCKED].n > s->capacity / 2)
                forget(s, &s->pool[s->lists[SOURCE_BLOCKED].head]);
        /* A session just ended: one more rests. Never e: it is the most
         * recently seen, and with at most half of them blocked, at least
         * half of the resting entries are in the lists tried first. */
        while (s->resting > s->capacity && forget_one(s, SOURCE_BLOCKED))
                ;
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

uint32_t sources_sweep(struct sources *s, double rate, double burst, uint64_t now) {
        uint32_t dropped = 0;

        for (int l = 0; l < _SOURCE_LISTS; l++)
                for (uint32_t p = s->lists[l].head; p != NONE;) {
                        struct source *e = &s->pool[p];

                        p = e->next;
                        if (idle(e, rate, burst, now)) {
                                drop(s, e);
                                dropped++;
                        }
                }
        return dropped;
}

void sources_foreach(struct sources *s, void (*fn)(struct source *e, void *userdata), void *userdata) {
        for (uint32_t h = 0; h <= s->index_mask; h++)
                if (s->index[h])
                        fn(&s->pool[s->index[h] - 1], userdata);
}

int sources_reset(struct sources *s, uint32_t capacity, uint32_t live_max) {
        struct sources fresh;
        int r = sources_init(&fresh, capacity, live_max);

        if (r < 0)
                return r;
        fresh.forgotten_total = s->forgotten_total;
        fresh.forgotten = s->forgotten;
        /* The same hash key, so a source keeps its bit in the tally. */
        memcpy(fresh.key, s->key, sizeof(fresh.key));
        /* What the old entries had to report goes with the rest. */
        for (uint32_t h = 0; h <= s->index_mask; h++) {
                const struct source *e = s->index[h] ? &s->pool[s->index[h] - 1] : NULL;
                bool reported = false;

                for (int i = 0; e && i < _REFUSE_MAX; i++) {
                        fresh.forgotten.refused[i] = sat_add_u32(fresh.forgotten.refused[i], e->refused[i]);
                        reported |= e->refused[i] != 0;
                }
                if (reported)
                        source_tally_mark(&fresh.forgotten, e->hash, true);
        }
        sources_done(s);
        *s = fresh;
        return 0;
}
