/* See worker.h. One buffer, strictly alternating: read a chunk, write all of
 * it back, read again. That keeps ordering trivial and bounds the memory a
 * client can make us hold to one buffer. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>

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

static uint64_t deadline_after(uint64_t from, uint32_t ms) {
        return ms ? from + (uint64_t) ms * USEC_PER_MSEC : UINT64_MAX;
}

/* Waits for `events` until `deadline` (monotonic usec, UINT64_MAX: none).
 * Returns 1 when ready, 0 on timeout, -errno on failure. */
static int wait_for(int fd, short events, uint64_t deadline) {
        for (;;) {
                struct pollfd p = { .fd = fd, .events = events };
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int timeout, r;

                if (deadline != UINT64_MAX && now >= deadline)
                        return 0;
                if (deadline == UINT64_MAX)
                        timeout = -1;
                else
                        timeout = (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
                r = poll(&p, 1, timeout);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return negative_errno();
                if (r > 0)
                        return 1;
        }
}

static enum close_reason io_error(int err, struct worker_stats *st) {
        if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ECONNABORTED)
                return CLOSE_RESET;
        st->error = err;
        return CLOSE_ERROR;
}

static enum close_reason echo_loop(int fd, const struct worker_limits *lim, uint64_t start,
                                   char *buf, struct worker_stats *st) {
        uint64_t session_end = deadline_after(start, lim->max_session_time_ms);
        uint64_t idle_end = deadline_after(start, lim->idle_timeout_ms);
        uint64_t write_end = UINT64_MAX;
        size_t pending = 0, off = 0;

        for (;;) {
                /* A client that keeps the pipe full never lets poll() time
                 * out, so the session limit is checked on every round too. */
                if (session_end != UINT64_MAX && now_usec(CLOCK_MONOTONIC) >= session_end)
                        return CLOSE_SESSION_TIME;
                if (pending == 0) {
                        size_t want = lim->buffer_size;
                        ssize_t n;

                        if (lim->max_session_bytes) {
                                uint64_t left = lim->max_session_bytes - st->bytes_in;
                                if (left == 0)
                                        return CLOSE_SESSION_BYTES;
                                if (left < want)
                                        want = (size_t) left;
                        }
                        n = recv(fd, buf, want, 0);
                        if (n > 0) {
                                st->bytes_in += (uint64_t) n;
                                pending = (size_t) n;
                                off = 0;
                                idle_end = deadline_after(now_usec(CLOCK_MONOTONIC), lim->idle_timeout_ms);
                                continue;
                        }
                        if (n == 0)
                                return CLOSE_CLIENT; /* half-close: all received was echoed */
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return io_error(errno, st);

                        uint64_t until = idle_end < session_end ? idle_end : session_end;
                        int r = wait_for(fd, POLLIN, until);
                        if (r < 0)
                                return io_error(-r, st);
                        if (r == 0)
                                return until == session_end ? CLOSE_SESSION_TIME : CLOSE_IDLE;
                } else {
                        ssize_t n = send(fd, buf + off, pending, MSG_NOSIGNAL);

                        if (n > 0) {
                                st->bytes_out += (uint64_t) n;
                                off += (size_t) n;
                                pending -= (size_t) n;
                                write_end = UINT64_MAX;
                                continue;
                        }
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && errno != EAGAIN)
                                return io_error(errno, st);

                        /* The write timeout measures time without progress. */
                        if (write_end == UINT64_MAX)
                                write_end = deadline_after(now_usec(CLOCK_MONOTONIC), lim->write_timeout_ms);
                        uint64_t until = write_end < session_end ? write_end : session_end;
                        int r = wait_for(fd, POLLOUT, until);
                        if (r < 0)
                                return io_error(-r, st);
                        if (r == 0)
                                return until == session_end ? CLOSE_SESSION_TIME : CLOSE_WRITE_TIMEOUT;
                }
        }
}

enum close_reason worker_echo(int fd, const struct worker_limits *lim, uint64_t start,
                              void *buf, struct worker_stats *st) {
        enum close_reason r = echo_loop(fd, lim, start, buf, st);

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
