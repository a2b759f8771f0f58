/* The echo session: everything a worker does with its one client.
 *
 * worker_echo() returns every byte it receives, in order, and ends the
 * session for exactly one recorded reason. It counts bytes into *stats as it
 * goes, so whoever reads stats afterwards (the parent, through shared memory)
 * sees the true figures even if the worker is killed mid-session.
 * worker_close() then ends the connection so that the client receives every
 * byte counted as sent: the final bytes_out is what the client's TCP
 * acknowledged (while the session runs, what the kernel took from the
 * worker). */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* How long a worker cut at shutdown (SIGTERM) lingers at most, so it closes
 * the connection itself before the daemon's SIGKILL (KILL_GRACE_USEC). */
#define WORKER_CUT_LINGER_USEC (1 * USEC_PER_SEC)

enum close_reason {
        CLOSE_NONE = 0,         /* still running, or died before deciding */
        CLOSE_CLIENT,           /* client closed its side; all echoed */
        CLOSE_RESET,            /* connection reset by the client */
        CLOSE_IDLE,             /* idle_timeout: nothing received */
        CLOSE_WRITE_TIMEOUT,    /* write_timeout: client does not read */
        CLOSE_SESSION_TIME,     /* max_session_time reached */
        CLOSE_SESSION_BYTES,    /* max_session_bytes received and echoed */
        CLOSE_SHUTDOWN,         /* cut at the end of the drain */
        CLOSE_ERROR,            /* anything else; stats.error says what */
        _CLOSE_REASON_MAX,
};

struct worker_limits {
        uint32_t buffer_size;
        uint32_t socket_buffer;         /* 0: the kernel's autotuning */
        uint64_t idle_timeout_usec;     /* 0: none */
        uint64_t write_timeout_usec;    /* 0: none */
        uint64_t max_session_time_usec; /* 0: none */
        uint64_t max_session_bytes;     /* 0: none */
};

struct worker_stats {
        uint64_t bytes_in;
        uint64_t bytes_out;
        /* What the client's TCP is known to have acknowledged, never more
         * than bytes_out: 0 during the echo (knowing it would cost a system
         * call per message), looked up when the lingering close starts and
         * at each round of it, and bytes_out once the connection is closed.
         * A lower bound at every moment: the figure for a worker killed by
         * a signal (slot_report_killed()). */
        uint64_t bytes_acked;
        uint64_t end_usec;      /* CLOCK_MONOTONIC when the session ended */
        uint32_t reason;        /* enum close_reason */
        int32_t error;          /* errno for CLOSE_ERROR */
};

/* fd: a connected stream socket with urgent data inline (SO_OOBINLINE,
 * set before the first read: spawn_serve_here() does), best passed blocking (a non-blocking one costs a system call to
 * change). buf: limits->buffer_size bytes. start_usec: CLOCK_MONOTONIC start
 * of the session. The caller still owns fd; see worker_close(). The session
 * ends as CLOSE_SHUTDOWN when SIGTERM comes (see worker_set_signals()). */
enum close_reason worker_echo(int fd, const struct worker_limits *limits, uint64_t start_usec,
                              void *buf, struct worker_stats *stats);

/* Closes fd the way stats->reason calls for, and sets stats->end_usec:
 * - client-closed, idle-timeout, session-time, session-bytes, shutdown: a
 *   lingering close (FIN after the echo, further input discarded), which
 *   returns once the client has acknowledged every byte (and, unless it
 *   closed, sent nothing for a while), at the latest after write_timeout
 *   (30 s when that is 0) without the client acknowledging more, or
 *   max_session_time from start_usec plus that period, or a fixed
 *   WORKER_CUT_LINGER_USEC after SIGTERM, whichever is first. Until then
 *   the worker lives, so what a client leaves unread stays bounded by
 *   max_clients; unread input cannot make the kernel reset the connection
 *   and drop the echo. A client that read its echo costs one ioctl here;
 * - write-timeout, reset, error, a linger that ran out, a reset in the
 *   linger: an abortive close (RST, kernel buffers dropped at once, so a
 *   stuck client cannot pin kernel memory).
 * Either way stats->bytes_out ends as what the client's TCP acknowledged.
 * fd may carry an abortive linger (spawn_serve_here() sets one, so that a
 * worker killed by a signal resets its connection): the orderly close
 * clears it. stats->bytes_acked stays a lower bound throughout.
 * start_usec, buf: as for worker_echo(); buf may be NULL for the abortive
 * reasons. */
void worker_close(int fd, const struct worker_limits *limits, uint64_t start_usec, void *buf,
                  struct worker_stats *stats);

/* A worker's signal dispositions: SIGTERM (the daemon's cut at the end of a
 * drain) ends the session in progress as CLOSE_SHUTDOWN; SIGINT, SIGHUP and
 * SIGUSR1, which are the daemon's (drain, reload, summary) and reach workers
 * too when sent to the process group or the whole unit, are ignored, as is
 * SIGPIPE. Every other signal keeps its default action. Process-wide: call
 * it in the worker while signals are still blocked. */
void worker_set_signals(void);

/* The signal the kernel sends a worker when its daemon exits. */
#define WORKER_ORPHAN_SIGNAL SIGUSR2

/* Lets the worker outlive its daemon (a restart hands the listener to the
 * next one at once; see server_hand_off()): when `parent` exits, the
 * session gets drain_usec more, as it would in the daemon's own drain, and is
 * then cut as by SIGTERM (CLOSE_SHUTDOWN). The session's own limits still
 * apply. Call in the worker while signals are still blocked: the handlers
 * are installed before the mask is restored. 0 or -errno. */
int worker_watch_parent(pid_t parent, uint64_t drain_usec);
/* Whether the daemon is gone (the signal came and the worker's parent is
 * no longer `parent`: a WORKER_ORPHAN_SIGNAL from anyone else is ignored). */
bool worker_orphaned(void);

const char *close_reason_name(enum close_reason reason);
