/* loadgen: a load generator for TCP echo servers, written for the benchmark.
 *
 * One process, one thread, one epoll loop. Loopback targets and numeric
 * addresses only (no name lookups). Every run is bounded in time (and
 * optionally in count) and stops by itself. Every echoed byte is compared
 * with what was sent.
 *
 * Modes:
 *   rate      C slots, each looping connect -> send a message -> read it
 *             back -> shutdown(SHUT_WR) -> wait for the server's EOF -> close
 *   pingpong  C persistent connections, one message in flight on each
 *   stream    C persistent connections writing and reading at full speed
 *   hold      open C idle connections (each proven with one echo), hold
 *             them, measure the server's memory, prove each still echoes
 *
 * Output: one line of key=value pairs on stdout. Diagnostics go to stderr. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_SEC 1000000000ULL
#define MAX_MSG 65536
#define CHUNK 65536
/* A prime pattern length: a chunk lost, repeated or reordered shows up as a
 * mismatch because chunk sizes never line up with the pattern period. */
#define PAT_LEN 65521
#define MAX_EVENTS 256
#define HOLD_PHASE_LIMIT_SEC 120.0

enum mode { M_RATE, M_PINGPONG, M_STREAM, M_HOLD };

enum state {
        S_IDLE,         /* no socket */
        S_BACKOFF,      /* waiting to retry after a failed connect */
        S_CONNECTING,
        S_ECHO,         /* message (partly) sent, reading the echo back */
        S_EOF,          /* rate: shut down our side, waiting for the server's EOF */
        S_READY,        /* connected and verified, nothing in flight */
        S_STREAM,
        S_DEAD,         /* failed; not retried (pingpong, stream, hold) */
};

struct conn {
        int fd;
        enum state state;
        unsigned idx;
        uint32_t events;        /* what epoll currently watches */
        uint64_t t_start;       /* cycle or message start */
        uint64_t t_progress;    /* last progress, for the per-operation timeout */
        uint64_t seq;
        size_t sent, rcvd, len;
        uint64_t tx_off, rx_off;
        uint64_t in_window;     /* messages or bytes echoed inside the measured window */
        unsigned char *msg;
};

struct samples {
        uint32_t *v; /* nanoseconds, clipped to UINT32_MAX */
        size_t n, cap;
};

static struct {
        enum mode mode;
        const char *addr_str;
        int port;
        unsigned conc;
        double duration, warmup, timeout;
        uint64_t max_count;
        size_t msg_size;
        size_t window;
        pid_t pid;
        unsigned spread, batch;
        const char *label;
} opt = {
        .addr_str = "127.0.0.1",
        .port = 0,
        .conc = 1,
        .duration = 5.0,
        .warmup = 0.0,
        .timeout = 5.0,
        .max_count = 0,
        .msg_size = 64,
        .window = 4u << 20,
        .pid = 0,
        .spread = 32,
        .batch = 64,
        .label = NULL,
};

static struct sockaddr_storage target;
static socklen_t target_len;
static int epfd = -1;
static struct conn *conns;
static struct samples lat;
static unsigned char pat[PAT_LEN + CHUNK];
static unsigned char scratch[CHUNK];
static volatile sig_atomic_t interrupted;

static struct {
        uint64_t done;          /* rate: cycles; pingpong: messages */
        uint64_t bytes;         /* stream: bytes echoed and verified in the window */
        uint64_t attempts;
        uint64_t err_connect, err_reset, err_timeout, err_verify, err_eof, err_other;
        uint64_t err_stall;     /* live connections that echoed nothing in the whole window */
        int last_errno;
} st;

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

static uint64_t sec_to_ns(double s) {
        return s <= 0 ? 0 : (uint64_t) (s * 1e9);
}

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...) {
        va_list ap;
        fputs("loadgen: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(2);
}

static void samples_add(struct samples *s, uint64_t ns) {
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 65536;
                uint32_t *v = realloc(s->v, cap * sizeof(*v));
                if (!v)
                        return; /* out of memory: drop the sample, keep measuring */
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t) ns;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile in microseconds; -1 without samples. */
static double percentile_us(const struct samples *s, double p) {
        size_t rank;
        if (s->n == 0)
                return -1;
        rank = (size_t) (p / 100.0 * (double) s->n + 0.999999);
        if (rank < 1)
                rank = 1;
        if (rank > s->n)
                rank = s->n;
        return s->v[rank - 1] / 1000.0;
}

/* xorshift64*: deterministic payloads, cheap to regenerate for checking. */
static uint64_t mix(uint64_t x) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        return x * 0x2545F4914F6CDD1DULL;
}

