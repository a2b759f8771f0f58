/* loadgen: the state and the pieces shared by its files (see loadgen.c for
 * what the tool does).
 *
 * All state lives in one struct lg, passed explicitly; the only global is
 * the flag the signal handler sets. Files: loadgen.c (options, set-up,
 * output), loadgen-conn.c (one connection: connect, send, verified echo),
 * loadgen-timed.c (rate, pingpong, stream), loadgen-hold.c (hold and the
 * server's memory). */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

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

struct opts {
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
};

struct stats {
        uint64_t done;          /* rate: cycles; pingpong: messages */
        uint64_t bytes;         /* stream: bytes echoed and verified in the window */
        uint64_t attempts;
        uint64_t err_connect, err_reset, err_timeout, err_verify, err_eof, err_other;
        uint64_t err_stall;     /* live connections that echoed nothing in the whole window */
        int last_errno;
};

/* The measured window of a timed run, in now_ns() time. */
struct window {
        uint64_t t_meas;        /* samples count from here (after the warm-up) */
        uint64_t end;
};

struct lg {
        struct opts opt;
        struct sockaddr_storage target;
        socklen_t target_len;
        int epfd;
        struct conn *conns;
        struct samples lat;
        struct stats st;
        unsigned char pat[PAT_LEN + CHUNK];
        unsigned char scratch[CHUNK];
};

/* Set by SIGINT/SIGTERM: every loop stops and the output says so. */
extern volatile sig_atomic_t lg_interrupted;

/* loadgen-conn.c */
uint64_t now_ns(void);
uint64_t sec_to_ns(double s);
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void samples_add(struct samples *s, uint64_t ns);
void samples_sort(struct samples *s);
double percentile_us(const struct samples *s, double p);
void init_pattern(struct lg *g);
const unsigned char *pattern_at(const struct lg *g, unsigned idx, uint64_t off);
void watch(struct lg *g, struct conn *c, uint32_t events);
void close_conn(struct conn *c, enum state next);
void count_io_error(struct lg *g, int err);
bool start_connect(struct lg *g, struct conn *c, uint64_t now);
bool connect_done(struct lg *g, struct conn *c);
void begin_msg(struct lg *g, struct conn *c, uint64_t now);
bool send_msg(struct lg *g, struct conn *c, uint64_t now);
int read_echo(struct lg *g, struct conn *c, uint64_t now);
int echo_progress(struct lg *g, struct conn *c, uint64_t now);

/* loadgen-timed.c */
void persistent_event(struct lg *g, struct conn *c, uint32_t ev, uint64_t now, struct window w);
void run_timed(struct lg *g);

/* loadgen-hold.c */
unsigned hold_round(struct lg *g, bool first, uint64_t *elapsed_ns);
void run_hold(struct lg *g);
