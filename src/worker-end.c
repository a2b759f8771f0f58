/* How a session ends: the cut (SIGTERM) and closing the connection the
 * way the close reason calls for. See worker.h. */
#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "util.h"
#include "worker-private.h"
#include "worker.h"

/* Lingering close: how long a client that does not close gets to take what
 * was echoed when write_timeout is 0, and how often the worker looks whether
 * it has (the kernel raises no event when the client acknowledges data). */
#define LINGER_FALLBACK_USEC (30 * USEC_PER_SEC)
#define LINGER_TICK_MIN_USEC (1 * USEC_PER_MSEC)
#define LINGER_TICK_MAX_USEC (100 * USEC_PER_MSEC)

volatile sig_atomic_t worker_cut_requested;
volatile sig_atomic_t worker_cut_fd = -1;

static void on_sigterm(int sig) {
        struct timeval tv = { .tv_sec = 0, .tv_usec = 1 };
        int saved = errno;

        (void) sig;
        worker_cut_requested = 1;
        /* setsockopt() is async-signal-safe (POSIX); a recv() about to block
         * now returns at once. */
        if (worker_cut_fd >= 0)
                (void) setsockopt(worker_cut_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        errno = saved;
}

bool worker_cut_came(bool blocked) {
        sigset_t pending;

        if (worker_cut_requested)
                return true;
        return blocked && sigpending(&pending) == 0 && sigismember(&pending, SIGTERM);
}

void worker_set_signals(void) {
        /* No SA_RESTART: a blocked recv() or ppoll() returns EINTR. */
        struct sigaction term = { .sa_handler = on_sigterm }, ign = { .sa_handler = SIG_IGN };
        static const int ignored[] = { SIGINT, SIGHUP, SIGUSR1, SIGPIPE };

        sigemptyset(&term.sa_mask);
        sigemptyset(&ign.sa_mask);
        (void) sigaction(SIGTERM, &term, NULL);
        for (size_t i = 0; i < ELEMENTSOF(ignored); i++)
                (void) sigaction(ignored[i], &ign, NULL);
}

/* What the client has not acknowledged of what was handed to the kernel
 * (SIOCOUTQ), less the FIN, which takes one sequence number once
 * shutdown() has queued it. */
static uint64_t unacked(int fd, bool fin) {
        int queued = 0;

        if (ioctl(fd, SIOCOUTQ, &queued) < 0 || queued <= 0)
                return 0;
        return (uint64_t) queued - (fin ? 1 : 0);
}

/* An abortive close (RST): the kernel drops both queues at once. When the
 * worker gives up on a client (ours), what the client never
 * acknowledged is not counted as sent: the record may then miss bytes whose
 * acknowledgement was still delayed, but it never counts bytes the client
 * cannot have. After the client's own reset the figure is left alone: the
 * client threw away its side anyway, and it may hold unacknowledged bytes
 * it did read. */
static void abort_close(int fd, bool fin, bool ours, struct worker_stats *st) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        if (ours)
                st->bytes_out -= min_u64(unacked(fd, fin), st->bytes_out);
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        safe_close(fd);
}

/* The lingering close of a session the worker ended while the client may
 * still be sending and not yet have read its echo: closing a socket with
 * unread input makes the kernel reset the connection and drop the queued
 * echo. So: FIN after the echo, input read and discarded (not counted),
 * until the client ends its side (the kernel then delivers the rest as it
 * reads), or it has acknowledged every byte and sent nothing for a while,
 * or the deadline passes: write_timeout (LINGER_FALLBACK_USEC when that is
 * 0), cut to WORKER_CUT_LINGER_USEC once SIGTERM came. At the deadline, a
 * client that has not taken everything or is still sending gets an abortive
 * close, and what it did not acknowledge is not counted. Discarding costs
 * less than echoing, so the time bound is the only one. */
static void linger_close(int fd, const struct worker_limits *lim, void *buf, struct worker_stats *st) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), tick = LINGER_TICK_MIN_USEC;
        uint64_t deadline = now + (lim->write_timeout_ms ? (uint64_t) lim->write_timeout_ms * USEC_PER_MSEC
                                                         : LINGER_FALLBACK_USEC);
        bool fin = shutdown(fd, SHUT_WR) == 0, cut_seen = false, quiet = false;
        sigset_t term, old, wait_mask;

        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        (void) sigprocmask(SIG_BLOCK, &term, &old);
        wait_mask = old;
        sigdelset(&wait_mask, SIGTERM);
        for (;;) {
                ssize_t n = fin ? recv(fd, buf, lim->buffer_size, MSG_DONTWAIT | MSG_TRUNC) : -1;
                int err = fin ? errno : ENOTCONN;
                struct pollfd p = { .fd = fd, .events = POLLIN };
                struct timespec ts;

                if (n == 0) {
                        safe_close(fd); /* the client's end: nothing more can arrive */
                        break;
                }
                if (n < 0 && err != EAGAIN && err != EINTR) {
                        abort_close(fd, fin, false, st); /* reset by the client */
                        break;
                }
                now = now_usec(CLOCK_MONOTONIC);
                if (!cut_seen && worker_cut_came(true)) {
                        cut_seen = true;
                        deadline = min_u64(deadline, now + WORKER_CUT_LINGER_USEC);
                }
                if (n < 0 && (quiet || now >= deadline) && unacked(fd, fin) == 0) {
                        safe_close(fd); /* all delivered, nothing unread */
                        break;
                }
                if (now >= deadline) {
                        abort_close(fd, fin, true, st);
                        break;
                }
                if (n > 0) {
                        quiet = false;
                        continue;
                }
                quiet = ppoll(&p, 1, usec_to_timespec(min_u64(deadline - now, tick), &ts), &wait_mask) == 0;
                tick = min_u64(2 * tick, LINGER_TICK_MAX_USEC);
        }
        (void) sigprocmask(SIG_SETMASK, &old, NULL);
}

void worker_close(int fd, const struct worker_limits *lim, void *buf, struct worker_stats *st) {
        switch (st->reason) {
        case CLOSE_CLIENT:
                /* Nothing more can arrive, so nothing can reset what is
                 * queued: the kernel delivers it as the client reads. */
                (void) shutdown(fd, SHUT_WR);
                safe_close(fd);
                break;
        case CLOSE_IDLE:
        case CLOSE_SESSION_TIME:
        case CLOSE_SESSION_BYTES:
        case CLOSE_SHUTDOWN:
                linger_close(fd, lim, buf, st);
                break;
        case CLOSE_RESET:
                abort_close(fd, false, false, st);
                break;
        default:
                /* The client stopped reading, or something failed: a stuck
                 * client must not pin kernel memory. */
                abort_close(fd, false, true, st);
                break;
        }
        st->end_usec = now_usec(CLOCK_MONOTONIC);
}