static void fill_msg(struct conn *c) {
        uint64_t x = mix(((uint64_t) c->idx << 32) ^ c->seq ^ 0x9E3779B97F4A7C15ULL) | 1;
        for (size_t i = 0; i < c->len; i++) {
                if (i % 8 == 0)
                        x = mix(x);
                c->msg[i] = (unsigned char) (x >> (8 * (i % 8)));
        }
}

static void init_pattern(void) {
        uint64_t x = 0x243F6A8885A308D3ULL;
        for (size_t i = 0; i < PAT_LEN; i++) {
                if (i % 8 == 0)
                        x = mix(x);
                pat[i] = (unsigned char) (x >> (8 * (i % 8)));
        }
        for (size_t i = PAT_LEN; i < sizeof(pat); i++) /* overlapping on purpose: periodic */
                pat[i] = pat[i - PAT_LEN];
}

/* The stream of connection idx at offset off, contiguous for up to CHUNK bytes. */
static const unsigned char *pattern_at(unsigned idx, uint64_t off) {
        return pat + (off + (uint64_t) idx * 7919u) % PAT_LEN;
}

static void watch(struct conn *c, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        if (events == c->events)
                return;
        if (epoll_ctl(epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0)
                die("epoll_ctl: %s", strerror(errno));
        c->events = events;
}

static void close_conn(struct conn *c, enum state next) {
        if (c->fd >= 0)
                close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
        c->events = 0;
        c->state = next;
}

static void count_io_error(int err) {
        st.last_errno = err;
        if (err == ECONNRESET || err == EPIPE || err == ECONNABORTED)
                st.err_reset++;
        else if (err == ETIMEDOUT)
                st.err_timeout++;
        else
                st.err_other++;
}

/* Starts a non-blocking connect. Returns false if it failed at once. */
static bool start_connect(struct conn *c, uint64_t now) {
        int fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

        st.attempts++;
        if (fd < 0) {
                st.err_connect++;
                st.last_errno = errno;
                return false;
        }
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        if (target.ss_family == AF_INET && opt.spread > 1) {
                /* Many short connections: spread the source over a few
                 * loopback addresses so TIME_WAIT never runs out of ports. */
                struct sockaddr_in src = { .sin_family = AF_INET };
                src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t) (st.attempts % opt.spread));
                (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &(int) { 1 }, sizeof(int));
                if (bind(fd, (struct sockaddr *) &src, sizeof(src)) < 0) {
                        st.err_connect++;
                        st.last_errno = errno;
                        close(fd);
                        return false;
                }
        }
        c->fd = fd;
        c->events = 0;
        c->t_start = c->t_progress = now;
        c->sent = c->rcvd = 0;
        if (connect(fd, (struct sockaddr *) &target, target_len) < 0 && errno != EINPROGRESS) {
                st.err_connect++;
                st.last_errno = errno;
                close(fd);
                c->fd = -1;
                return false;
        }
        c->state = S_CONNECTING;
        watch(c, EPOLLOUT);
        return true;
}

/* Sends what is left of the current message. Returns false on error. */
static bool send_msg(struct conn *c, uint64_t now) {
        while (c->sent < c->len) {
                ssize_t n = send(c->fd, c->msg + c->sent, c->len - c->sent, MSG_NOSIGNAL);
                if (n > 0) {
                        c->sent += (size_t) n;
                        c->t_progress = now;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        watch(c, EPOLLIN | EPOLLOUT);
                        return true;
                }
                count_io_error(errno);
                return false;
        }
        watch(c, EPOLLIN);
        return true;
}

static void begin_msg(struct conn *c, uint64_t now) {
        c->seq++;
        c->len = opt.msg_size;
        c->sent = c->rcvd = 0;
        fill_msg(c);
        c->t_start = c->t_progress = now;
        c->state = S_ECHO;
}

/* Reads the echo of the current message. Returns 1 when the whole message
 * came back intact, 0 when more is to come, -1 on error (counted). */
