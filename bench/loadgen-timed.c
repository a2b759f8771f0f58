/* loadgen: the timed modes. rate loops connect-echo-close cycles on C
 * slots; pingpong keeps one message in flight on each of C connections;
 * stream writes and reads a verified pattern at full speed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "loadgen.h"

#define SWEEP_NS (10 * 1000000ULL)      /* timeouts and back-offs are checked this often */
#define BACKOFF_NS 10000000ULL          /* a rate slot waits this long after a failure */

static bool count_reached(const struct lg *g) {
        return g->opt.max_count && g->st.done >= g->opt.max_count;
}

static bool in_window(struct window w, uint64_t t_start, uint64_t now) {
        return t_start >= w.t_meas && now <= w.end;
}

/* ---- rate ---- */

static void rate_next(struct lg *g, struct conn *c, uint64_t now, uint64_t end) {
        if (now >= end || lg_interrupted || count_reached(g)) {
                c->state = S_IDLE;
                return;
        }
        if (!start_connect(g, c, now)) {
                c->state = S_BACKOFF;
                c->t_progress = now;
        }
}

static void rate_fail(struct conn *c, uint64_t now) {
        close_conn(c, S_BACKOFF);
        c->t_progress = now;
}

static void rate_connected(struct lg *g, struct conn *c, uint64_t now) {
        uint64_t t0 = c->t_start;

        if (!connect_done(g, c)) {
                rate_fail(c, now);
                return;
        }
        begin_msg(g, c, now);
        c->t_start = t0; /* the cycle starts at connect() */
        if (!send_msg(g, c, now))
                rate_fail(c, now);
}

/* Once the echo is complete: half-close and wait for the server's EOF. */
static void rate_echo(struct lg *g, struct conn *c, uint64_t now) {
        int r;

        r = echo_progress(g, c, now);
        if (r < 0) {
                rate_fail(c, now);
                return;
        }
        if (r == 0)
                return;
        if (shutdown(c->fd, SHUT_WR) < 0) {
                count_io_error(g, errno);
                rate_fail(c, now);
                return;
        }
        c->state = S_EOF;
        watch(g, c, EPOLLIN);
}

