/* Child accounting: which workers are alive and what each one did.
 *
 * Each worker owns one slot in a MAP_SHARED anonymous mapping. The parent
 * fills the identity part (pid, start, peer) before fork(); the worker fills
 * its local address and keeps its counters current; the parent reads the slot
 * after waitpid() has reaped the worker, which orders every store the worker
 * made before the parent's reads. Slots are reused last-in first-out so a
 * lightly loaded daemon touches few pages. A private open-addressing table
 * maps pids to slots, so reaping costs no scan; it and the free list are
 * kept out of the workers (MADV_DONTFORK). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"
#include "worker.h"

struct slot {
        pid_t pid;
        uint32_t index;
        uint64_t start_usec;            /* CLOCK_MONOTONIC, set by the parent */
        union sockaddr_any peer;        /* set by the parent from accept() */
        union sockaddr_any local;       /* set by the worker (getsockname) */
        struct worker_stats stats;      /* kept current by the worker */
        bool cut;                       /* the parent ended it at shutdown */
};

struct pid_entry {
        pid_t pid;      /* 0: empty */
        uint32_t slot;
};

struct children {
        struct slot *slots;
        uint32_t capacity;
        uint32_t active;                /* committed (running) workers */
        uint32_t *free_list;
        uint32_t n_free;
        struct pid_entry *table;
        uint32_t table_mask;
};

int children_init(struct children *c, uint32_t capacity);
void children_done(struct children *c);

/* A zeroed slot for the next worker, or NULL when every slot is in use. */
struct slot *children_claim(struct children *c);
/* Records that the worker for `s` is running as `pid`. */
void children_commit(struct children *c, struct slot *s, pid_t pid);
/* The slot of a running worker, or NULL when pid is not ours. */
struct slot *children_find(const struct children *c, pid_t pid);
/* Returns a slot to the pool: a claimed one whose fork failed, or a reaped one. */
void children_release(struct children *c, struct slot *s);

/* Calls fn for every running worker. */
void children_foreach(struct children *c, void (*fn)(struct slot *s, void *userdata), void *userdata);
