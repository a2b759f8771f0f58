/* worker: the echo loop over real loopback TCP, run in a child process so
 * the test can play the client; stats come back through shared memory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <dirent.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tcp-pair.h"
#include "util.h"
#include "worker.h"

static struct worker_stats *stats;

static const struct worker_limits base = {
        .buffer_size = 4096, .idle_timeout_usec = 5000 * USEC_PER_MSEC, .write_timeout_usec = 5000 * USEC_PER_MSEC,
        .max_session_time_usec = 20000 * USEC_PER_MSEC, .max_session_bytes = 0,
};

/* The worker's socket as the parent sees it, when a test keeps it (spy):
 * its queues can be read from outside (FIONREAD, SIOCOUTQ). */
static bool keep_spy;
static int spy = -1;
static int server_sndbuf; /* when set, the worker's SO_SNDBUF */
static int client_rcvbuf; /* when set, the client's SO_RCVBUF */

/* Starts the worker on the server end; returns its pid and the client fd.
 * The server socket has urgent data inline, as the daemon's listener
 * hands it on, and the worker's signal dispositions. */
static pid_t start(const struct worker_limits *lim, int *client) {
        int server;
        pid_t pid;

        tcp_pair_rcvbuf(client, &server, client_rcvbuf);
        ASSERT(setsockopt(server, SOL_SOCKET, SO_OOBINLINE, &(int) { 1 }, sizeof(int)) == 0);
        ASSERT(setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int)) == 0);
        if (server_sndbuf)
                ASSERT(setsockopt(server, SOL_SOCKET, SO_SNDBUF, &server_sndbuf, sizeof(int)) == 0);
        memset(stats, 0, sizeof(*stats));
        /* As the daemon does: SIGTERM held back until the worker's handler
         * is in place. */
        sigset_t term, old;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, &old);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                void *buf = malloc(lim->buffer_size);
                close(*client);
                worker_set_signals();
                sigprocmask(SIG_SETMASK, &old, NULL);
                uint64_t start = now_usec(CLOCK_MONOTONIC);
                worker_echo(server, lim, start, buf, stats);
                worker_close(server, lim, start, buf, stats);
                free(buf);
                _exit(0);
        }
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (keep_spy)
                spy = server;
        else
                close(server);
        return pid;
}

/* As start(), for a client that sends far more than it reads: a small
 * receive buffer (set before it connects), and non-blocking. */
static pid_t start_slow_reader(const struct worker_limits *lim, int *client) {
        pid_t pid;

        client_rcvbuf = 4096;
        pid = start(lim, client);
        client_rcvbuf = 0;
        ASSERT(fcntl(*client, F_SETFL, O_NONBLOCK) == 0);
        return pid;
}

/* A client with a small receive buffer that sends n bytes, all of which
 * the worker's large send buffer takes, then half-closes: its echo waits
 * on the client, which does not read yet. */
static pid_t start_half_closed(const struct worker_limits *lim, int *client, const char *buf, size_t n) {
        pid_t pid;

        client_rcvbuf = 4096;
        server_sndbuf = 1 << 20;
        pid = start(lim, client);
        client_rcvbuf = server_sndbuf = 0;
        ASSERT(write(*client, buf, n) == (ssize_t) n);
        ASSERT(shutdown(*client, SHUT_WR) == 0);
        return pid;
}