/* The server's EOF ends the cycle: counted, and the slot starts the next. */
static void rate_eof(struct lg *g, struct conn *c, uint64_t now, struct window w) {
        for (;;) {
                ssize_t n = recv(c->fd, g->scratch, sizeof(g->scratch), 0);
                if (n == 0)
                        break;
                if (n > 0) { /* more than we sent came back */
                        g->st.err_verify++;
                        rate_fail(c, now);
                        return;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return;
                count_io_error(g, errno);
                rate_fail(c, now);
                return;
        }
        if (in_window(w, c->t_start, now)) {
                g->st.done++;
                samples_add(&g->lat, now - c->t_start);
        }
        close_conn(c, S_IDLE);
        rate_next(g, c, now, w.end);
}

static void rate_event(struct lg *g, struct conn *c, uint64_t now, struct window w) {
        switch (c->state) {
        case S_CONNECTING:
                rate_connected(g, c, now);
                return;
        case S_ECHO:
                rate_echo(g, c, now);
                return;
        case S_EOF:
                rate_eof(g, c, now, w);
                return;
        default:
                return;
        }
}

/* ---- pingpong and stream ---- */

/* Reads and verifies up to four chunks. Returns false if the connection
 * failed (counted, closed). */
static bool stream_read(struct lg *g, struct conn *c, uint64_t now, struct window w) {
        for (int i = 0; i < 4; i++) {
                ssize_t n = recv(c->fd, g->scratch, sizeof(g->scratch), 0);
                if (n > 0) {
                        /* Never more than was sent, and exactly the pattern. */
                        if (c->rx_off + (uint64_t) n > c->tx_off ||
                            memcmp(g->scratch, pattern_at(g, c->idx, c->rx_off), (size_t) n) != 0) {
                                g->st.err_verify++;
                                close_conn(c, S_DEAD);
                                return false;
                        }
                        c->rx_off += (uint64_t) n;
                        c->t_progress = now;
                        if (now >= w.t_meas && now <= w.end) {
                                g->st.bytes += (uint64_t) n;
                                c->in_window += (uint64_t) n;
                        }
                        continue;
                }
                if (n == 0) {
                        g->st.err_eof++;
                        close_conn(c, S_DEAD);
                        return false;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        break;
                count_io_error(g, errno);
                close_conn(c, S_DEAD);
                return false;
        }
        return true;
}

/* Writes one chunk if the window of unechoed bytes allows. Returns false if
 * the connection failed (counted, closed). */
static bool stream_write(struct lg *g, struct conn *c, uint64_t now) {
        uint64_t inflight = c->tx_off - c->rx_off;
        size_t want = CHUNK;
        ssize_t n;

        if (inflight >= g->opt.window)
                return true;
        if (g->opt.window - inflight < want)
                want = (size_t) (g->opt.window - inflight);
        n = send(c->fd, pattern_at(g, c->idx, c->tx_off), want, MSG_NOSIGNAL);
        if (n > 0) {
                c->tx_off += (uint64_t) n;
                c->t_progress = now;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                count_io_error(g, errno);
                close_conn(c, S_DEAD);
                return false;
        }
        return true;
}

static void stream_pump(struct lg *g, struct conn *c, uint64_t now, struct window w, uint32_t ev) {
        if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !stream_read(g, c, now, w))
                return;
        if ((ev & EPOLLOUT) && !stream_write(g, c, now))
                return;
        /* Stop asking to write while the window is full: the reads reopen it. */
        watch(g, c, c->tx_off - c->rx_off < g->opt.window ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

/* Reads the echo; once complete, counts it and sends the next message. */
static void pingpong_echo(struct lg *g, struct conn *c, uint64_t now, struct window w) {
        int r;

        r = echo_progress(g, c, now);
        if (r < 0) {
                close_conn(c, S_DEAD);
                return;
        }
        if (r == 0)
                return;
        if (in_window(w, c->t_start, now)) {
                g->st.done++;
                c->in_window++;
                samples_add(&g->lat, now - c->t_start);
        }
        if (now >= w.end || lg_interrupted || count_reached(g)) {
                c->state = S_READY;
                return;
        }
        begin_msg(g, c, now);
        if (!send_msg(g, c, now))
                close_conn(c, S_DEAD);
}

void persistent_event(struct lg *g, struct conn *c, uint32_t ev, uint64_t now, struct window w) {
        switch (c->state) {
        case S_CONNECTING:
                if (!connect_done(g, c)) {
                        close_conn(c, S_DEAD);
                        return;
                }
                c->state = S_READY;
                watch(g, c, EPOLLIN);
                return;
        case S_READY: /* nothing should arrive now */
                if (recv(c->fd, g->scratch, 1, MSG_DONTWAIT) >= 0 || errno != EAGAIN) {
                        g->st.err_other++;
                        close_conn(c, S_DEAD);
                }
                return;
        case S_ECHO:
                pingpong_echo(g, c, now, w);
                return;
        case S_STREAM:
                stream_pump(g, c, now, w, ev);
                return;
        default:
                return;
        }
}

/* ---- the run ---- */

/* Sets every slot going: a rate slot connects, a ready persistent
 * connection sends its first message or starts streaming. */
static void start_all(struct lg *g, uint64_t t0, uint64_t end) {
        for (unsigned i = 0; i < g->opt.conc; i++) {
                struct conn *c = &g->conns[i];
                if (g->opt.mode == M_RATE) {
                        rate_next(g, c, t0, end);
                } else if (c->state == S_READY) {
                        if (g->opt.mode == M_PINGPONG) {
                                begin_msg(g, c, t0);
                                if (!send_msg(g, c, t0))
                                        close_conn(c, S_DEAD);
                        } else {
                                c->state = S_STREAM;
                                c->t_progress = t0;
                                watch(g, c, EPOLLIN | EPOLLOUT);
                        }
                }
        }
}

/* Retries backed-off rate slots and fails connections without progress
 * for the timeout. Returns whether any connection still has work. */
static bool sweep(struct lg *g, uint64_t now, uint64_t end) {
        uint64_t tmo = sec_to_ns(g->opt.timeout);
        bool busy = false;

        for (unsigned i = 0; i < g->opt.conc; i++) {
                struct conn *c = &g->conns[i];
                if (c->state == S_BACKOFF && now - c->t_progress >= BACKOFF_NS) {
                        rate_next(g, c, now, end);
                } else if ((c->state == S_CONNECTING || c->state == S_ECHO ||
                            c->state == S_EOF || c->state == S_STREAM) &&
                           now - c->t_progress > tmo) {
                        g->st.err_timeout++;
                        close_conn(c, g->opt.mode == M_RATE ? S_BACKOFF : S_DEAD);
                        c->t_progress = now;
                }
                if (c->state != S_IDLE && c->state != S_DEAD && c->state != S_READY)
                        busy = true;
        }
        return busy;
}

static void event_loop(struct lg *g, struct window w, uint64_t t0) {
        struct epoll_event evs[MAX_EVENTS];
        uint64_t last_sweep = t0;

        for (;;) {
                uint64_t now = now_ns();
                int n;

                if (now >= w.end || lg_interrupted)
                        break;
                n = epoll_wait(g->epfd, evs, MAX_EVENTS, 10);
                now = now_ns();
                for (int i = 0; i < n; i++) {
                        struct conn *c = evs[i].data.ptr;
                        if (g->opt.mode == M_RATE)
                                rate_event(g, c, now, w);
                        else
                                persistent_event(g, c, evs[i].events, now, w);
                }
                if (now - last_sweep >= SWEEP_NS) {
                        last_sweep = now;
                        if (!sweep(g, now, w.end) && g->opt.mode != M_STREAM)
                                break; /* count limit reached everywhere */
                }
        }
}

/* Counts the connections still alive; a persistent one that never echoed
 * in the window has stalled, even if it stayed under the timeout. */
static unsigned count_alive(struct lg *g) {
        unsigned alive = 0;

        for (unsigned i = 0; i < g->opt.conc; i++) {
                if (g->conns[i].state == S_DEAD)
                        continue;
                alive++;
                if (g->opt.mode != M_RATE && g->conns[i].in_window == 0 && !lg_interrupted &&
                    (g->opt.max_count == 0 || g->st.done < g->opt.max_count))
                        g->st.err_stall++;
        }
        return alive;
}

static void print_timed(struct lg *g, double secs, unsigned ready, unsigned alive) {
        const struct opts *o = &g->opt;
        const struct samples *lat = &g->lat;

        if (o->mode == M_RATE)
                printf("mode=rate addr=%s port=%d conc=%u secs=%.3f cycles=%" PRIu64 " conn_per_s=%.1f "
                       "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
                       o->addr_str, o->port, o->conc, secs, g->st.done, (double) g->st.done / secs,
                       percentile_us(lat, 50), percentile_us(lat, 99), percentile_us(lat, 99.9),
                       percentile_us(lat, 100));
        else if (o->mode == M_PINGPONG)
                printf("mode=pingpong addr=%s port=%d conc=%u connected=%u alive=%u secs=%.3f msgs=%" PRIu64
                       " msg_per_s=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
                       o->addr_str, o->port, o->conc, ready, alive, secs, g->st.done, (double) g->st.done / secs,
                       percentile_us(lat, 50), percentile_us(lat, 99), percentile_us(lat, 99.9),
                       percentile_us(lat, 100));
        else
                printf("mode=stream addr=%s port=%d conc=%u connected=%u alive=%u secs=%.3f bytes=%" PRIu64
                       " mb_per_s=%.2f",
                       o->addr_str, o->port, o->conc, ready, alive, secs, g->st.bytes,
                       (double) g->st.bytes / secs / 1e6);
}

void run_timed(struct lg *g) {
        uint64_t t0, stop;
        struct window w;
        unsigned ready = 0, alive;
        double secs;

        /* Persistent modes: connect everything first, then start the clock. */
        if (g->opt.mode != M_RATE) {
                uint64_t el;
                g->opt.batch = g->opt.conc;
                ready = hold_round(g, true, &el);
                if (ready == 0)
                        fprintf(stderr, "loadgen: no connection could be set up\n");
        }
        t0 = now_ns();
        w.t_meas = t0 + sec_to_ns(g->opt.warmup);
        w.end = w.t_meas + sec_to_ns(g->opt.duration);
        start_all(g, t0, w.end);
        event_loop(g, w, t0);

        stop = now_ns();
        secs = ((double) (stop < w.end ? stop : w.end) - (double) w.t_meas) / 1e9;
        alive = count_alive(g);
        if (secs <= 0)
                secs = 1e-9;
        samples_sort(&g->lat);
        print_timed(g, secs, ready, alive);
}
