/* worker: the echo loop over real loopback TCP, run in a child process so
 * the test can play the client; stats come back through shared memory. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "tcp-pair.h"
#include "util.h"
#include "worker.h"

static struct worker_stats *stats;

static const struct worker_limits base = {
        .buffer_size = 4096, .idle_timeout_ms = 5000, .write_timeout_ms = 5000,
        .max_session_time_ms = 20000, .max_session_bytes = 0,
};

/* Starts the worker on the server end; returns its pid and the client fd. */
static pid_t start(const struct worker_limits *lim, int *client) {
        int server;
        pid_t pid;

        tcp_pair(client, &server);
        memset(stats, 0, sizeof(*stats));
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                void *buf = malloc(lim->buffer_size);
                close(*client);
                enum close_reason r = worker_echo(server, lim, now_usec(CLOCK_MONOTONIC), buf, stats);
                worker_close(server, r);
                free(buf);
                _exit(0);
        }
        close(server);
        return pid;
}

static void finish(pid_t pid, enum close_reason expected) {
        int status;

        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (stats->reason != (int) expected)
                fprintf(stderr, "reason %s, expected %s\n", close_reason_name(stats->reason),
                        close_reason_name(expected));
        ASSERT_INT(stats->reason, ==, expected);
        ASSERT(stats->end_usec > 0);
}

/* Sends `len` pseudo-random bytes while reading the echo; checks every byte. */
static void pump(int fd, size_t len, bool half_close) {
        unsigned char out[8192], in[8192];
        size_t sent = 0, got = 0;
        uint32_t seed_out = 12345, seed_in = 12345;

        fcntl(fd, F_SETFL, O_NONBLOCK);
        while (got < len) {
                struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
                ASSERT(poll(&p, 1, 10000) == 1);
                if ((p.revents & POLLOUT) && sent < len) {
                        size_t n = len - sent < sizeof(out) ? len - sent : sizeof(out);
                        for (size_t i = 0; i < n; i++)
                                out[i] = (unsigned char) ((seed_out = seed_out * 1103515245 + 12345) >> 16);
                        ssize_t w = write(fd, out, n);
                        ASSERT(w > 0);
                        /* rewind the generator for bytes not written */
                        seed_out = 12345;
                        for (size_t i = 0; i < sent + (size_t) w; i++)
                                seed_out = seed_out * 1103515245 + 12345;
                        sent += (size_t) w;
                        if (sent == len && half_close)
                                ASSERT(shutdown(fd, SHUT_WR) == 0);
                }
                if (p.revents & POLLIN) {
                        ssize_t r = read(fd, in, sizeof(in));
                        ASSERT(r > 0);
                        for (ssize_t i = 0; i < r; i++)
                                ASSERT(in[i] == (unsigned char) ((seed_in = seed_in * 1103515245 + 12345) >> 16));
                        got += (size_t) r;
                }
        }
}

static ssize_t read_all_until_eof(int fd, int timeout_ms) {
        char buf[4096];
        ssize_t total = 0;

        fcntl(fd, F_SETFL, 0);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ASSERT(poll(&p, 1, timeout_ms) == 1);
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r <= 0)
                        return r < 0 ? -errno : total;
                total += r;
        }
}

static void test_echo_and_half_close(void) {
        int c;
        pid_t pid = start(&base, &c);

        pump(c, 3 * 1024 * 1024 + 17, true);
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 0); /* FIN after everything */
        finish(pid, CLOSE_CLIENT);
        ASSERT(stats->bytes_in == 3 * 1024 * 1024 + 17);
        ASSERT(stats->bytes_out == stats->bytes_in);
        close(c);
}

static void test_idle_timeout(void) {
        struct worker_limits lim = base;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int c;
        pid_t pid;

        lim.idle_timeout_ms = 150;
        pid = start(&lim, &c);
        pump(c, 100, false);  /* activity restarts the idle clock */
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 0);
        finish(pid, CLOSE_IDLE);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 >= 150 * USEC_PER_MSEC);
        ASSERT(stats->bytes_out == 100);
        close(c);
}