static int read_echo(struct conn *c, uint64_t now) {
        for (;;) {
                size_t want = c->len - c->rcvd;
                ssize_t n;

                if (want == 0)
                        return 1;
                n = recv(c->fd, scratch, want, 0);
                if (n > 0) {
                        if (memcmp(scratch, c->msg + c->rcvd, (size_t) n) != 0) {
                                st.err_verify++;
                                return -1;
                        }
                        c->rcvd += (size_t) n;
                        c->t_progress = now;
                        continue;
                }
                if (n == 0) {
                        st.err_eof++;
                        return -1;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return 0;
                count_io_error(errno);
                return -1;
        }
}

/* Checks a connect that epoll reported. Returns false on failure (counted). */
static bool connect_done(struct conn *c) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        if (err) {
                st.err_connect++;
                st.last_errno = err;
                return false;
        }
        return true;
}

/* ---- rate ---- */

static void rate_next(struct conn *c, uint64_t now, uint64_t end) {
        if (now >= end || interrupted || (opt.max_count && st.done >= opt.max_count)) {
                c->state = S_IDLE;
                return;
        }
        if (!start_connect(c, now)) {
                c->state = S_BACKOFF;
                c->t_progress = now;
        }
}

static void rate_fail(struct conn *c, uint64_t now, uint64_t end) {
        close_conn(c, S_BACKOFF);
        c->t_progress = now;
        (void) end;
}

static void rate_event(struct conn *c, uint64_t now, uint64_t t_meas, uint64_t end) {
        switch (c->state) {
        case S_CONNECTING:
                if (!connect_done(c)) {
                        rate_fail(c, now, end);
                        return;
                }
                {
                        uint64_t t0 = c->t_start;
                        begin_msg(c, now);
                        c->t_start = t0; /* the cycle starts at connect() */
                }
                if (!send_msg(c, now))
                        rate_fail(c, now, end);
                return;
        case S_ECHO: {
                int r;
                if (c->sent < c->len && !send_msg(c, now)) {
                        rate_fail(c, now, end);
                        return;
                }
                r = read_echo(c, now);
                if (r < 0) {
                        rate_fail(c, now, end);
                        return;
                }
                if (r == 0)
                        return;
                if (shutdown(c->fd, SHUT_WR) < 0) {
                        count_io_error(errno);
                        rate_fail(c, now, end);
                        return;
                }
                c->state = S_EOF;
                watch(c, EPOLLIN);
                return;
        }
        case S_EOF:
                for (;;) {
                        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
                        if (n == 0)
                                break;
                        if (n > 0) { /* more than we sent came back */
                                st.err_verify++;
                                rate_fail(c, now, end);
                                return;
                        }
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        count_io_error(errno);
                        rate_fail(c, now, end);
                        return;
                }
                if (c->t_start >= t_meas && now <= end) {
                        st.done++;
                        samples_add(&lat, now - c->t_start);
                }
                close_conn(c, S_IDLE);
                rate_next(c, now, end);
                return;
        default:
                return;
        }
}

/* ---- pingpong and stream ---- */