static void finish(pid_t pid, enum close_reason expected) {
        int status;

        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (stats->reason != expected)
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

/* Reads until EOF or reset; returns the byte count, *reset set by a reset. */
/* Offers n bytes on the client's non-blocking socket: a full buffer is
 * what the callers provoke, and a worker that already closed may answer with
 * a reset; anything else is a failure of the test itself. */
static void offer(int fd, const char *b, size_t n) {
        if (write(fd, b, n) < 0)
                ASSERT(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
}

static size_t read_rest(int fd, bool *reset) {
        char buf[65536];
        size_t total = 0;

        fcntl(fd, F_SETFL, 0);
        *reset = false;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ASSERT(poll(&p, 1, 10000) == 1);
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r < 0 && errno == ECONNRESET)
                        *reset = true;
                if (r <= 0)
                        return total;
                total += (size_t) r;
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

        lim.idle_timeout_usec = 150 * USEC_PER_MSEC;
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

        lim.idle_timeout_usec = 150 * USEC_PER_MSEC;
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
        int c;
        pid_t pid;

        lim.write_timeout_usec = 200 * USEC_PER_MSEC;
        pid = start_slow_reader(&lim, &c);
        /* Send and never read: the echo backs up until the worker gives up. */
        bool ended = false, reset;
        for (int i = 0; i < 2000 && !ended; i++) {
                if (write(c, chunk, sizeof(chunk)) < 0 && errno != EAGAIN)
                        break;
                ended = waitpid(pid, NULL, WNOHANG) == pid;
                if (!ended)
                        usleep(5000);
        }
        if (!ended)
                finish(pid, CLOSE_WRITE_TIMEOUT);
        ASSERT_INT(stats->reason, ==, CLOSE_WRITE_TIMEOUT);
        /* The reset dropped what the client had not taken: not counted. */
        size_t got = read_rest(c, &reset);
        printf("   write-timeout: record %" PRIu64 " bytes out, client could read %zu\n", stats->bytes_out, got);
        ASSERT(got == stats->bytes_out);
        close(c);
}

static void test_session_time(void) {
        struct worker_limits lim = base;
        int c;
        pid_t pid;

        lim.max_session_time_usec = 200 * USEC_PER_MSEC;
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
                offer(c, chunk, sizeof(chunk));
        setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(c);
        /* No SIGPIPE death: the worker exits normally with "reset". */
        finish(pid, CLOSE_RESET);
}

/* Waits (bounded) for the worker to end; false when it is still running. */
static bool ended_within(pid_t pid, int ms) {
        for (int i = 0; i < ms; i++) {
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return true;
                usleep(1000);
        }
        return false;
}

/* The pipes among pid's descriptors (splice mode makes one). */
static int count_pipes(pid_t pid) {
        char path[64], link[384], target[64];
        struct dirent *e;
        int n = 0;
        DIR *d;

        /* valgrind parks its own descriptors (a pipe among them, made anew
         * in a forked child) just below the hard limit, where a program's
         * never land: they are not the worker's. */
        struct rlimit rl;
        ASSERT(getrlimit(RLIMIT_NOFILE, &rl) == 0);
        long parked = rl.rlim_max == RLIM_INFINITY ? LONG_MAX : (long) rl.rlim_max - 16;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        d = opendir(path);
        if (!d)
                return -1;
        while ((e = readdir(d))) {
                ssize_t len;
                if (e->d_name[0] == '.' || atol(e->d_name) >= parked)
                        continue;
                snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
                len = readlink(link, target, sizeof(target) - 1);
                if (len > 0) {
                        target[len] = 0;
                        n += strncmp(target, "pipe:", 5) == 0;
                }
        }
        closedir(d);
        return n;
}

/* Puts the worker into splice mode: a read that fills the whole buffer.
 * The pipe it then makes shows as two more pipe descriptors. */
static void enter_splice_mode(pid_t pid, int c, size_t buffer_size) {
        int before = count_pipes(pid);

        for (int i = 0; i < 50 && count_pipes(pid) == before; i++)
                pump(c, 4 * buffer_size, false);
        ASSERT_INT(count_pipes(pid), ==, before + 2);
        fcntl(c, F_SETFL, 0); /* pump() left it non-blocking */
}

/* Every conversion of a 64-bit time into a kernel timeout is clamped; the
 * old one, (int) of the milliseconds, made 30 days a negative poll()
 * timeout, which waits forever. */
static void test_wait_clamps(void) {
        uint64_t int_max_ms = (uint64_t) INT_MAX * USEC_PER_MSEC;
        struct timespec ts;
        struct timeval tv;

        ASSERT_INT(usec_to_timeout_ms(0), ==, 0);
        ASSERT_INT(usec_to_timeout_ms(1), ==, 1);           /* rounded up: never early */
        ASSERT_INT(usec_to_timeout_ms(1000), ==, 1);
        ASSERT_INT(usec_to_timeout_ms(1001), ==, 2);
        ASSERT_INT(usec_to_timeout_ms(WAIT_MAX_USEC), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(WAIT_MAX_USEC + 1), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(int_max_ms), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(int_max_ms + 1), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(30 * 86400 * USEC_PER_SEC), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(UINT64_MAX - 1), ==, 86400000);
        ASSERT_INT(usec_to_timeout_ms(UINT64_MAX), ==, -1);  /* no deadline */

        ASSERT(usec_to_timespec(UINT64_MAX, &ts) == NULL);
        ASSERT(usec_to_timespec(0, &ts) == &ts && ts.tv_sec == 0 && ts.tv_nsec == 0);
        ASSERT(usec_to_timespec(1, &ts) && ts.tv_sec == 0 && ts.tv_nsec == 1000);
        ASSERT(usec_to_timespec(30 * 86400 * USEC_PER_SEC, &ts) && ts.tv_sec == 86400 && ts.tv_nsec == 0);
        ASSERT(usec_to_timespec(UINT64_MAX - 1, &ts) && ts.tv_sec == 86400);

        tv = usec_to_timeval(UINT64_MAX);
        ASSERT(tv.tv_sec == 0 && tv.tv_usec == 0);          /* the kernel's "none" */
        tv = usec_to_timeval(0);
        ASSERT(tv.tv_sec == 0 && tv.tv_usec == 1);          /* never "none" by accident */
        tv = usec_to_timeval(1500000);
        ASSERT(tv.tv_sec == 1 && tv.tv_usec == 500000);
        tv = usec_to_timeval(int_max_ms + 1);
        ASSERT(tv.tv_sec == 86400 && tv.tv_usec == 0);
        tv = usec_to_timeval(UINT64_MAX - 1);
        ASSERT(tv.tv_sec == 86400 && tv.tv_usec == 0);
}

/* max_session_time near its 30-day maximum with no write or idle timeout:
 * the worker's waits must still be bounded. A client that does not read
 * leaves the worker waiting for write space; the wait must not be forever
 * (which the old conversion made it), so a cut still ends it. */
static void test_long_session_limit_waits(void) {
        struct worker_limits lim = base;
        char chunk[65536] = { 0 };
        int c;
        pid_t pid;

        lim.max_session_time_usec = 30 * 86400 * USEC_PER_SEC;
        lim.write_timeout_usec = 0;
        lim.idle_timeout_usec = 0;
        pid = start_slow_reader(&lim, &c);
        for (int i = 0; i < 400; i++)
                offer(c, chunk, sizeof(chunk));
        /* What the worker blocks in, seen from outside: a poll() with a
         * timeout of at least zero, or a ppoll() with a timeout at all. */
        int waits = 0;
        for (int i = 0; i < 5000 && !waits; i++) {
                char path[64], line[512] = "";
                long nr = -1;
                unsigned long long a[3] = { 0 };
                snprintf(path, sizeof(path), "/proc/%d/syscall", (int) pid);
                FILE *f = fopen(path, "r");
                if (!f)
                        break; /* not readable here: the session limit check below still runs */
                if (fgets(line, sizeof(line), f) &&
                    sscanf(line, "%ld %llx %llx %llx", &nr, &a[0], &a[1], &a[2]) == 4) {
#ifdef SYS_poll
                        if (nr == SYS_poll) {
                                printf("   30-day session, no write timeout: poll() timeout %d ms\n", (int) a[2]);
                                ASSERT_INT((int) a[2], >=, 0);
                                waits = 1;
                        }
#endif
                        if (nr == SYS_ppoll) {
                                printf("   30-day session, no write timeout: ppoll() with a timeout: %s\n",
                                       a[2] ? "yes" : "no");
                                ASSERT(a[2] != 0);
                                waits = 1;
                        }
                }
                fclose(f);
                if (!waits)
                        usleep(1000);
        }
        ASSERT(!ended_within(pid, 100));
        kill(pid, SIGTERM);
        ASSERT(ended_within(pid, 5000));
        ASSERT_INT(stats->reason, ==, CLOSE_SHUTDOWN);
        close(c);
}

/* Signals meant for the daemon (drain, reload, summary) reach workers too
 * when sent to the process group; they must not end the session. */
static void test_daemon_signals_ignored(void) {
        int sigs[] = { SIGINT, SIGHUP, SIGUSR1, SIGPIPE };
        int c;
        pid_t pid = start(&base, &c);

        pump(c, 100, false);
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                ASSERT(kill(pid, sigs[i]) == 0);
                pump(c, 1000, false);
        }
        ASSERT(shutdown(c, SHUT_WR) == 0);
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 0);
        finish(pid, CLOSE_CLIENT);
        close(c);
}

