/* Inside the worker module only: what the echo loop (worker.c) and the
 * session's end (worker-end.c) share. */
#pragma once

#include <signal.h>
#include <stdint.h>

/* Set by the SIGTERM handler: the session is cut. */
extern volatile sig_atomic_t worker_cut_requested;
/* The session's socket, which the handler gives a tiny receive timeout so
 * that a recv() about to block returns at once (-1: none yet). */
extern volatile sig_atomic_t worker_cut_fd;

static inline uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}
