/* Child accounting: which workers are alive and what each one did.
 *
 * Trust boundary. Each worker has two records, found by the same position:
 * - struct child, the parent's: pid, start, peer, whether the parent cut it
 *   and what admission control counted for it. Parent-only memory
 *   (MADV_DONTFORK): absent from every worker, so nothing a worker does can
 *   change it, and a worker must never be handed a pointer into it.
 * - struct slot_report, the worker's: its local address and its counters,
 *   in a MAP_SHARED anonymous mapping. It is the only memory a worker can
 *   write, and any worker can write any report (the mapping is shared whole
 *   so that fork() costs nothing extra), so the parent never reads it in
 *   place: children_ended() copies it and checks the copy, and nothing the
 *   parent decides (which slot is free, which pid is whose, the peer in the
 *   record, the hold given back) is ever read from it.
 * The parent zeroes a report when it claims the slot; the worker fills in
 * its local address and keeps its counters current; the parent reads it
 * after waitpid() has reaped the worker, which orders every store the worker
 * made before the parent's reads. Positions come from pointer arithmetic on
 * the parent's own array. Slots are reused last-in first-out so a lightly
 * loaded daemon touches few pages. A private open-addressing table maps pids
 * to positions, so reaping costs no scan. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"
#include "admission-types.h"
#include "worker.h"

/* What the parent knows of one worker. Parent-only. */
struct child {
        pid_t pid;                      /* 0 until committed */
        bool cut;                       /* the parent ended it at shutdown */
        bool adopted;                   /* a previous daemon's worker (server_adopt()), not our child */
        int pidfd;                      /* adopted only: tells when it ends; -1 when it cannot be watched */
        uint64_t proc_start;            /* adopted only: its start time as listed (struct handoff_entry) */
        uint64_t start_usec;            /* CLOCK_MONOTONIC, set by the parent */
        union sockaddr_any peer;        /* from accept() */
        struct admission_hold hold;     /* what admission control counted */
};

/* How the worker's own record must look (server_record_own_end()): the
 * daemon's log_level and log_addresses as of its last reload, written by
 * the daemon into each live report at every reload (children_set_policy();
 * where the daemons share a policy, handoff.h, the worker reads that one)
 * and read by the worker only, which never takes a level more verbose nor
 * addresses less private than it was forked with (any worker can write any
 * report). `set` is 0 until a reload wrote it: then the
 * policy the worker was forked with holds. The hash key cannot change
 * without a restart, so the worker has the daemon's. */
struct record_policy {
        uint8_t set;
        uint8_t log_addresses;          /* LOG_ADDRESSES_* */
        uint8_t prefix_v4, prefix_v6;   /* source_prefix_ipv4/ipv6 */
        int32_t log_level;
};

/* What a worker reports. Shared, written by the worker; untrusted. */
struct slot_report {
        union sockaddr_any local;       /* getsockname() */
        struct worker_stats stats;      /* kept current */
        uint32_t recorder;              /* RECORDER_*, see slot_report_worker_done() */
        uint64_t policy;                /* a struct record_policy, written by the daemon (one store) */
};

/* Who writes a session's record when the daemon may leave before its
 * worker ends (server_hand_off()): decided once, by whichever side comes
 * first, with a compare-and-swap on the report. */
enum {
        RECORDER_OPEN = 0,      /* the session runs */
        RECORDER_PARENT,        /* the worker ended with the daemon there */
        RECORDER_WORKER,        /* the daemon left first */
};

/* One ended session as the parent records it: its own record, and a
 * checked copy of the worker's report. */
struct session_end {
        struct child child;
        struct slot_report report;
};

struct pid_entry {
        pid_t pid;      /* 0: empty */
        uint32_t slot;
};

struct children {
        struct child *child;            /* parent-only, capacity of them */
        struct slot_report *reports;    /* shared with the workers */
        uint32_t capacity;
        uint32_t active;                /* committed (running) workers */
        uint32_t *free_list;
        uint32_t n_free;
        struct pid_entry *table;
        uint32_t table_mask;
};

int children_init(struct children *c, uint32_t capacity);
void children_done(struct children *c);

/* A zeroed record, with a zeroed report, for the next worker, or NULL when
 * every slot is in use. */
struct child *children_claim(struct children *c);
/* The report the worker for `ch` writes: the one pointer a worker gets. */
static inline struct slot_report *children_report(const struct children *c, const struct child *ch) {
        return &c->reports[ch - c->child];
}
/* Records that the worker for `ch` is running as `pid`. */
void children_commit(struct children *c, struct child *ch, pid_t pid);
/* The record of a running worker, or NULL when pid is not ours. */
struct child *children_find(const struct children *c, pid_t pid);
/* What the parent records for a reaped worker: *ch, and a copy of its
 * report made safe to use (slot_report_check()). */
void children_ended(const struct children *c, const struct child *ch, uint64_t now_usec,
                    struct session_end *out);
/* Returns a slot to the pool: a claimed one whose fork failed, or a reaped one. */
void children_release(struct children *c, struct child *ch);

/* Calls fn for every running worker. */
void children_foreach(struct children *c, void (*fn)(struct child *ch, void *userdata), void *userdata);

/* The worker, its session over: true when it must write its own record
 * because the daemon has left (or was never told, having been killed:
 * `orphaned`). Otherwise the daemon records it when it reaps it. */
bool slot_report_worker_done(struct slot_report *r, bool orphaned);
/* The daemon, about to leave: true when the worker already ended and the
 * daemon must reap and record it; otherwise the worker records itself. A
 * worker can write any value here; the worst it can do is make the daemon
 * wait for it (boundedly, see server_hand_off()). */
bool slot_report_parent_leaves(struct slot_report *r);

/* The daemon, at a reload: the record policy of every live worker. */
void children_set_policy(struct children *c, const struct record_policy *p);
/* The worker: the policy the daemon last wrote in its report. */
struct record_policy slot_report_policy(const struct slot_report *r);

/* Makes a report read from a worker safe to use as it stands: a close
 * reason out of range becomes CLOSE_ERROR, an error number outside
 * 1..4095 becomes 0, a local address of a family other than IPv4/IPv6
 * becomes AF_UNSPEC, and an end time after now_usec becomes now_usec. The
 * byte counts are numbers, taken as they are. */
void slot_report_check(struct slot_report *r, uint64_t now_usec);
/* The report of a worker killed by a signal: its bytes_out may count echo
 * the kernel took but the client never received (the kernel resets the
 * connection, see spawn_serve_here()), so the figure becomes the last one
 * known acknowledged (stats.bytes_acked), which never over-claims. */
void slot_report_killed(struct slot_report *r);