/* SIGTERM (the cut) ends the session at any moment, whatever the worker
 * waits for, even when it comes just before the worker blocks: timeouts
 * are a minute, so a missed cut shows. The client then reads exactly what
 * the record counts, and an orderly end. */
static void test_sigterm_cut_anywhere(void) {
        struct worker_limits lim = base;
        uint32_t seed = 7;
        int misses = 0;

        lim.idle_timeout_usec = lim.write_timeout_usec = 60000 * USEC_PER_MSEC;
        lim.max_session_time_usec = 0;
        for (int i = 0; i < 60; i++) {
                char msg[512] = { 'c' };
                bool reset;
                int c;
                pid_t pid = start(&lim, &c);

                if (i >= 40)
                        enter_splice_mode(pid, c, lim.buffer_size);
                for (int k = 0; k < i % 5; k++) {
                        ASSERT(write(c, msg, sizeof(msg)) == sizeof(msg));
                        ASSERT(read(c, msg, sizeof(msg)) > 0);
                }
                if (i % 2)
                        ASSERT(write(c, msg, sizeof(msg)) == sizeof(msg)); /* cut mid-echo */
                seed = seed * 1103515245 + 12345;
                usleep((seed >> 16) % 300);
                kill(pid, SIGTERM);
                if (!ended_within(pid, 3000)) {
                        misses++;
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                        close(c);
                        continue;
                }
                ASSERT_INT(stats->reason, ==, CLOSE_SHUTDOWN);
                size_t got = read_rest(c, &reset);
                (void) got;
                ASSERT(!reset);
                close(c);
        }
        ASSERT_INT(misses, ==, 0);
}

