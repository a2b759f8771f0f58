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
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "util.h"
#include "worker-private.h"
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

static uint64_t after(uint64_t from, uint64_t usec) {
        return usec ? from + usec : UINT64_MAX;
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
        uint64_t usec = until == UINT64_MAX ? UINT64_MAX : until > now ? until - now : 0;

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

                if (worker_cut_requested) {
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
 * Returns CLOSE_NONE or a close reason. The write timeout counts time
 * without progress: a send that moves bytes, or, while waiting for write
 * space, the client acknowledging more (worker_client_took()). The kernel
 * reports write space only once a third of the send buffer is free, which
 * a slow but steady reader of a large buffer may take longer than
 * write_timeout to free: so the wait wakes every quarter of write_timeout
 * to look. The look costs one ioctl, in this stalled path only. */
static enum close_reason send_back(struct session *s, const char *buf, size_t len) {
        uint64_t timeout = s->lim->write_timeout_usec;
        uint64_t stalled_until = UINT64_MAX, queued = UINT64_MAX;

        while (len > 0) {
                ssize_t n = s->pipe[0] >= 0
                        ? splice(s->pipe[0], NULL, s->fd, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                        : send(s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                uint64_t now, wake;

                if (n > 0) {
                        s->st->bytes_out += (uint64_t) n;
                        buf += n;
                        len -= (size_t) n;
                        stalled_until = queued = UINT64_MAX;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == 0 || errno != EAGAIN)
                        return io_error(n < 0 ? errno : EIO, s->st);
                now = now_usec(CLOCK_MONOTONIC);
                if (stalled_until == UINT64_MAX) {
                        stalled_until = after(now, s->lim->write_timeout_usec);
                        if (timeout)
                                (void) worker_client_took(s->fd, &queued);
                }
                wake = timeout ? min_u64(stalled_until, now + wait_clamp(timeout / 4)) : UINT64_MAX;
                enum close_reason r = wait_for(s, POLLOUT, wake, CLOSE_WRITE_TIMEOUT, NULL);
                if (r == CLOSE_WRITE_TIMEOUT) { /* a wake-up, or the timeout */
                        now = now_usec(CLOCK_MONOTONIC);
                        if (worker_client_took(s->fd, &queued))
                                stalled_until = after(now, s->lim->write_timeout_usec);
                        else if (now >= stalled_until)
                                return r;
                } else if (r != CLOSE_NONE) {
                        return r;
                }
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

/* Receives up to `want` bytes into the buffer or the pipe. Returns
 * CLOSE_NONE with the count in *ret_n (0 at the client's end of stream), or
 * the reason to close. */
static enum close_reason receive(struct session *s, char *buf, size_t want, size_t *ret_n) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        s->idle_end = after(now, s->lim->idle_timeout_usec);
        for (;;) {
                enum close_reason r;
                ssize_t n;

                if (s->pipe[0] >= 0) {
                        short ev = 0;

                        n = splice(s->fd, NULL, s->pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                        if (n < 0 && errno == EAGAIN) {
                                r = wait_for(s, POLLIN | POLLPRI, s->idle_end, CLOSE_IDLE, &ev);
                                if (r != CLOSE_NONE)
                                        return r;
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
                        int e = arm_receive(s, now);

                        if (e < 0)
                                return io_error(-e, s->st);
                        /* After arm_receive(): the handler's timeout must be the last one set. */
                        if (worker_cut_requested)
                                return CLOSE_SHUTDOWN;
                        n = recv(s->fd, buf, want, 0);
                        if (n < 0 && errno == EAGAIN) {
                                /* SO_RCVTIMEO ran out, or was clamped, or the cut shortened it. */
                                now = now_usec(CLOCK_MONOTONIC);
                                r = receive_expired(s, now);
                                if (r != CLOSE_NONE)
                                        return r;
                                continue;
                        }
                }
                if (n >= 0) {
                        *ret_n = (size_t) n;
                        return CLOSE_NONE;
                }
                if (errno != EINTR)
                        return io_error(errno, s->st);
                if (worker_cut_requested)
                        return CLOSE_SHUTDOWN;
                now = now_usec(CLOCK_MONOTONIC);
        }
}

static enum close_reason echo_loop(struct session *s, char *buf) {
        const struct worker_limits *lim = s->lim;

        for (;;) {
                size_t want = lim->buffer_size;
                enum close_reason r;
                size_t n;

                /* A client that keeps the pipe full never lets a timeout
                 * expire, so the cut and the session limit are checked on
                 * every round. */
                if (worker_cut_came(s->cut_blocked))
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
                r = receive(s, buf, want, &n);
                if (r != CLOSE_NONE)
                        return r;
                if (n == 0)
                        return CLOSE_CLIENT; /* half-close: all that came was echoed */
                s->st->bytes_in += n;
                r = send_back(s, buf, n);
                if (r != CLOSE_NONE)
                        return r;
                if (s->pipe[0] < 0 && n == lim->buffer_size)
                        start_splicing(s); /* a full buffer: bulk traffic */
        }
}

enum close_reason worker_echo(int fd, const struct worker_limits *lim, uint64_t start,
                              void *buf, struct worker_stats *st) {
        struct session s = {
                .fd = fd, .lim = lim, .st = st, .pipe = { -1, -1 }, .rcv_timeout = UINT64_MAX,
                .session_end = after(start, lim->max_session_time_usec),
        };
        int flags = fcntl(fd, F_GETFL);
        enum close_reason r;

        worker_cut_fd = fd;
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