static void stream_pump(struct conn *c, uint64_t now, uint64_t t_meas, uint64_t end, uint32_t ev) {
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (int i = 0; i < 4; i++) {
                        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
                        if (n > 0) {
                                /* Never more than was sent, and exactly the pattern. */
                                if (c->rx_off + (uint64_t) n > c->tx_off ||
                                    memcmp(scratch, pattern_at(c->idx, c->rx_off), (size_t) n) != 0) {
                                        st.err_verify++;
                                        close_conn(c, S_DEAD);
                                        return;
                                }
                                c->rx_off += (uint64_t) n;
                                c->t_progress = now;
                                if (now >= t_meas && now <= end) {
                                        st.bytes += (uint64_t) n;
                                        c->in_window += (uint64_t) n;
                                }
                                continue;
                        }
                        if (n == 0) {
                                st.err_eof++;
                                close_conn(c, S_DEAD);
                                return;
                        }
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        count_io_error(errno);
                        close_conn(c, S_DEAD);
                        return;
                }
        }
        if (ev & EPOLLOUT) {
                uint64_t inflight = c->tx_off - c->rx_off;
                if (inflight < opt.window) {
                        size_t want = CHUNK;
                        ssize_t n;
                        if (opt.window - inflight < want)
                                want = (size_t) (opt.window - inflight);
                        n = send(c->fd, pattern_at(c->idx, c->tx_off), want, MSG_NOSIGNAL);
                        if (n > 0) {
                                c->tx_off += (uint64_t) n;
                                c->t_progress = now;
                        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                                count_io_error(errno);
                                close_conn(c, S_DEAD);
                                return;
                        }
                }
        }
        /* Stop asking to write while the window is full: the reads reopen it. */
        watch(c, c->tx_off - c->rx_off < opt.window ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void persistent_event(struct conn *c, uint32_t ev, uint64_t now, uint64_t t_meas, uint64_t end) {
        switch (c->state) {
        case S_CONNECTING:
                if (!connect_done(c)) {
                        close_conn(c, S_DEAD);
                        return;
                }
                c->state = S_READY;
                watch(c, EPOLLIN);
                return;
        case S_READY: /* nothing should arrive now */
                if (recv(c->fd, scratch, 1, MSG_DONTWAIT) >= 0 || errno != EAGAIN) {
                        st.err_other++;
                        close_conn(c, S_DEAD);
                }
                return;
        case S_ECHO: {
                int r;
                if (c->sent < c->len && !send_msg(c, now)) {
                        close_conn(c, S_DEAD);
                        return;
                }
                r = read_echo(c, now);
                if (r < 0) {
                        close_conn(c, S_DEAD);
                        return;
                }
                if (r == 0)
                        return;
                if (c->t_start >= t_meas && now <= end) {
                        st.done++;
                        c->in_window++;
                        samples_add(&lat, now - c->t_start);
                }
                if (now >= end || interrupted || (opt.max_count && st.done >= opt.max_count)) {
                        c->state = S_READY;
                        return;
                }
                begin_msg(c, now);
                if (!send_msg(c, now))
                        close_conn(c, S_DEAD);
                return;
        }
        case S_STREAM:
                stream_pump(c, now, t_meas, end, ev);
                return;
        default:
                return;
        }
}

/* ---- memory of the server's process tree ---- */

struct proc_mem {
        unsigned procs;
        uint64_t pss_kb, uss_kb, rss_kb, pte_kb;
};

static pid_t read_ppid(pid_t pid) {
        char path[64], buf[512];
        FILE *f;
        char *p;
        int ppid = -1;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && sscanf(p + 1, " %*c %d", &ppid) != 1)
                ppid = -1;
        fclose(f);
        return ppid;
}

static void add_smaps(pid_t pid, struct proc_mem *m) {
        char path[64], line[256];
        FILE *f;
        unsigned long long v;

        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        m->procs++;
        while (fgets(line, sizeof(line), f)) {
                if (sscanf(line, "Pss: %llu", &v) == 1)
                        m->pss_kb += v;
                else if (sscanf(line, "Rss: %llu", &v) == 1)
                        m->rss_kb += v;
                else if (sscanf(line, "Private_Clean: %llu", &v) == 1 ||
                         sscanf(line, "Private_Dirty: %llu", &v) == 1 ||
                         sscanf(line, "Private_Hugetlb: %llu", &v) == 1)
                        m->uss_kb += v;
        }
        fclose(f);
        /* Page tables: kernel memory that PSS and USS do not show. */
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmPTE: %llu", &v) == 1)
                        m->pte_kb += v;
        fclose(f);
}

static size_t pid_limit(void) {
        FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
        unsigned long v = 4194304;
        if (f) {
                if (fscanf(f, "%lu", &v) != 1 || v < 1024 || v > 4194304)
                        v = 4194304;
                fclose(f);
        }
        return (size_t) v + 1;
}

/* Sums PSS and USS over root and all its descendants. */
static struct proc_mem tree_memory(pid_t root) {
        struct proc_mem m = { 0 };
        pid_t *pids = NULL, *ppids = NULL;
        size_t n = 0, cap = 0, npid = pid_limit();
        bool *in; /* indexed by pid */
        DIR *d;
        struct dirent *e;
        bool changed = true;

        if (root <= 0 || (size_t) root >= npid)
                return m;
        d = opendir("/proc");
        if (!d)
                return m;
        while ((e = readdir(d))) {
                pid_t pid, ppid;
                if (!isdigit((unsigned char) e->d_name[0]))
                        continue;
                pid = (pid_t) atoi(e->d_name);
                ppid = read_ppid(pid);
                if (ppid < 0 || (size_t) pid >= npid || (size_t) ppid >= npid)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 4096;
                        pids = realloc(pids, cap * sizeof(*pids));
                        ppids = realloc(ppids, cap * sizeof(*ppids));
                        if (!pids || !ppids)
                                die("out of memory");
                }
                pids[n] = pid;
                ppids[n] = ppid;
                n++;
        }
        closedir(d);
        in = calloc(npid, sizeof(*in));
        if (!in)
                die("out of memory");
        in[root] = true;
        /* Descendants: one pass per generation until the set stops growing. */
        while (changed) {
                changed = false;
                for (size_t i = 0; i < n; i++) {
                        if (!in[pids[i]] && in[ppids[i]])
                                in[pids[i]] = changed = true;
                }
        }
        for (size_t i = 0; i < n; i++)
                if (in[pids[i]])
                        add_smaps(pids[i], &m);
        free(in);
        free(pids);
        free(ppids);
        return m;
}