/* A cut during bulk traffic that never lets the worker wait (a reader
 * process drains the echo while the test writes): the cut still ends it. */
static void test_sigterm_cut_busy_stream(void) {
        struct worker_limits lim = base;
        char chunk[65536] = { 0 };
        int c, status;
        pid_t pid, reader;

        lim.idle_timeout_usec = lim.write_timeout_usec = 60000 * USEC_PER_MSEC;
        lim.max_session_time_usec = 0;
        pid = start(&lim, &c);
        enter_splice_mode(pid, c, lim.buffer_size);
        reader = fork();
        ASSERT(reader >= 0);
        if (reader == 0) {
                while (read(c, chunk, sizeof(chunk)) > 0)
                        ;
                _exit(0);
        }
        uint64_t cut_at = 0, until = now_usec(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;
        for (uint64_t sent = 0; now_usec(CLOCK_MONOTONIC) < until; ) {
                ssize_t w = send(c, chunk, sizeof(chunk), MSG_NOSIGNAL);
                if (w <= 0)
                        break; /* the worker has ended the session */
                sent += (uint64_t) w;
                if (!cut_at && sent > 64 * 1024 * 1024) {
                        kill(pid, SIGTERM);
                        cut_at = now_usec(CLOCK_MONOTONIC);
                }
                if (cut_at && waitpid(pid, &status, WNOHANG) == pid)
                        break;
        }
        ASSERT(cut_at);
        shutdown(c, SHUT_WR);
        ASSERT(ended_within(pid, 5000) || stats->end_usec);
        printf("   busy splice stream cut %" PRIu64 " ms after SIGTERM (%" PRIu64 " bytes echoed)\n",
               (stats->end_usec - cut_at) / USEC_PER_MSEC, stats->bytes_out);
        ASSERT_INT(stats->reason, ==, CLOSE_SHUTDOWN);
        /* Within its lingering close's bound, before the daemon's SIGKILL
         * (two seconds after its SIGTERM). */
        ASSERT(stats->end_usec - cut_at < WORKER_CUT_LINGER_USEC + 900 * USEC_PER_MSEC);
        waitpid(reader, NULL, 0);
        close(c);
}

/* Cut while the client does not read: the worker lingers (FIN after the
 * echo, input discarded) for at most WORKER_CUT_LINGER_USEC; a client that
 * reads meanwhile gets everything counted, then an orderly end. */
static void test_sigterm_cut_late_reader(void) {
        struct worker_limits lim = base;
        char chunk[8192] = { 0 };
        size_t sent = 0;
        bool reset;
        int c;
        pid_t pid;

        lim.write_timeout_usec = 10000 * USEC_PER_MSEC;
        pid = start_slow_reader(&lim, &c);
        /* Fill both directions: the worker waits for write space. */
        for (int stuck = 0; stuck < 20;) {
                ssize_t w = write(c, chunk, sizeof(chunk));
                if (w > 0) {
                        sent += (size_t) w;
                        stuck = 0;
                } else {
                        stuck++;
                        usleep(1000);
                }
        }
        kill(pid, SIGTERM);
        size_t got = read_rest(c, &reset);
        ASSERT(ended_within(pid, 5000));
        printf("   cut with %zu bytes sent unread: client read %zu, record %" PRIu64 " out, %s\n",
               sent, got, stats->bytes_out, reset ? "reset" : "EOF");
        ASSERT_INT(stats->reason, ==, CLOSE_SHUTDOWN);
        ASSERT(!reset);
        ASSERT(got == stats->bytes_out);
        close(c);
}

/* A session at its byte limit while the client keeps sending and reads
 * late: the client gets exactly the limit, then an orderly end (closing
 * with unread input would reset the connection and drop the queued echo). */
static void test_session_bytes_late_reader(void) {
        struct worker_limits lim = base;
        char chunk[8192] = { 0 };
        size_t sent = 0, total = 200000;
        bool reset;
        int c;
        pid_t pid;

        lim.max_session_bytes = 100000;
        pid = start_slow_reader(&lim, &c);
        while (sent < total) {
                struct pollfd p = { .fd = c, .events = POLLOUT };
                ssize_t w = write(c, chunk, total - sent < sizeof(chunk) ? total - sent : sizeof(chunk));
                if (w > 0)
                        sent += (size_t) w;
                else if (w < 0 && errno == EAGAIN)
                        ASSERT(poll(&p, 1, 10000) == 1); /* the worker discards what is over */
                else {
                        perror("send");
                        ASSERT(false);
                }
        }
        size_t got = read_rest(c, &reset);
        finish(pid, CLOSE_SESSION_BYTES);
        printf("   200000 sent against a 100000-byte limit: client read %zu, record %" PRIu64 " out, %s\n",
               got, stats->bytes_out, reset ? "reset" : "EOF");
        ASSERT(!reset);
        ASSERT(got == 100000 && stats->bytes_out == 100000 && stats->bytes_in == 100000);
        close(c);
}

/* A session at its time limit while input is still arriving. */
static void test_session_time_late_reader(void) {
        struct worker_limits lim = base;
        char chunk[8192] = { 0 };
        bool reset;
        int c;
        pid_t pid;

        lim.max_session_time_usec = 300 * USEC_PER_MSEC;
        pid = start_slow_reader(&lim, &c);
        /* Keep sending, never reading, until the session has ended. */
        while (stats->reason == CLOSE_NONE) {
                struct pollfd p = { .fd = c, .events = POLLOUT };
                if (write(c, chunk, sizeof(chunk)) < 0) {
                        ASSERT(errno == EAGAIN);
                        (void) poll(&p, 1, 10);
                }
        }
        for (int i = 0; i < 10; i++)
                offer(c, chunk, sizeof(chunk)); /* still arriving during the linger */
        size_t got = read_rest(c, &reset);
        finish(pid, CLOSE_SESSION_TIME);
        printf("   session-time with input arriving: client read %zu, record %" PRIu64 " out, %s\n",
               got, stats->bytes_out, reset ? "reset" : "EOF");
        ASSERT(!reset);
        ASSERT(got == stats->bytes_out && got > 0);
        close(c);
}

/* A client that never reads: the linger runs out and the close is
 * abortive; the record counts only what the client acknowledged, which
 * is exactly what it can still read. */
static void test_linger_runs_out_counts_what_arrived(void) {
        struct worker_limits lim = base;
        char chunk[8192] = { 0 };
        size_t sent = 0, total = 400000;
        bool reset;
        int c;
        pid_t pid;

        lim.max_session_bytes = 200000;
        lim.write_timeout_usec = 300 * USEC_PER_MSEC;
        pid = start_slow_reader(&lim, &c);
        while (sent < total && stats->end_usec == 0) {
                struct pollfd p = { .fd = c, .events = POLLOUT };
                ssize_t w = write(c, chunk, total - sent < sizeof(chunk) ? total - sent : sizeof(chunk));
                if (w > 0)
                        sent += (size_t) w;
                else
                        (void) poll(&p, 1, 10);
        }
        int status;
        ASSERT(waitpid(pid, &status, 0) == pid);
        size_t got = read_rest(c, &reset);
        printf("   client never reads: record %s, %" PRIu64 " out; client then read %zu and %s\n",
               close_reason_name(stats->reason), stats->bytes_out, got, reset ? "a reset" : "EOF");
        ASSERT(got == stats->bytes_out);
        close(c);
}

/* A client that half-closes and never reads: the session ends
 * client-closed with its echo unacknowledged, and the worker keeps it (so
 * the daemon keeps its max_clients slot) until write_timeout, then resets;
 * the record counts what the client acknowledged, exactly what it can read. */
static void test_half_closed_non_reader_held_until_write_timeout(void) {
        struct worker_limits lim = base;
        char chunk[100000] = { 0 };
        bool reset;
        int c, status;
        pid_t pid;

        lim.write_timeout_usec = 300 * USEC_PER_MSEC;
        pid = start_half_closed(&lim, &c, chunk, sizeof(chunk));
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        ASSERT(waitpid(pid, &status, 0) == pid);
        uint64_t held = now_usec(CLOCK_MONOTONIC) - t0;
        size_t got = read_rest(c, &reset);
        printf("   half-closed non-reader: worker held %" PRIu64 " ms; record %s, %" PRIu64 " of %" PRIu64
               " out; client read %zu and %s\n", held / USEC_PER_MSEC, close_reason_name(stats->reason),
               stats->bytes_out, stats->bytes_in, got, reset ? "a reset" : "EOF");
        ASSERT_INT(stats->reason, ==, CLOSE_CLIENT);
        ASSERT(stats->bytes_in == sizeof(chunk));
        ASSERT(held >= lim.write_timeout_usec / 2);
        ASSERT(reset && got == stats->bytes_out && got < sizeof(chunk));
        close(c);
}

/* A half-closed client that keeps reading a little: each acknowledgement
 * restarts write_timeout in the lingering close, but the cut's bound is
 * fixed (the daemon SIGKILLs two seconds after its SIGTERM): it ends
 * within WORKER_CUT_LINGER_USEC of SIGTERM although the client still
 * reads, with a reset, and the record counts no more than it read. */
static void test_cut_bounds_a_trickling_linger(void) {
        struct worker_limits lim = base;
        char chunk[200000] = { 0 }, in[1024];
        uint64_t t0, cut_at = 0;
        size_t got = 0;
        bool reset = false;
        int c;
        pid_t pid;

        lim.write_timeout_usec = 10000 * USEC_PER_MSEC;
        pid = start_half_closed(&lim, &c, chunk, sizeof(chunk));
        t0 = now_usec(CLOCK_MONOTONIC);
        for (;;) { /* 1 kB every 20 ms: 200 kB would take 4 s */
                ssize_t r = read(c, in, sizeof(in));
                if (r < 0 && errno == ECONNRESET)
                        reset = true;
                if (r <= 0)
                        break;
                got += (size_t) r;
                if (!cut_at && now_usec(CLOCK_MONOTONIC) - t0 >= 300 * USEC_PER_MSEC) {
                        kill(pid, SIGTERM);
                        cut_at = now_usec(CLOCK_MONOTONIC);
                }
                usleep(20000);
        }
        ASSERT(ended_within(pid, 5000));
        printf("   trickling reader cut: worker ended %" PRIu64 " ms after SIGTERM; record %s, %" PRIu64
               " out; client read %zu and %s\n", (stats->end_usec - cut_at) / USEC_PER_MSEC,
               close_reason_name(stats->reason), stats->bytes_out, got, reset ? "a reset" : "EOF");
        ASSERT(cut_at);
        ASSERT_INT(stats->reason, ==, CLOSE_CLIENT);
        ASSERT(stats->end_usec - cut_at < WORKER_CUT_LINGER_USEC + 900 * USEC_PER_MSEC);
        ASSERT(reset && stats->bytes_out <= got && got < sizeof(chunk));
        close(c);
}

/* A client that reads its echo, then closes: nothing waits. */
static void test_client_that_read_everything_closes_at_once(void) {
        struct worker_limits lim = base;
        int c, status;
        pid_t pid;

        lim.write_timeout_usec = 60000 * USEC_PER_MSEC;
        pid = start(&lim, &c);
        pump(c, 100000, true);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        ASSERT(read_all_until_eof(c, 10000) == 0);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT_INT(stats->reason, ==, CLOSE_CLIENT);
        ASSERT(stats->bytes_out == 100000);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 < 10 * USEC_PER_SEC);
        close(c);
}

