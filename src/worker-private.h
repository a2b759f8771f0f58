/* Inside the worker module only: what the echo loop (worker.c) and the
 * session's end (worker-end.c) share. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Set by the SIGTERM handler: the session is cut. */
extern volatile sig_atomic_t worker_cut_requested;
/* The session's socket, which the handler gives a tiny receive timeout so
 * that a recv() about to block returns at once (-1: none yet). */
extern volatile sig_atomic_t worker_cut_fd;

/* Whether the cut has come: the flag, or, while SIGTERM is blocked
 * (`blocked`), a SIGTERM pending. A busy session may never reach the
 * ppoll() that would deliver it. */
bool worker_cut_came(bool blocked);

/* The one notion of the client's progress in taking its echo, for the
 * write timeout in the echo and in the lingering close alike: what the
 * kernel holds for it (SIOCOUTQ: sent but unacknowledged, or unsent) went
 * down since the last look, *queued, which is updated (UINT64_MAX before
 * the first look). Only meaningful while nothing is added to the queue
 * between two looks (a stalled send, the linger). One ioctl. */
bool worker_client_took(int fd, uint64_t *queued);

static inline uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}