/* ---- hold ---- */

/* Runs one round over all live connections: connect (first round) and one
 * verified echo each, at most opt.batch in flight. Returns the number of
 * connections that echoed correctly. */
static unsigned hold_round(bool first, uint64_t *elapsed_ns) {
        struct epoll_event evs[MAX_EVENTS];
        uint64_t t0 = now_ns(), limit = t0 + sec_to_ns(HOLD_PHASE_LIMIT_SEC);
        uint64_t tmo = sec_to_ns(opt.timeout), last_sweep = t0;
        unsigned next = 0, inflight = 0, ok = 0;

        while (!interrupted) {
                uint64_t now = now_ns();

                while (next < opt.conc && inflight < opt.batch) {
                        struct conn *c = &conns[next++];
                        if (first) {
                                if (!start_connect(c, now)) {
                                        c->state = S_DEAD;
                                        continue;
                                }
                        } else {
                                if (c->state != S_READY)
                                        continue;
                                begin_msg(c, now);
                                if (!send_msg(c, now)) {
                                        close_conn(c, S_DEAD);
                                        continue;
                                }
                        }
                        inflight++;
                }
                if (inflight == 0 && next >= opt.conc)
                        break;
                if (now >= limit)
                        break;

                int n = epoll_wait(epfd, evs, MAX_EVENTS, 50);
                now = now_ns();
                for (int i = 0; i < n; i++) {
                        struct conn *c = evs[i].data.ptr;
                        int r;

                        if (c->state == S_READY) { /* an idle one spoke or closed */
                                persistent_event(c, evs[i].events, now, 0, UINT64_MAX);
                                continue;
                        }
                        if (c->state == S_CONNECTING) {
                                if (!connect_done(c)) {
                                        close_conn(c, S_DEAD);
                                        inflight--;
                                        continue;
                                }
                                begin_msg(c, now);
                                if (!send_msg(c, now)) {
                                        close_conn(c, S_DEAD);
                                        inflight--;
                                }
                                continue;
                        }
                        if (c->state != S_ECHO)
                                continue;
                        if (c->sent < c->len && !send_msg(c, now)) {
                                close_conn(c, S_DEAD);
                                inflight--;
                                continue;
                        }
                        r = read_echo(c, now);
                        if (r < 0) {
                                close_conn(c, S_DEAD);
                                inflight--;
                        } else if (r > 0) {
                                c->state = S_READY;
                                watch(c, EPOLLIN);
                                inflight--;
                                ok++;
                        }
                }
                if (now - last_sweep >= 100 * 1000000ULL) {
                        last_sweep = now;
                        for (unsigned i = 0; i < next; i++) {
                                struct conn *c = &conns[i];
                                if ((c->state == S_CONNECTING || c->state == S_ECHO) &&
                                    now - c->t_progress > tmo) {
                                        st.err_timeout++;
                                        close_conn(c, S_DEAD);
                                        inflight--;
                                }
                        }
                }
        }
        if (now_ns() >= limit)
                fprintf(stderr, "loadgen: hold phase stopped at its %.0f s limit\n", HOLD_PHASE_LIMIT_SEC);
        *elapsed_ns = now_ns() - t0;
        return ok;
}