/* Urgent data is data: RFC 862 echoes everything, in order, in both modes. */
static void test_urgent_byte_echoed(void) {
        for (int splice_mode = 0; splice_mode < 2; splice_mode++) {
                char got[16] = { 0 };
                int c;
                pid_t pid = start(&base, &c);

                if (splice_mode)
                        enter_splice_mode(pid, c, base.buffer_size);
                fcntl(c, F_SETFL, 0);
                ASSERT(send(c, "abc", 3, 0) == 3);
                ASSERT(send(c, "X", 1, MSG_OOB) == 1);
                ASSERT(send(c, "def", 3, 0) == 3);
                ASSERT(shutdown(c, SHUT_WR) == 0);
                size_t n = 0;
                for (ssize_t r; (r = read(c, got + n, sizeof(got) - 1 - n)) > 0;)
                        n += (size_t) r;
                printf("   %s mode: abc, X (MSG_OOB), def came back as %s\n", splice_mode ? "splice" : "copy", got);
                ASSERT(strcmp(got, "abcXdef") == 0);
                finish(pid, CLOSE_CLIENT);
                close(c);
        }
}

/* Idleness is time spent waiting for input, in splice mode as in copy
 * mode: a long wait for the client to take its echo is not idle time. */
static void test_splice_idle_counts_from_waiting(void) {
        struct worker_limits lim = base;
        char block[32768], back[32768];
        int c, small = 4096, queued = -1;
        pid_t pid;

        lim.buffer_size = 65536;
        lim.idle_timeout_usec = 200 * USEC_PER_MSEC;
        lim.write_timeout_usec = 10000 * USEC_PER_MSEC;
        keep_spy = true;
        server_sndbuf = 4096;
        client_rcvbuf = small;
        pid = start(&lim, &c);
        keep_spy = false;
        server_sndbuf = client_rcvbuf = 0;
        enter_splice_mode(pid, c, lim.buffer_size);
        memset(block, 'b', sizeof(block));
        fcntl(c, F_SETFL, 0);
        ASSERT(write(c, block, sizeof(block)) == sizeof(block));
        /* The worker has taken all of it (one splice) and waits to send. */
        for (int i = 0; i < 5000 && queued != 0; i++) {
                ASSERT(ioctl(spy, FIONREAD, &queued) == 0);
                if (queued)
                        usleep(1000);
        }
        ASSERT_INT(queued, ==, 0);
        usleep((useconds_t) (3 * lim.idle_timeout_usec)); /* the client takes its time to read */
        size_t n = 0;
        while (n < sizeof(back)) {
                ssize_t r = read(c, back, sizeof(back) - n);
                ASSERT(r > 0);
                n += (size_t) r;
        }
        ASSERT(write(c, "ping", 4) == 4);
        ssize_t r = read(c, back, 4);
        printf("   after a %" PRIu64 " ms wait to send, a prompt message got %zd bytes back\n",
               3 * lim.idle_timeout_usec / USEC_PER_MSEC, r);
        ASSERT(r == 4 && memcmp(back, "ping", 4) == 0);
        ASSERT_INT(read_all_until_eof(c, 5000), ==, 0); /* idle now, truly */
        finish(pid, CLOSE_IDLE);
        close(spy);
        spy = -1;
        close(c);
}

