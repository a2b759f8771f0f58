/* The sessions one daemon hands to the next across a restart.
 *
 * From its start the daemon keeps a list of its live sessions in systemd's
 * file descriptor store, a memfd named HANDOFF_FDNAME updated in place
 * (struct handoff_table), so that it is current at a hand-off
 * (server_hand_off()) and after a crash alike; without a live list, the
 * hand-off stores a sealed one (handoff_write()). The next daemon gets it back
 * with its listeners (LISTEN_FDNAMES) and adopts each session that is still
 * the same process, so max_clients and the per-source limits count the old
 * sessions until they end, as if no restart had happened.
 *
 * The format is this program's own, versioned: a header, then `count`
 * fixed-size entries. The content is checked as untrusted input: a wrong
 * magic, version or size, more entries than `max`, an entry with a pid out
 * of range or an address of another family than IPv4, IPv6 or AF_UNSPEC
 * (a session whose client is unknown) is refused (the whole file for
 * the first four, the entry for the last two) and never read past. A
 * process is the same one when it runs as our user and its start time
 * (/proc/PID/stat, field 22) matches, where /proc shows it and the list
 * knows it (0: unknown) (handoff_same_process()). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

#define HANDOFF_FDNAME "handoff"

struct handoff_entry {
        int32_t pid;
        uint32_t reserved;              /* 0 */
        uint64_t start_time;            /* clock ticks after boot, /proc/PID/stat */
        union sockaddr_any peer;        /* the client, for admission control */
};

/* A sealed, close-on-exec memfd holding n entries, or -errno. */
int handoff_write(const struct handoff_entry *e, size_t n);

/* The live list: the same format, one entry per child slot (pid 0: an
 * empty slot), kept current in place while the daemon runs, so that the
 * copy in systemd's store names the live sessions even when the daemon
 * dies without a hand-off (SIGKILL, a crash: Restart=on-failure keeps the
 * store). The mapping is not inherited by workers (MADV_DONTFORK), the
 * descriptor is close-on-exec and closed in each worker, and the memfd is
 * sealed once mapped (F_SEAL_FUTURE_WRITE, no resizing): no other opening
 * of it (systemd's store, /proc/PID/fd) can write it; the next daemon only
 * reads it. */
struct handoff_table {
        int fd;                         /* -1: none */
        uint32_t capacity;
        struct handoff_entry *entry;    /* capacity of them, in the memfd */
        void *map;
        size_t map_size;
};

/* Creates it with `capacity` empty entries: 0 or -errno (then t->fd is -1). */
int handoff_table_open(struct handoff_table *t, uint32_t capacity);
/* Sets entry `slot` (pid written last) or empties it; no-ops without a table. */
void handoff_table_set(struct handoff_table *t, uint32_t slot, const struct handoff_entry *e);
void handoff_table_clear(struct handoff_table *t, uint32_t slot);
void handoff_table_close(struct handoff_table *t);

/* Reads the entries of fd into *out (malloc'd, *n of them; NULL when 0);
 * empty entries (pid 0) are left out.
 * Returns the number of entries skipped as malformed (>= 0), or -EBADMSG
 * for a file of the wrong format or size or with more than max entries, or
 * another -errno. Never reads past the file's size. */
int handoff_read(int fd, size_t max, struct handoff_entry **out, size_t *n);

/* The start time of pid from /proc, 0 or -errno (-ESRCH: gone). */
int handoff_start_time(pid_t pid, uint64_t *out);

/* Whether pidfd, open on e->pid, is the process e names: alive, not this
 * process, running as our user (we may signal it), and started at
 * e->start_time if /proc shows it (it may not: see handoff.c). 0 when it
 * is, -ESRCH when it is gone or the pid is another process's, -EPERM when
 * it is another user's, or another -errno. */
int handoff_same_process(int pidfd, const struct handoff_entry *e);


/* The record policy the daemons share across restarts (struct
 * record_policy, one 64-bit word): a memfd in systemd's store named
 * HANDOFF_POLICY_FDNAME, which each daemon takes over from the previous
 * one and writes at its start and at every reload, so that the workers of
 * every daemon still running (the adopted sessions too) see the last
 * reload. Sealed against resizing; written only through `rw` (not
 * inherited, MADV_DONTFORK); `ro` is a read-only mapping of a read-only
 * opening, which the workers inherit and cannot make writable. */
#define HANDOFF_POLICY_FDNAME "policy"

struct handoff_policy {
        int fd;                         /* -1: none */
        bool stored;                    /* received from the store: already there */
        uint64_t *rw;
        const uint64_t *ro;
};

/* Takes fd (from the store; -1: none) if it is such a memfd, else makes a
 * new one: 0 or -errno (then p->fd is -1). fd is closed when not taken. */
int handoff_policy_open(struct handoff_policy *p, int fd);
void handoff_policy_close(struct handoff_policy *p);