static void run_hold(void) {
        struct epoll_event evs[MAX_EVENTS];
        struct proc_mem base = tree_memory(opt.pid), held;
        uint64_t est_ns, check_ns, t_end;
        unsigned established, alive, held_n = 0;
        double per;

        established = hold_round(true, &est_ns);
        /* Hold: nothing should happen; anything that does is an error. */
        t_end = now_ns() + sec_to_ns(opt.duration);
        while (!interrupted && now_ns() < t_end) {
                int n = epoll_wait(epfd, evs, MAX_EVENTS, 50);
                for (int i = 0; i < n; i++)
                        persistent_event(evs[i].data.ptr, evs[i].events, now_ns(), 0, UINT64_MAX);
        }
        for (unsigned i = 0; i < opt.conc; i++)
                held_n += conns[i].state == S_READY;
        held = tree_memory(opt.pid);
        alive = hold_round(false, &check_ns);
        per = held_n ? 1.0 / held_n : -1.0; /* memory per connection actually held */

        printf("mode=hold addr=%s port=%d conc=%u established=%u establish_s=%.3f establish_per_s=%.0f "
               "hold_s=%.1f held=%u alive_end=%u check_s=%.3f procs=%u pss_kb=%" PRIu64 " uss_kb=%" PRIu64
               " rss_kb=%" PRIu64 " base_procs=%u base_pss_kb=%" PRIu64 " base_uss_kb=%" PRIu64
               " pss_kb_per_conn=%.2f uss_kb_per_conn=%.2f pss_kb_per_conn_incr=%.2f uss_kb_per_conn_incr=%.2f"
               " pte_kb=%" PRIu64 " pte_kb_per_conn=%.2f",
               opt.addr_str, opt.port, opt.conc, established, est_ns / 1e9,
               est_ns ? established / (est_ns / 1e9) : 0.0, opt.duration, held_n, alive, check_ns / 1e9,
               held.procs, held.pss_kb, held.uss_kb, held.rss_kb, base.procs, base.pss_kb, base.uss_kb,
               held.pss_kb * per, held.uss_kb * per,
               ((double) held.pss_kb - (double) base.pss_kb) * per,
               ((double) held.uss_kb - (double) base.uss_kb) * per,
               held.pte_kb, held.pte_kb * per);
}

/* ---- main loop for rate, pingpong, stream ---- */

static void run_timed(void) {
        struct epoll_event evs[MAX_EVENTS];
        uint64_t tmo = sec_to_ns(opt.timeout);
        uint64_t t0, t_meas, end, last_sweep;
        unsigned ready = 0;

        /* Persistent modes: connect everything first, then start the clock. */
        if (opt.mode != M_RATE) {
                uint64_t el;
                opt.batch = opt.conc;
                ready = hold_round(true, &el);
                if (ready == 0)
                        fprintf(stderr, "loadgen: no connection could be set up\n");
        }

        t0 = now_ns();
        t_meas = t0 + sec_to_ns(opt.warmup);
        end = t_meas + sec_to_ns(opt.duration);
        last_sweep = t0;

        for (unsigned i = 0; i < opt.conc; i++) {
                struct conn *c = &conns[i];
                if (opt.mode == M_RATE) {
                        rate_next(c, t0, end);
                } else if (c->state == S_READY) {
                        if (opt.mode == M_PINGPONG) {
                                begin_msg(c, t0);
                                if (!send_msg(c, t0))
                                        close_conn(c, S_DEAD);
                        } else {
                                c->state = S_STREAM;
                                c->t_progress = t0;
                                watch(c, EPOLLIN | EPOLLOUT);
                        }
                }
        }

        for (;;) {
                uint64_t now = now_ns();
                bool busy = false;
                int n;

                if (now >= end || interrupted)
                        break;
                n = epoll_wait(epfd, evs, MAX_EVENTS, 10);
                now = now_ns();
                for (int i = 0; i < n; i++) {
                        struct conn *c = evs[i].data.ptr;
                        if (opt.mode == M_RATE)
                                rate_event(c, now, t_meas, end);
                        else
                                persistent_event(c, evs[i].events, now, t_meas, end);
                }
                if (now - last_sweep >= 10 * 1000000ULL) {
                        last_sweep = now;
                        for (unsigned i = 0; i < opt.conc; i++) {
                                struct conn *c = &conns[i];
                                if (c->state == S_BACKOFF && now - c->t_progress >= 10000000ULL) {
                                        rate_next(c, now, end);
                                } else if ((c->state == S_CONNECTING || c->state == S_ECHO ||
                                            c->state == S_EOF || c->state == S_STREAM) &&
                                           now - c->t_progress > tmo) {
                                        st.err_timeout++;
                                        close_conn(c, opt.mode == M_RATE ? S_BACKOFF : S_DEAD);
                                        c->t_progress = now;
                                }
                                if (c->state != S_IDLE && c->state != S_DEAD && c->state != S_READY)
                                        busy = true;
                        }
                        if (!busy && opt.mode != M_STREAM)
                                break; /* count limit reached everywhere */
                }
        }

        {
                uint64_t stop = now_ns();
                double secs = ((double) (stop < end ? stop : end) - (double) t_meas) / 1e9;
                unsigned alive = 0;

                for (unsigned i = 0; i < opt.conc; i++) {
                        if (conns[i].state == S_DEAD)
                                continue;
                        alive++;
                        /* A connection that never echoed in the window has
                         * stalled, even if it stayed under the timeout. */
                        if (opt.mode != M_RATE && conns[i].in_window == 0 && !interrupted &&
                            (opt.max_count == 0 || st.done < opt.max_count))
                                st.err_stall++;
                }
                if (secs <= 0)
                        secs = 1e-9;
                qsort(lat.v, lat.n, sizeof(*lat.v), cmp_u32);
                if (opt.mode == M_RATE)
                        printf("mode=rate addr=%s port=%d conc=%u secs=%.3f cycles=%" PRIu64 " conn_per_s=%.1f "
                               "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
                               opt.addr_str, opt.port, opt.conc, secs, st.done, st.done / secs,
                               percentile_us(&lat, 50), percentile_us(&lat, 99), percentile_us(&lat, 99.9),
                               percentile_us(&lat, 100));
                else if (opt.mode == M_PINGPONG)
                        printf("mode=pingpong addr=%s port=%d conc=%u connected=%u alive=%u secs=%.3f msgs=%" PRIu64
                               " msg_per_s=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
                               opt.addr_str, opt.port, opt.conc, ready, alive, secs, st.done, st.done / secs,
                               percentile_us(&lat, 50), percentile_us(&lat, 99), percentile_us(&lat, 99.9),
                               percentile_us(&lat, 100));
                else
                        printf("mode=stream addr=%s port=%d conc=%u connected=%u alive=%u secs=%.3f bytes=%" PRIu64
                               " mb_per_s=%.2f",
                               opt.addr_str, opt.port, opt.conc, ready, alive, secs, st.bytes,
                               st.bytes / secs / 1e6);
        }
}

