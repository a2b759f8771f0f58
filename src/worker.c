/* See worker.h.
 *
 * Small messages: the socket blocks on receive, with the idle timeout (or
 * what is left of the session, when that is shorter) as SO_RCVTIMEO, and the
 * echo is sent with MSG_DONTWAIT, which normally completes at once: two
 * system calls a message, nothing polls. Only a send that cannot complete
 * waits, in poll(), for at most write_timeout since the last progress.
 * (SO_SNDTIMEO cannot say that: it counts from the start of each call, so a
 * trickle of buffer space would stretch the limit indefinitely.)
 *
 * Bulk traffic moves to splice() through a pipe once a read fills the whole
 * buffer: the bytes then go from the socket's receive queue to its send
 * queue without entering user space. The pipe is made only then, so short
 * sessions never pay for it; if splice() is refused, read/write carries on.
 * Splicing to a socket blocks according to the socket's own O_NONBLOCK, so
 * the socket becomes non-blocking for it and every wait is a poll(), cheap
 * next to chunks of a whole buffer.
 *
 * Ordering and memory stay trivial either way: read a chunk, write all of it
 * back, read again. At most one buffer (or one pipe) of a client's data is
 * held here.
 *
 * Idleness is the same in both modes: time spent waiting for input, counted
 * from the moment the worker starts waiting (time spent waiting for the
 * client to take its echo is the write timeout's business).
 *
 * splice() stops at the urgent mark and cannot pass it (it then reports
 * EAGAIN, or an end of stream after a half-close); urgent data arrives
 * inline (SO_OOBINLINE, set on the listener), so splice mode hands over to
 * recv(), which can, when poll() reports POLLPRI or splice() reports an end.
 *
 * The cut (SIGTERM) must end any wait, whenever it comes. Its handler sets a
 * flag and gives the socket a tiny receive timeout, so a recv() that was
 * about to block returns at once; every other wait is a ppoll() with SIGTERM
 * blocked until ppoll() itself unblocks it atomically. Splice mode keeps
 * SIGTERM blocked throughout (all its waits are ppoll()s); copy mode blocks
 * it only around a wait for write space, its slow path. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "util.h"
#include "worker.h"

static const char *const reason_names[_CLOSE_REASON_MAX] = {
        [CLOSE_NONE] = "none",
        [CLOSE_CLIENT] = "client-closed",
        [CLOSE_RESET] = "reset",
        [CLOSE_IDLE] = "idle-timeout",
        [CLOSE_WRITE_TIMEOUT] = "write-timeout",
        [CLOSE_SESSION_TIME] = "session-time",
        [CLOSE_SESSION_BYTES] = "session-bytes",
        [CLOSE_SHUTDOWN] = "shutdown",
        [CLOSE_ERROR] = "error",
};

const char *close_reason_name(enum close_reason r) {
        if ((unsigned) r >= _CLOSE_REASON_MAX)
                return "unknown";
        return reason_names[r];
}

/* Lingering close: how long a client that does not close gets to take what
 * was echoed when write_timeout is 0, and how often the worker looks whether
 * it has (the kernel raises no event when the client acknowledges data). */
#define LINGER_FALLBACK_USEC (30 * USEC_PER_SEC)
#define LINGER_TICK_MIN_USEC (1 * USEC_PER_MSEC)
#define LINGER_TICK_MAX_USEC (100 * USEC_PER_MSEC)

static volatile sig_atomic_t cut_requested;
static volatile sig_atomic_t cut_fd = -1;