int main(void) {
        stats = mmap(NULL, sizeof(*stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(stats != MAP_FAILED);
        setvbuf(stdout, NULL, _IOLBF, 0);
        signal(SIGPIPE, SIG_DFL); /* prove the worker does not rely on the caller ignoring it */
        RUN(test_echo_and_half_close);
        RUN(test_idle_timeout);
        RUN(test_idle_and_bytes_after_bulk);
        RUN(test_write_timeout);
        RUN(test_session_time);
        RUN(test_session_bytes);
        RUN(test_reset_is_normal_end);
        RUN(test_reset_while_writing);
        RUN(test_wait_clamps);
        RUN(test_long_session_limit_waits);
        RUN(test_daemon_signals_ignored);
        RUN(test_sigterm_cut_anywhere);
        RUN(test_sigterm_cut_busy_stream);
        RUN(test_sigterm_cut_late_reader);
        RUN(test_session_bytes_late_reader);
        RUN(test_session_time_late_reader);
        RUN(test_linger_runs_out_counts_what_arrived);
        RUN(test_half_closed_non_reader_held_until_write_timeout);
        RUN(test_cut_bounds_a_trickling_linger);
        RUN(test_client_that_read_everything_closes_at_once);
        RUN(test_urgent_byte_echoed);
        RUN(test_splice_idle_counts_from_waiting);
        return 0;
}