static void usage(FILE *f) {
        fputs("Usage: loadgen MODE [OPTION]...\n"
              "Load generator for TCP echo servers on loopback (benchmark tool).\n"
              "MODE: rate | pingpong | stream | hold\n"
              "  -a ADDR       numeric loopback address of the server (default 127.0.0.1; ::1 works)\n"
              "  -p PORT       server port (required)\n"
              "  -c N          concurrency: slots (rate), connections (pingpong, stream, hold)\n"
              "  -d SECONDS    measured duration; hold: how long the idle connections are held\n"
              "  -w SECONDS    warm-up before measuring (rate, pingpong, stream; default 0)\n"
              "  -n COUNT      stop after COUNT cycles/messages (rate, pingpong; default: no limit)\n"
              "  -s BYTES      message size (rate, pingpong, hold; default 64, at most 65536)\n"
              "  -t SECONDS    per-operation timeout (default 5)\n"
              "  -W BYTES      stream: per-connection window of unechoed bytes (default 4194304)\n"
              "  -b N          hold: connections being set up or checked at once (default 64)\n"
              "  -S N          rate/hold with IPv4: spread sources over 127.0.0.1..N (default 32; 1: off)\n"
              "  -l LABEL      add label=LABEL to the output line\n"
              "  --pid PID     hold: the server's main process, for PSS/USS of its process tree\n"
              "Output: one line of key=value pairs.\n", f);
}

static double parse_double(const char *s, const char *what, double min, double max) {
        char *end;
        double v;
        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !(v >= min && v <= max))
                die("invalid %s '%s' (expected %g..%g)", what, s, min, max);
        return v;
}

static bool is_loopback(const struct sockaddr_storage *ss) {
        if (ss->ss_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *) ss)->sin_addr.s_addr) >> 24) == 127;
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) ss)->sin6_addr);
}

