/* Turning an accepted connection into a worker process.
 *
 * Contract: spawn_worker() returns the worker's pid or -errno (fork failed).
 * It never closes client_fd in the parent: the caller closes it after a
 * successful fork, or keeps it to retry. The worker never returns: it
 * becomes a clean process that owns only its client (moved to fd 3) and the
 * standard streams, runs the echo session, records it in its report and
 * _exit()s. Workers never log; the parent logs for them when it reaps them,
 * except for a worker whose daemon left first (struct spawn_orphan).
 *
 * What the worker gets from the parent it gets by value before the fork
 * (start_usec, limits, mask), plus one pointer: its report, in the memory
 * shared with the parent (children.h). It gets no pointer to the parent's
 * own record of it: that memory is not there in the worker. */
#pragma once

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "children.h"
#include "worker.h"

/* Sets every signal the program may change back to its default disposition
 * and ignores SIGPIPE. Called once by the daemon before anything forks:
 * whatever it inherited (a SIGCHLD ignored by its parent would make the
 * kernel reap workers before they are recorded; an ignored signal never
 * reaches the signalfd), the daemon and its workers start from a known
 * state. The worker then sets the few dispositions of its own
 * (worker_set_signals(): the daemon must not ignore what it reads). */
void spawn_reset_signals(void);

/* What a worker needs to outlive its daemon (worker_watch_parent()): the
 * daemon's pid, the drain the session would get there, its client's
 * address, and what writes its record when the daemon has left
 * (slot_report_worker_done()); by value, as the worker has no other copy. */
struct spawn_orphan {
        pid_t parent;
        uint64_t drain_usec;
        union sockaddr_any peer;
        void (*record)(const struct slot_report *report, const union sockaddr_any *peer, uint64_t start_usec);
};

/* report: where the worker reports; start_usec: CLOCK_MONOTONIC start of
 * the session; worker_mask: the signal mask the daemon started with, restored in the
 * worker; orphan: NULL for a worker that ends with its daemon. */
pid_t spawn_worker(int client_fd, struct slot_report *report, uint64_t start_usec,
                   const struct worker_limits *limits, const sigset_t *worker_mask,
                   const struct spawn_orphan *orphan);

/* The worker's set-up, run in the child right after fork(): moves fd to 3,
 * closes every other descriptor above 2, drops the systemd variables, sets
 * the worker's dispositions (worker_set_signals(); the rest come from
 * spawn_reset_signals()) and then restores `mask`.
 * Returns 3 or -errno. */
int spawn_prepare_worker(int fd, const sigset_t *mask);

/* The kernel caps what a session sets as socket_buffer (SO_RCVBUF,
 * SO_SNDBUF) at net.core.rmem_max and wmem_max without a word: the
 * service has no CAP_NET_ADMIN for the FORCE variants. Reads both; 0 or
 * -errno (then nothing is known). */
int spawn_socket_buffer_caps(uint32_t *rmem_max, uint32_t *wmem_max);

/* Runs a session in the calling process (inetd style): the same setup
 * minus the fork. Returns the close reason. */
enum close_reason spawn_serve_here(int client_fd, struct slot_report *report, uint64_t start_usec,
                                   const struct worker_limits *limits);