/* A full buffer switches the worker to splice(); the limits hold there too. */
static void test_idle_and_bytes_after_bulk(void) {
        struct worker_limits lim = base;
        int c;
        pid_t pid;

        lim.idle_timeout_ms = 150;
        pid = start(&lim, &c);
        pump(c, 10 * lim.buffer_size, false);
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 0);
        finish(pid, CLOSE_IDLE);
        ASSERT(stats->bytes_out == 10 * lim.buffer_size);
        close(c);

        lim = base;
        lim.max_session_bytes = 3 * lim.buffer_size + 10;
        pid = start(&lim, &c);
        pump(c, 3 * lim.buffer_size, false);
        char more[100] = { 0 };
        ASSERT(write(c, more, sizeof(more)) == sizeof(more));
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 10);
        finish(pid, CLOSE_SESSION_BYTES);
        close(c);
}

static void test_write_timeout(void) {
        struct worker_limits lim = base;
        char chunk[65536] = { 0 };
        int c, small = 4096;
        pid_t pid;

        lim.write_timeout_ms = 200;
        pid = start(&lim, &c);
        setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        fcntl(c, F_SETFL, O_NONBLOCK);
        /* Send and never read: the echo backs up until the worker gives up. */
        for (int i = 0; i < 2000; i++) {
                if (write(c, chunk, sizeof(chunk)) < 0 && errno != EAGAIN)
                        break;
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        ASSERT_INT(stats->reason, ==, CLOSE_WRITE_TIMEOUT);
                        close(c);
                        return;
                }
                usleep(5000);
        }
        finish(pid, CLOSE_WRITE_TIMEOUT);
        close(c);
}

static void test_session_time(void) {
        struct worker_limits lim = base;
        int c;
        pid_t pid;

        lim.max_session_time_ms = 200;
        pid = start(&lim, &c);
        /* Keep it busy past the limit: the limit holds without idle time. */
        uint64_t end = now_usec(CLOCK_MONOTONIC) + 400 * USEC_PER_MSEC;
        while (now_usec(CLOCK_MONOTONIC) < end) {
                char b[512] = { 1 };
                if (send(c, b, sizeof(b), MSG_NOSIGNAL) < 0)
                        break;
                if (recv(c, b, sizeof(b), 0) <= 0)
                        break;
        }
        finish(pid, CLOSE_SESSION_TIME);
        close(c);
}

static void test_session_bytes(void) {
        struct worker_limits lim = base;
        char buf[10000];
        int c;
        pid_t pid;

        lim.max_session_bytes = 1000;
        pid = start(&lim, &c);
        memset(buf, 'x', sizeof(buf));
        ASSERT(write(c, buf, 600) == 600);
        ASSERT(read(c, buf, sizeof(buf)) == 600);
        ASSERT(write(c, buf, 600) == 600);
        /* Exactly the allowance comes back, then the session ends. */
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 400);
        finish(pid, CLOSE_SESSION_BYTES);
        ASSERT(stats->bytes_in == 1000 && stats->bytes_out == 1000);
        close(c);
}

static void test_reset_is_normal_end(void) {
        struct linger l = { 1, 0 };
        int c;
        pid_t pid = start(&base, &c);

        pump(c, 1000, false);
        setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(c);
        finish(pid, CLOSE_RESET);
}

static void test_reset_while_writing(void) {
        struct linger l = { 1, 0 };
        char chunk[65536] = { 0 };
        int c, small = 4096;
        pid_t pid = start(&base, &c);

        setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        fcntl(c, F_SETFL, O_NONBLOCK);
        for (int i = 0; i < 20; i++)
                (void) write(c, chunk, sizeof(chunk));
        setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(c);
        /* No SIGPIPE death: the worker exits normally with "reset". */
        finish(pid, CLOSE_RESET);
}

int main(void) {
        stats = mmap(NULL, sizeof(*stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(stats != MAP_FAILED);
        signal(SIGPIPE, SIG_DFL); /* prove the worker does not rely on the caller ignoring it */
        RUN(test_echo_and_half_close);
        RUN(test_idle_timeout);
        RUN(test_idle_and_bytes_after_bulk);
        RUN(test_write_timeout);
        RUN(test_session_time);
        RUN(test_session_bytes);
        RUN(test_reset_is_normal_end);
        RUN(test_reset_while_writing);
        return 0;
}
