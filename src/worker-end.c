/* How a session ends: the cut (SIGTERM) and closing the connection the
 * way the close reason calls for. See worker.h. */
#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"
#include "worker-private.h"
#include "worker.h"

/* Lingering close: how long a client may go without acknowledging any of
 * what was echoed when write_timeout is 0, and how often the worker looks
 * whether it has (the kernel raises no event when the client acknowledges
 * data). */
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

/* The daemon's exit (PR_SET_PDEATHSIG) arms a timer of drain_timeout
 * (ITIMER_REAL), once; when it fires, the worker cuts itself with SIGTERM, the
 * very path of the daemon's cut. Both handlers are async-signal-safe:
 * setitimer() and kill() are plain system calls. */
static volatile sig_atomic_t orphaned;
static struct itimerval orphan_drain;
static pid_t orphan_parent;

static void on_alarm(int sig) {
        (void) sig;
        (void) kill(getpid(), SIGTERM);
}

static void on_orphaned(int sig) {
        int saved = errno;

        (void) sig;
        /* Anyone allowed to signal the worker can send this signal (e.g.
         * systemctl kill -s USR2 without --kill-who=main): only the parent's
         * exit counts. Once it exited, the worker has another parent; the
         * drain is armed that first time only, so a later stray signal
         * cannot push its end back. */
        if (getppid() == orphan_parent || orphaned)
                return;
        orphaned = 1;
        /* A zero it_value would disarm rather than fire: no drain is a cut now. */
        if (orphan_drain.it_value.tv_sec == 0 && orphan_drain.it_value.tv_usec == 0)
                on_alarm(SIGALRM);
        else
                (void) setitimer(ITIMER_REAL, &orphan_drain, NULL);
        errno = saved;
}

int worker_watch_parent(pid_t parent, uint64_t drain_usec) {
        struct sigaction a = { .sa_handler = on_orphaned, .sa_flags = SA_RESTART };

        orphan_parent = parent;
        orphan_drain.it_value.tv_sec = (time_t) (drain_usec / USEC_PER_SEC);
        orphan_drain.it_value.tv_usec = (suseconds_t) (drain_usec % USEC_PER_SEC);
        sigemptyset(&a.sa_mask);
        if (sigaction(WORKER_ORPHAN_SIGNAL, &a, NULL) < 0)
                return negative_errno();
        a.sa_handler = on_alarm;
        if (sigaction(SIGALRM, &a, NULL) < 0)
                return negative_errno();
        if (prctl(PR_SET_PDEATHSIG, WORKER_ORPHAN_SIGNAL) < 0)
                return negative_errno();
        /* The parent may have exited before the prctl(): no signal then. */
        if (getppid() != parent)
                (void) kill(getpid(), WORKER_ORPHAN_SIGNAL);
        return 0;
}

bool worker_orphaned(void) {
        return orphaned;
}

/* What the kernel holds for the client (SIOCOUTQ): sent but not
 * acknowledged, or not sent yet; 0 when it cannot say. */
static uint64_t queued_for_client(int fd) {
        int queued = 0;

        if (ioctl(fd, SIOCOUTQ, &queued) < 0 || queued <= 0)
                return 0;
        return (uint64_t) queued;
}

bool worker_client_took(int fd, uint64_t *queued) {
        uint64_t now = queued_for_client(fd);
        bool took = now < *queued;

        *queued = now;
        return took;
}

/* BYTES_SENT is what the client's TCP acknowledged: bytes its kernel
 * provably has. The kernel keeps that count (tcpi_bytes_acked) on the
 * socket until it is closed, through a reset by either side, when the
 * queue that SIOCOUTQ measures may already be gone; the FIN, once
 * acknowledged, adds one, which min_u64() absorbs. Stored in bytes_acked
 * first, so that a SIGKILL at any moment leaves a figure the client has.
 * Returns false when fd is not a TCP socket (no count). */
static bool note_acknowledged(int fd, struct worker_stats *st) {
        struct tcp_info ti = { 0 };
        socklen_t len = sizeof(ti);

        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
            len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
                return false;
        st->bytes_acked = min_u64(st->bytes_out, ti.tcpi_bytes_acked);
        return true;
}

/* The final count: what was acknowledged; not a TCP socket: what the
 * kernel took. */
static void count_acknowledged(int fd, struct worker_stats *st) {
        if (note_acknowledged(fd, st))
                st->bytes_out = st->bytes_acked;
}

/* An abortive close (RST): the kernel drops both queues at once, and what
 * the client had not acknowledged is not counted. The socket has the
 * abortive linger from the start (spawn_serve_here()); set again in case
 * that failed. */
static void abort_close(int fd, struct worker_stats *st) {
        count_acknowledged(fd, st);
        reset_close(fd);
}

/* An orderly close of a connection whose echo is all acknowledged: the
 * abortive linger the socket had until now (so that a worker killed by a
 * signal resets it rather than leaving its echo to the kernel) is cleared,
 * or close() would reset a connection whose client may not have read its
 * echo yet. */
static void orderly_close(int fd, struct worker_stats *st) {
        struct linger l = { .l_onoff = 0, .l_linger = 0 };

        st->bytes_acked = st->bytes_out;
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        safe_close(fd);
}

/* One look at the client during the linger: what it sent, read and
 * discarded (0 and *ended when it ended its side), or -errno (-EAGAIN:
 * nothing now). After the client's FIN, recv() says end of stream even once
 * a reset came; the pending error does not, so that is what is read then. */