static void on_signal(int sig) {
        (void) sig;
        interrupted = 1;
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "pid", required_argument, NULL, 'P' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct rlimit rl;
        int c;

        if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        if (!strcmp(argv[1], "rate"))
                opt.mode = M_RATE;
        else if (!strcmp(argv[1], "pingpong"))
                opt.mode = M_PINGPONG;
        else if (!strcmp(argv[1], "stream"))
                opt.mode = M_STREAM;
        else if (!strcmp(argv[1], "hold"))
                opt.mode = M_HOLD;
        else
                die("unknown mode '%s' (rate, pingpong, stream or hold)", argv[1]);
        optind = 2;
        while ((c = getopt_long(argc, argv, "a:p:c:d:w:n:s:t:W:b:S:l:h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'a': opt.addr_str = optarg; break;
                case 'p': opt.port = (int) parse_double(optarg, "port", 1, 65535); break;
                case 'c': opt.conc = (unsigned) parse_double(optarg, "concurrency", 1, 100000); break;
                case 'd': opt.duration = parse_double(optarg, "duration", 0, 3600); break;
                case 'w': opt.warmup = parse_double(optarg, "warm-up", 0, 600); break;
                case 'n': opt.max_count = (uint64_t) parse_double(optarg, "count", 0, 1e12); break;
                case 's': opt.msg_size = (size_t) parse_double(optarg, "message size", 1, MAX_MSG); break;
                case 't': opt.timeout = parse_double(optarg, "timeout", 0.01, 600); break;
                case 'W': opt.window = (size_t) parse_double(optarg, "window", 1, 1 << 30); break;
                case 'b': opt.batch = (unsigned) parse_double(optarg, "batch", 1, 100000); break;
                case 'S': opt.spread = (unsigned) parse_double(optarg, "spread", 1, 65536); break;
                case 'l': opt.label = optarg; break;
                case 'P': opt.pid = (pid_t) parse_double(optarg, "pid", 1, 4194304); break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc)
                die("unexpected argument '%s'", argv[optind]);
        if (!opt.port)
                die("-p PORT is required");

        memset(&target, 0, sizeof(target));
        if (inet_pton(AF_INET, opt.addr_str, &((struct sockaddr_in *) &target)->sin_addr) == 1) {
                ((struct sockaddr_in *) &target)->sin_family = AF_INET;
                ((struct sockaddr_in *) &target)->sin_port = htons((uint16_t) opt.port);
                target_len = sizeof(struct sockaddr_in);
        } else if (inet_pton(AF_INET6, opt.addr_str, &((struct sockaddr_in6 *) &target)->sin6_addr) == 1) {
                ((struct sockaddr_in6 *) &target)->sin6_family = AF_INET6;
                ((struct sockaddr_in6 *) &target)->sin6_port = htons((uint16_t) opt.port);
                target_len = sizeof(struct sockaddr_in6);
        } else {
                die("'%s' is not a numeric IPv4 or IPv6 address (names are not looked up)", opt.addr_str);
        }
        if (!is_loopback(&target))
                die("'%s' is not a loopback address; this tool only loads loopback", opt.addr_str);

        /* Use every descriptor we are allowed. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (uint64_t) opt.conc + 16 > (uint64_t) rl.rlim_cur)
                die("-c %u needs more descriptors than RLIMIT_NOFILE allows (%llu)", opt.conc,
                    (unsigned long long) rl.rlim_cur);

        signal(SIGPIPE, SIG_IGN);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        init_pattern();
        epfd = epoll_create1(EPOLL_CLOEXEC);
        if (epfd < 0)
                die("epoll_create1: %s", strerror(errno));
        conns = calloc(opt.conc, sizeof(*conns));
        if (!conns)
                die("out of memory");
        for (unsigned i = 0; i < opt.conc; i++) {
                conns[i].fd = -1;
                conns[i].idx = i;
                conns[i].state = S_IDLE;
                conns[i].msg = malloc(opt.msg_size);
                if (!conns[i].msg)
                        die("out of memory");
        }

        if (opt.mode == M_HOLD)
                run_hold();
        else
                run_timed();
        printf(" errors=%" PRIu64, st.err_connect + st.err_reset + st.err_timeout + st.err_verify +
               st.err_eof + st.err_other + st.err_stall);
        printf(" err_connect=%" PRIu64 " err_reset=%" PRIu64 " err_timeout=%" PRIu64 " err_verify=%" PRIu64
               " err_eof=%" PRIu64 " err_other=%" PRIu64 " err_stall=%" PRIu64 " last_errno=%s%s%s%s\n",
               st.err_connect, st.err_reset, st.err_timeout, st.err_verify, st.err_eof, st.err_other, st.err_stall,
               st.last_errno ? strerrorname_np(st.last_errno) : "0", opt.label ? " label=" : "",
               opt.label ? opt.label : "", interrupted ? " interrupted=1" : "");
        fflush(stdout);

        for (unsigned i = 0; i < opt.conc; i++) {
                if (conns[i].fd >= 0)
                        close(conns[i].fd);
                free(conns[i].msg);
        }
        free(conns);
        free(lat.v);
        close(epfd);
        return interrupted ? 130 : 0;
}
