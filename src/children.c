/* See children.h. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "children.h"
#include "openaddr.h"
#include "util.h"

static uint32_t hash_pid(pid_t pid, uint32_t mask) {
        return ((uint32_t) pid * UINT32_C(2654435761)) & mask;
}

int children_init(struct children *c, uint32_t capacity) {
        uint32_t size = 1;
        void *p;

        *c = (struct children) { 0 };
        if (capacity == 0)
                return -EINVAL;
        /* MAP_NORESERVE: pages cost nothing until a worker first uses a slot. */
        p = mmap(NULL, (size_t) capacity * sizeof(struct slot_report), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        c->reports = p;
        c->capacity = capacity;

        while (size < capacity * 2)
                size <<= 1;
        c->table_mask = size - 1; /* before anything can fail: children_done() frees by it */
        c->table = parent_only_alloc((size_t) size * sizeof(*c->table));
        c->free_list = parent_only_alloc((size_t) capacity * sizeof(*c->free_list));
        c->child = parent_only_alloc((size_t) capacity * sizeof(*c->child));
        if (!c->table || !c->free_list || !c->child) {
                children_done(c);
                return -ENOMEM;
        }
        for (uint32_t i = 0; i < capacity; i++)
                c->free_list[i] = capacity - 1 - i;
        c->n_free = capacity;
        return 0;
}

void children_done(struct children *c) {
        if (c->reports)
                munmap(c->reports, (size_t) c->capacity * sizeof(struct slot_report));
        parent_only_free(c->child, (size_t) c->capacity * sizeof(*c->child));
        parent_only_free(c->table, ((size_t) c->table_mask + 1) * sizeof(*c->table));
        parent_only_free(c->free_list, (size_t) c->capacity * sizeof(*c->free_list));
        *c = (struct children) { 0 };
}

/* A record's position: from its place in the parent's own array, never
 * from anything stored in memory a worker can write. */
static uint32_t position(const struct children *c, const struct child *ch) {
        return (uint32_t) (ch - c->child);
}

struct child *children_claim(struct children *c) {
        uint32_t i;

        if (c->n_free == 0)
                return NULL;
        i = c->free_list[--c->n_free];
        c->child[i] = (struct child) { 0 };
        memset(&c->reports[i], 0, sizeof(c->reports[i]));
        return &c->child[i];
}

void children_commit(struct children *c, struct child *ch, pid_t pid) {
        uint32_t h = hash_pid(pid, c->table_mask);

        while (c->table[h].pid != 0)
                h = (h + 1) & c->table_mask;
        c->table[h] = (struct pid_entry) { .pid = pid, .slot = position(c, ch) };
        ch->pid = pid;
        c->active++;
}

static int64_t find_entry(const struct children *c, pid_t pid) {
        uint32_t h = hash_pid(pid, c->table_mask);

        /* The table is at most half full, so an empty entry ends every probe. */
        while (c->table[h].pid != 0) {
                if (c->table[h].pid == pid)
                        return h;
                h = (h + 1) & c->table_mask;
        }
        return -1;
}

struct child *children_find(const struct children *c, pid_t pid) {
        int64_t e = pid > 0 ? find_entry(c, pid) : -1;

        return e < 0 ? NULL : &c->child[c->table[e].slot];
}

void slot_report_check(struct slot_report *r, uint64_t now) {
        sa_family_t family = r->local.sa.sa_family;

        if (r->stats.reason >= _CLOSE_REASON_MAX)
                r->stats.reason = CLOSE_ERROR;
        if (r->stats.error <= 0 || r->stats.error >= 4096)
                r->stats.error = 0;
        if (family != AF_INET && family != AF_INET6)
                memset(&r->local, 0, sizeof(r->local));
        if (r->stats.end_usec > now)
                r->stats.end_usec = now;
}

bool slot_report_worker_done(struct slot_report *r, bool orphaned) {
        uint32_t expected = RECORDER_OPEN;

        if (!__atomic_compare_exchange_n(&r->recorder, &expected, RECORDER_PARENT, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST))
                return true; /* the daemon left first */
        return orphaned;
}

bool slot_report_parent_leaves(struct slot_report *r) {
        uint32_t expected = RECORDER_OPEN;

        return !__atomic_compare_exchange_n(&r->recorder, &expected, RECORDER_WORKER, false, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST);
}

void slot_report_killed(struct slot_report *r) {
        if (r->stats.bytes_acked < r->stats.bytes_out)
                r->stats.bytes_out = r->stats.bytes_acked;
}

void children_ended(const struct children *c, const struct child *ch, uint64_t now, struct session_end *out) {
        out->child = *ch;
        /* One copy, then checks on the copy: a live worker may still be
         * writing the shared original. */
        memcpy(&out->report, &c->reports[position(c, ch)], sizeof(out->report));
        slot_report_check(&out->report, now);
}

/* The pid table for openaddr_delete(). */
static bool pid_occupied(const void *table, uint32_t slot) {
        const struct children *c = table;

        return c->table[slot].pid != 0;
}

static uint32_t pid_home(const void *table, uint32_t slot) {
        const struct children *c = table;

        return hash_pid(c->table[slot].pid, c->table_mask);
}

static void pid_move(void *table, uint32_t from, uint32_t to) {
        struct children *c = table;

        c->table[to] = c->table[from];
        c->table[from].pid = 0;
}

static const struct openaddr_ops pid_table = { pid_occupied, pid_home, pid_move };

static void remove_entry(struct children *c, uint32_t hole) {
        c->table[hole].pid = 0;
        openaddr_delete(c, c->table_mask, hole, &pid_table);
}

void children_release(struct children *c, struct child *ch) {
        if (ch->pid > 0) {
                int64_t e = find_entry(c, ch->pid);
                if (e >= 0) {
                        remove_entry(c, (uint32_t) e);
                        c->active--;
                }
        }
        ch->pid = 0;
        c->free_list[c->n_free++] = position(c, ch);
}

_Static_assert(sizeof(struct record_policy) == sizeof(uint64_t), "a policy is written in one store");

void children_set_policy(struct children *c, const struct record_policy *p) {
        uint64_t v;

        memcpy(&v, p, sizeof(v));
        for (uint32_t h = 0; h <= c->table_mask; h++)
                if (c->table[h].pid != 0)
                        __atomic_store_n(&c->reports[c->table[h].slot].policy, v, __ATOMIC_RELEASE);
}

struct record_policy slot_report_policy(const struct slot_report *r) {
        uint64_t v = __atomic_load_n(&r->policy, __ATOMIC_ACQUIRE);
        struct record_policy p;

        memcpy(&p, &v, sizeof(p));
        return p;
}

void children_foreach(struct children *c, void (*fn)(struct child *ch, void *userdata), void *userdata) {
        for (uint32_t h = 0; h <= c->table_mask; h++)
                if (c->table[h].pid != 0)
                        fn(&c->child[c->table[h].slot], userdata);
}