static void on_sigterm(int sig) {
        struct timeval tv = { .tv_sec = 0, .tv_usec = 1 };
        int saved = errno;

        (void) sig;
        cut_requested = 1;
        /* setsockopt() is async-signal-safe (POSIX); a recv() about to block
         * now returns at once. */
        if (cut_fd >= 0)
                (void) setsockopt(cut_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        errno = saved;
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

struct session {
        int fd;
        const struct worker_limits *lim;
        struct worker_stats *st;
        uint64_t session_end;   /* UINT64_MAX: none */
        uint64_t idle_end;      /* when the current wait for input times out (UINT64_MAX: never) */
        uint64_t rcv_timeout;   /* usec currently set as SO_RCVTIMEO (UINT64_MAX: none) */
        int pipe[2];            /* splice mode when pipe[0] >= 0; the socket is then non-blocking */
        bool cut_blocked;       /* SIGTERM blocked; wait_mask is the mask ppoll() waits with */
        sigset_t wait_mask;
};

static enum close_reason io_error(int err, struct worker_stats *st) {
        if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ECONNABORTED)
                return CLOSE_RESET;
        st->error = err;
        return CLOSE_ERROR;
}

static uint64_t after(uint64_t from, uint32_t ms) {
        return ms ? from + (uint64_t) ms * USEC_PER_MSEC : UINT64_MAX;
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

static bool session_over(const struct session *s) {
        return s->session_end != UINT64_MAX && now_usec(CLOCK_MONOTONIC) >= s->session_end;
}

static void block_cut(struct session *s) {
        sigset_t term;

        if (s->cut_blocked)
                return;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        (void) sigprocmask(SIG_BLOCK, &term, &s->wait_mask);
        sigdelset(&s->wait_mask, SIGTERM);
        s->cut_blocked = true;
}

static void unblock_cut(struct session *s) {
        if (!s->cut_blocked)
                return;
        (void) sigprocmask(SIG_SETMASK, &s->wait_mask, NULL);
        s->cut_blocked = false;
}

/* The reason a wait for input has run out, or CLOSE_NONE. */
static enum close_reason receive_expired(const struct session *s, uint64_t now) {
        if (now >= s->session_end)
                return CLOSE_SESSION_TIME;
        if (now >= s->idle_end)
                return CLOSE_IDLE;
        return CLOSE_NONE;
}

/* Sets SO_RCVTIMEO to what is left until the idle or the session deadline,
 * whichever is nearer; a system call only when the value changes (with the
 * idle deadline nearer, it is the same value every time). */
static int arm_receive(struct session *s, uint64_t now) {
        uint64_t until = min_u64(s->idle_end, s->session_end);
        uint64_t usec = until == UINT64_MAX ? UINT64_MAX : until - now;

        if (usec != s->rcv_timeout) {
                struct timeval tv = usec_to_timeval(usec);
                if (setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                        return negative_errno();
                s->rcv_timeout = usec;
        }
        return 0;
}

/* Waits for `events` until `deadline` (or the end of the session, or the
 * cut). Returns CLOSE_NONE when ready (with the events in *revents when
 * asked), or the close reason for what ended the wait. */
static enum close_reason wait_for(struct session *s, short events, uint64_t deadline,
                                  enum close_reason on_timeout, short *revents) {
        uint64_t until = min_u64(deadline, s->session_end);
        bool was_blocked = s->cut_blocked;
        enum close_reason r = CLOSE_NONE;

        block_cut(s);
        for (;;) {
                struct pollfd p = { .fd = s->fd, .events = events };
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct timespec ts;
                int n;

                if (cut_requested) {
                        r = CLOSE_SHUTDOWN;
                        break;
                }
                if (until != UINT64_MAX && now >= until) {
                        r = until == s->session_end ? CLOSE_SESSION_TIME : on_timeout;
                        break;
                }
                n = ppoll(&p, 1, usec_to_timespec(until == UINT64_MAX ? UINT64_MAX : until - now, &ts),
                          &s->wait_mask);
                if (n > 0) {
                        if (revents)
                                *revents = p.revents;
                        break;
                }
                if (n < 0 && errno != EINTR) {
                        r = io_error(errno, s->st);
                        break;
                }
        }
        if (!was_blocked)
                unblock_cut(s);
        return r;
}

/* Sends `len` bytes back: from buf, or in splice mode from the pipe.
 * Returns CLOSE_NONE or a close reason. */
static enum close_reason send_back(struct session *s, const char *buf, size_t len) {
        uint64_t stalled_until = UINT64_MAX;

        while (len > 0) {
                ssize_t n = s->pipe[0] >= 0
                        ? splice(s->pipe[0], NULL, s->fd, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                        : send(s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n > 0) {
                        s->st->bytes_out += (uint64_t) n;
                        buf += n;
                        len -= (size_t) n;
                        stalled_until = UINT64_MAX;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == 0 || errno != EAGAIN)
                        return io_error(n < 0 ? errno : EIO, s->st);
                if (stalled_until == UINT64_MAX) /* the write timeout counts time without progress */
                        stalled_until = after(now_usec(CLOCK_MONOTONIC), s->lim->write_timeout_ms);
                enum close_reason r = wait_for(s, POLLOUT, stalled_until, CLOSE_WRITE_TIMEOUT, NULL);
                if (r != CLOSE_NONE)
                        return r;
        }
        return CLOSE_NONE;
}

static void start_splicing(struct session *s) {
        int flags = fcntl(s->fd, F_GETFL);

        if (flags < 0 || pipe2(s->pipe, O_CLOEXEC) < 0) {
                s->pipe[0] = s->pipe[1] = -1;
                return;
        }
        if (fcntl(s->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                s->pipe[0] = safe_close(s->pipe[0]);
                s->pipe[1] = safe_close(s->pipe[1]);
                return;
        }
        /* A pipe as large as the buffer, so one splice moves as much as one
         * read would; the kernel may grant less (pipe-max-size), which only
         * costs more rounds. */
        (void) fcntl(s->pipe[1], F_SETPIPE_SZ, (int) s->lim->buffer_size);
        block_cut(s); /* every wait is a ppoll() from now on */
}

static void stop_splicing(struct session *s) {
        int flags;

        if (s->pipe[0] < 0)
                return;
        s->pipe[0] = safe_close(s->pipe[0]);
        s->pipe[1] = safe_close(s->pipe[1]);
        flags = fcntl(s->fd, F_GETFL);
        if (flags >= 0)
                (void) fcntl(s->fd, F_SETFL, flags & ~O_NONBLOCK);
        unblock_cut(s);
}

/* Receives up to `want` bytes into the buffer or the pipe. Returns the
 * count, 0 at the client's end of stream, or a close reason negated (every
 * reason but CLOSE_NONE is positive). */
static ssize_t receive(struct session *s, char *buf, size_t want) {
        s->idle_end = after(now_usec(CLOCK_MONOTONIC), s->lim->idle_timeout_ms);
        for (;;) {
                enum close_reason r;
                ssize_t n;

                if (s->pipe[0] >= 0) {
                        short ev = 0;

                        n = splice(s->fd, NULL, s->pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                        if (n < 0 && errno == EAGAIN) {
                                r = wait_for(s, POLLIN | POLLPRI, s->idle_end, CLOSE_IDLE, &ev);
                                if (r != CLOSE_NONE)
                                        return -(ssize_t) r;
                                if (ev & POLLPRI)
                                        stop_splicing(s); /* urgent data ahead */
                                continue;
                        }
                        if (n == 0 || (n < 0 && (errno == EINVAL || errno == ENOSYS))) {
                                /* An end, or the urgent mark after a half-close; or
                                 * not for this socket: recv() decides, and copies. */
                                stop_splicing(s);
                                continue;
                        }
                } else {
                        uint64_t now = now_usec(CLOCK_MONOTONIC);
                        int e = arm_receive(s, now);

                        if (e < 0)
                                return -(ssize_t) io_error(-e, s->st);
                        /* After arm_receive(): the handler's timeout must be the last one set. */
                        if (cut_requested)
                                return -(ssize_t) CLOSE_SHUTDOWN;
                        n = recv(s->fd, buf, want, 0);
                        if (n < 0 && errno == EAGAIN) {
                                /* SO_RCVTIMEO ran out, or was clamped, or the cut shortened it. */
                                r = receive_expired(s, now_usec(CLOCK_MONOTONIC));
                                if (r != CLOSE_NONE)
                                        return -(ssize_t) r;
                                continue;
                        }
                }
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -(ssize_t) io_error(errno, s->st);
                if (cut_requested)
                        return -(ssize_t) CLOSE_SHUTDOWN;
        }
}

static enum close_reason echo_loop(struct session *s, char *buf) {
        const struct worker_limits *lim = s->lim;

        for (;;) {
                size_t want = lim->buffer_size;
                enum close_reason r;
                ssize_t n;

                /* A client that keeps the pipe full never lets a timeout
                 * expire, so the cut and the session limit are checked on
                 * every round. */
                if (cut_requested)
                        return CLOSE_SHUTDOWN;
                if (session_over(s))
                        return CLOSE_SESSION_TIME;
                if (lim->max_session_bytes) {
                        uint64_t left = lim->max_session_bytes - s->st->bytes_in;
                        if (left == 0)
                                return CLOSE_SESSION_BYTES;
                        if (left < want)
                                want = (size_t) left;
                }
                n = receive(s, buf, want);
                if (n == 0)
                        return CLOSE_CLIENT; /* half-close: all that came was echoed */
                if (n < 0)
                        return (enum close_reason) -n;
                s->st->bytes_in += (uint64_t) n;
                r = send_back(s, buf, (size_t) n);
                if (r != CLOSE_NONE)
                        return r;
                if (s->pipe[0] < 0 && (size_t) n == lim->buffer_size)
                        start_splicing(s); /* a full buffer: bulk traffic */
        }
}

enum close_reason worker_echo(int fd, const struct worker_limits *lim, uint64_t start,
                              void *buf, struct worker_stats *st) {
        struct session s = {
                .fd = fd, .lim = lim, .st = st, .pipe = { -1, -1 }, .rcv_timeout = UINT64_MAX,
                .session_end = after(start, lim->max_session_time_ms),
        };
        int flags = fcntl(fd, F_GETFL);
        enum close_reason r;

        cut_fd = fd;
        /* Timeouts are the kernel's: the socket must block. */
        if (flags < 0 || ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0))
                r = io_error(errno, st);
        else
                r = echo_loop(&s, buf);
        safe_close(s.pipe[0]);
        safe_close(s.pipe[1]);
        unblock_cut(&s);
        st->reason = r;
        st->end_usec = now_usec(CLOCK_MONOTONIC);
        return r;
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
                if (cut_requested && !cut_seen) {
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
