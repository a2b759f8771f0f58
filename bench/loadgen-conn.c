/* loadgen: one connection's steps (connect, send, read a verified echo), the
 * payloads, and the small helpers every mode uses. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

uint64_t sec_to_ns(double s) {
        return s <= 0 ? 0 : (uint64_t) (s * 1e9);
}

_Noreturn void die(const char *fmt, ...) {
        va_list ap;
        fputs("loadgen: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(2);
}

void samples_add(struct samples *s, uint64_t ns) {
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

void samples_sort(struct samples *s) {
        if (s->n == 0)
                return; /* v may be NULL: qsort() wants an array even for 0 */
        qsort(s->v, s->n, sizeof(*s->v), cmp_u32);
}

/* Nearest-rank percentile in microseconds of sorted samples; -1 without
 * samples. */
double percentile_us(const struct samples *s, double p) {
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

void init_pattern(struct lg *g) {
        uint64_t x = 0x243F6A8885A308D3ULL;
        for (size_t i = 0; i < PAT_LEN; i++) {
                if (i % 8 == 0)
                        x = mix(x);
                g->pat[i] = (unsigned char) (x >> (8 * (i % 8)));
        }
        for (size_t i = PAT_LEN; i < sizeof(g->pat); i++) /* overlapping on purpose: periodic */
                g->pat[i] = g->pat[i - PAT_LEN];
}

/* The stream of connection idx at offset off, contiguous for up to CHUNK bytes. */
const unsigned char *pattern_at(const struct lg *g, unsigned idx, uint64_t off) {
        return g->pat + (off + (uint64_t) idx * 7919u) % PAT_LEN;
}

void watch(struct lg *g, struct conn *c, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        if (events == c->events)
                return;
        if (epoll_ctl(g->epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0)
                die("epoll_ctl: %s", strerror(errno));
        c->events = events;
}

void close_conn(struct conn *c, enum state next) {
        if (c->fd >= 0)
                close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
        c->events = 0;
        c->state = next;
}

void count_io_error(struct lg *g, int err) {
        g->st.last_errno = err;
        if (err == ECONNRESET || err == EPIPE || err == ECONNABORTED)
                g->st.err_reset++;
        else if (err == ETIMEDOUT)
                g->st.err_timeout++;
        else
                g->st.err_other++;
}

static void count_connect_error(struct lg *g, int err) {
        g->st.err_connect++;
        g->st.last_errno = err;
}

/* Many short connections: spread the source over a few loopback addresses
 * so TIME_WAIT never runs out of ports. Returns false if bind() failed. */
static bool bind_spread_source(struct lg *g, int fd) {
        struct sockaddr_in src = { .sin_family = AF_INET };

        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t) (g->st.attempts % g->opt.spread));
        (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &(int) { 1 }, sizeof(int));
        return bind(fd, (struct sockaddr *) &src, sizeof(src)) == 0;
}

/* Starts a non-blocking connect. Returns false if it failed at once (counted). */
bool start_connect(struct lg *g, struct conn *c, uint64_t now) {
        int fd = socket(g->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

        g->st.attempts++;
        if (fd < 0) {
                count_connect_error(g, errno);
                return false;
        }
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        if (g->target.ss_family == AF_INET && g->opt.spread > 1 && !bind_spread_source(g, fd)) {
                count_connect_error(g, errno);
                close(fd);
                return false;
        }
        c->fd = fd;
        c->events = 0;
        c->t_start = c->t_progress = now;
        c->sent = c->rcvd = 0;
        if (connect(fd, (struct sockaddr *) &g->target, g->target_len) < 0 && errno != EINPROGRESS) {
                count_connect_error(g, errno);
                close(fd);
                c->fd = -1;
                return false;
        }
        c->state = S_CONNECTING;
        watch(g, c, EPOLLOUT);
        return true;
}

/* Checks a connect that epoll reported. Returns false on failure (counted). */
bool connect_done(struct lg *g, struct conn *c) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        if (err) {
                count_connect_error(g, err);
                return false;
        }
        return true;
}

void begin_msg(struct lg *g, struct conn *c, uint64_t now) {
        c->seq++;
        c->len = g->opt.msg_size;
        c->sent = c->rcvd = 0;
        fill_msg(c);
        c->t_start = c->t_progress = now;
        c->state = S_ECHO;
}

/* Sends what is left of the current message. Returns false on error (counted). */
bool send_msg(struct lg *g, struct conn *c, uint64_t now) {
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
                        watch(g, c, EPOLLIN | EPOLLOUT);
                        return true;
                }
                count_io_error(g, errno);
                return false;
        }
        watch(g, c, EPOLLIN);
        return true;
}

/* Reads the echo of the current message. Returns 1 when the whole message
 * came back intact, 0 when more is to come, -1 on error (counted). */
int read_echo(struct lg *g, struct conn *c, uint64_t now) {
        for (;;) {
                size_t want = c->len - c->rcvd;
                ssize_t n;

                if (want == 0)
                        return 1;
                n = recv(c->fd, g->scratch, want, 0);
                if (n > 0) {
                        if (memcmp(g->scratch, c->msg + c->rcvd, (size_t) n) != 0) {
                                g->st.err_verify++;
                                return -1;
                        }
                        c->rcvd += (size_t) n;
                        c->t_progress = now;
                        continue;
                }
                if (n == 0) {
                        g->st.err_eof++;
                        return -1;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return 0;
                count_io_error(g, errno);
                return -1;
        }
}

/* What an event on a connection in S_ECHO does: the rest of the message
 * out, then as much of its echo as has come. Returns as read_echo(). */
int echo_progress(struct lg *g, struct conn *c, uint64_t now) {
        if (c->sent < c->len && !send_msg(g, c, now))
                return -1;
        return read_echo(g, c, now);
}