static ssize_t linger_discard(int fd, void *buf, size_t size, bool *ended) {
        socklen_t len = sizeof(int);
        ssize_t n;
        int err = 0;

        if (!*ended) {
                n = recv(fd, buf, size, MSG_DONTWAIT | MSG_TRUNC);
                if (n < 0)
                        return negative_errno();
                *ended = n == 0;
                return n;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
                return -EAGAIN;
        return -err;
}

/* The end of every session that is not already broken: the echo the
 * client has not acknowledged stays this worker's, and so takes one of
 * max_clients, until it is acknowledged; a closed socket would leave it to
 * the kernel, which keeps probing a client's zero window for minutes with
 * the echo queued, counted by nothing. So: FIN after the echo; input read
 * and discarded (not counted) until the client ends its side (closing with
 * unread input would make the kernel reset the connection and drop the
 * echo); an orderly close once the client has ended its side or sent
 * nothing for a while, and acknowledged every byte.
 *
 * The deadline, as in the echo: write_timeout (LINGER_FALLBACK_USEC when
 * that is 0) WITHOUT PROGRESS, progress being the client acknowledging
 * more (worker_client_took()), so a slow but steady reader gets all of its
 * echo. Bounded for a trickling client by what the session could have
 * lasted anyway: max_session_time from the session's start plus one such
 * period for the final drain (no bound of its own when max_session_time is
 * 0, as in the echo); and cut to a fixed WORKER_CUT_LINGER_USEC, never
 * extended, once SIGTERM came. Past the deadline, or when the client
 * resets, an abortive close that counts only what was acknowledged.
 * `ended`: the client already ended its side (client-closed). The common
 * case, a client that read its echo before closing, costs one ioctl.
 * Discarding costs less than echoing, so the time bound is the only one. */
static void linger_close(int fd, const struct worker_limits *lim, uint64_t start, void *buf, bool ended,
                         struct worker_stats *st) {
        uint64_t patience = lim->write_timeout_usec ? lim->write_timeout_usec : LINGER_FALLBACK_USEC;
        uint64_t cap = lim->max_session_time_usec ? start + lim->max_session_time_usec + patience : UINT64_MAX;
        uint64_t now = now_usec(CLOCK_MONOTONIC), tick = LINGER_TICK_MIN_USEC;
        uint64_t stall_end = now + patience, cut_end = UINT64_MAX, queued = queued_for_client(fd);
        bool fin, quiet = false;
        sigset_t term, old, wait_mask;

        if (ended && queued == 0) {
                (void) shutdown(fd, SHUT_WR);
                orderly_close(fd, st);
                return;
        }
        (void) note_acknowledged(fd, st);
        fin = shutdown(fd, SHUT_WR) == 0;
        queued += fin ? 1 : 0; /* the FIN takes one sequence number */
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        (void) sigprocmask(SIG_BLOCK, &term, &old);
        wait_mask = old;
        sigdelset(&wait_mask, SIGTERM);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                struct timespec ts;
                uint64_t deadline;
                ssize_t n;

                if (!fin) {
                        abort_close(fd, st); /* not connected any more */
                        break;
                }
                n = linger_discard(fd, buf, lim->buffer_size, &ended);
                if (n < 0 && n != -EAGAIN && n != -EINTR) {
                        abort_close(fd, st); /* reset by the client */
                        break;
                }
                now = now_usec(CLOCK_MONOTONIC);
                if (cut_end == UINT64_MAX && worker_cut_came(true))
                        cut_end = now + WORKER_CUT_LINGER_USEC;
                if (worker_client_took(fd, &queued))
                        stall_end = now + patience;
                deadline = min_u64(min_u64(stall_end, cap), cut_end);
                /* queued - FIN: what is not acknowledged (a FIN acknowledged
                 * leaves 0). */
                if ((ended || (n < 0 && (quiet || now >= deadline))) && queued <= 1) {
                        orderly_close(fd, st); /* all acknowledged, nothing unread */
                        break;
                }
                if (now >= deadline) {
                        abort_close(fd, st);
                        break;
                }
                if (n > 0) {
                        quiet = false;
                        continue;
                }
                (void) note_acknowledged(fd, st);
                /* Once the client ended its side, its socket is always
                 * readable: only the time is waited for. */
                quiet = ppoll(ended ? NULL : &p, ended ? 0 : 1,
                              usec_to_timespec(min_u64(deadline - now, tick), &ts), &wait_mask) == 0;
                tick = min_u64(2 * tick, LINGER_TICK_MAX_USEC);
        }
        (void) sigprocmask(SIG_SETMASK, &old, NULL);
}

void worker_close(int fd, const struct worker_limits *lim, uint64_t start, void *buf, struct worker_stats *st) {
        switch (st->reason) {
        case CLOSE_CLIENT:
        case CLOSE_IDLE:
        case CLOSE_SESSION_TIME:
        case CLOSE_SESSION_BYTES:
        case CLOSE_SHUTDOWN:
                linger_close(fd, lim, start, buf, st->reason == CLOSE_CLIENT, st);
                break;
        default:
                /* Reset by the client (nothing left to deliver), the client
                 * stopped reading, or something failed: a stuck client must
                 * not pin kernel memory. */
                abort_close(fd, st);
                break;
        }
        st->bytes_acked = st->bytes_out; /* now final */
        st->end_usec = now_usec(CLOCK_MONOTONIC);
}
