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
 * held here. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
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

struct session {
        int fd;
        const struct worker_limits *lim;
        struct worker_stats *st;
        uint64_t session_end;   /* UINT64_MAX: none */
        uint64_t rcv_timeout;   /* usec currently set as SO_RCVTIMEO (0: none) */
        uint64_t idle_end;      /* splice mode: when the idle timeout expires */
        int pipe[2];            /* splice mode when pipe[0] >= 0; the socket is then non-blocking */
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

static bool session_over(const struct session *s) {
        return s->session_end != UINT64_MAX && now_usec(CLOCK_MONOTONIC) >= s->session_end;
}

/* Sets SO_RCVTIMEO to the idle timeout or to what is left of the session,
 * whichever is shorter; a system call only when the value changes. Returns
 * -errno, or 1 when the session limit is the nearer one (0 otherwise). */
static int arm_receive(struct session *s) {
        uint64_t idle = s->lim->idle_timeout_ms ? (uint64_t) s->lim->idle_timeout_ms * USEC_PER_MSEC : UINT64_MAX;
        uint64_t left = UINT64_MAX, usec;
        struct timeval tv;

        if (s->session_end != UINT64_MAX) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                left = s->session_end > now ? s->session_end - now : 1;
        }
        usec = left < idle ? left : idle;
        if (usec == UINT64_MAX)
                usec = 0; /* no limit: block for as long as it takes */
        if (usec != s->rcv_timeout) {
                tv = (struct timeval) { .tv_sec = (time_t) (usec / USEC_PER_SEC),
                                        .tv_usec = (suseconds_t) (usec % USEC_PER_SEC) };
                if (setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                        return negative_errno();
                s->rcv_timeout = usec;
        }
        return left < idle;
}

/* Waits for `events` until `deadline` (or the end of the session). Returns
 * CLOSE_NONE when ready, or the close reason for the deadline that passed. */
static enum close_reason wait_for(struct session *s, short events, uint64_t deadline, enum close_reason on_timeout) {
        uint64_t until = deadline < s->session_end ? deadline : s->session_end;

        for (;;) {
                struct pollfd p = { .fd = s->fd, .events = events };
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int r, timeout = -1;

                if (until != UINT64_MAX) {
                        if (now >= until)
                                return until == s->session_end ? CLOSE_SESSION_TIME : on_timeout;
                        timeout = (int) ((until - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
                }
                r = poll(&p, 1, timeout);
                if (r > 0)
                        return CLOSE_NONE;
                if (r < 0 && errno != EINTR)
                        return io_error(errno, s->st);
        }
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
                enum close_reason r = wait_for(s, POLLOUT, stalled_until, CLOSE_WRITE_TIMEOUT);
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
        s->idle_end = after(now_usec(CLOCK_MONOTONIC), s->lim->idle_timeout_ms);
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
}

/* Receives up to `want` bytes into the buffer or the pipe. Returns the
 * count, 0 at the client's end of stream, or a close reason negated (every
 * reason but CLOSE_NONE is positive). */
static ssize_t receive(struct session *s, char *buf, size_t want) {
        for (;;) {
                ssize_t n;

                if (s->pipe[0] >= 0) {
                        n = splice(s->fd, NULL, s->pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                        if (n < 0 && errno == EAGAIN) {
                                enum close_reason r = wait_for(s, POLLIN, s->idle_end, CLOSE_IDLE);
                                if (r != CLOSE_NONE)
                                        return -(ssize_t) r;
                                continue;
                        }
                        if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                                stop_splicing(s); /* not for this socket: copy instead */
                                continue;
                        }
                        if (n > 0)
                                s->idle_end = after(now_usec(CLOCK_MONOTONIC), s->lim->idle_timeout_ms);
                } else {
                        int nearer = arm_receive(s);
                        if (nearer < 0)
                                return -(ssize_t) io_error(-nearer, s->st);
                        n = recv(s->fd, buf, want, 0);
                        if (n < 0 && errno == EAGAIN) /* SO_RCVTIMEO expired */
                                return -(ssize_t) (nearer ? CLOSE_SESSION_TIME : CLOSE_IDLE);
                }
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -(ssize_t) io_error(errno, s->st);
        }
}

static enum close_reason echo_loop(struct session *s, char *buf) {
        const struct worker_limits *lim = s->lim;

        for (;;) {
                size_t want = lim->buffer_size;
                enum close_reason r;
                ssize_t n;

                /* A client that keeps the pipe full never lets a timeout
                 * expire, so the session limit is checked on every round. */
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
                .fd = fd, .lim = lim, .st = st, .pipe = { -1, -1 },
                .session_end = lim->max_session_time_ms
                        ? start + (uint64_t) lim->max_session_time_ms * USEC_PER_MSEC : UINT64_MAX,
        };
        int flags = fcntl(fd, F_GETFL);
        enum close_reason r;

        /* Timeouts are the kernel's: the socket must block. */
        if (flags < 0 || ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0))
                r = io_error(errno, st);
        else
                r = echo_loop(&s, buf);
        safe_close(s.pipe[0]);
        safe_close(s.pipe[1]);
        st->reason = r;
        st->end_usec = now_usec(CLOCK_MONOTONIC);
        return r;
}

void worker_close(int fd, enum close_reason reason) {
        if (reason == CLOSE_WRITE_TIMEOUT || reason == CLOSE_RESET || reason == CLOSE_ERROR) {
                struct linger l = { .l_onoff = 1, .l_linger = 0 };
                (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        } else {
                (void) shutdown(fd, SHUT_WR);
        }
        safe_close(fd);
}
