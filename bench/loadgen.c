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
 * Output: one line of key=value pairs on stdout. Diagnostics go to stderr.
 *
 * This file: the options, the set-up and the common end of the output line;
 * loadgen.h says where the rest is. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "loadgen.h"

volatile sig_atomic_t lg_interrupted;

static const struct opts default_opts = {
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

static enum mode parse_mode(const char *s) {
        if (!strcmp(s, "rate"))
                return M_RATE;
        if (!strcmp(s, "pingpong"))
                return M_PINGPONG;
        if (!strcmp(s, "stream"))
                return M_STREAM;
        if (!strcmp(s, "hold"))
                return M_HOLD;
        die("unknown mode '%s' (rate, pingpong, stream or hold)", s);
}

/* Parses the options after MODE into o. Returns -1 to go on, or the exit
 * status (usage shown). */
static int parse_options(struct opts *o, int argc, char **argv) {
        static const struct option longopts[] = {
                { "pid", required_argument, NULL, 'P' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 }
        };
        int c;

        optind = 2;
        while ((c = getopt_long(argc, argv, "a:p:c:d:w:n:s:t:W:b:S:l:h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'a': o->addr_str = optarg; break;
                case 'p': o->port = (int) parse_double(optarg, "port", 1, 65535); break;
                case 'c': o->conc = (unsigned) parse_double(optarg, "concurrency", 1, 100000); break;
                case 'd': o->duration = parse_double(optarg, "duration", 0, 3600); break;
                case 'w': o->warmup = parse_double(optarg, "warm-up", 0, 600); break;
                case 'n': o->max_count = (uint64_t) parse_double(optarg, "count", 0, 1e12); break;
                case 's': o->msg_size = (size_t) parse_double(optarg, "message size", 1, MAX_MSG); break;
                case 't': o->timeout = parse_double(optarg, "timeout", 0.01, 600); break;
                case 'W': o->window = (size_t) parse_double(optarg, "window", 1, 1 << 30); break;
                case 'b': o->batch = (unsigned) parse_double(optarg, "batch", 1, 100000); break;
                case 'S': o->spread = (unsigned) parse_double(optarg, "spread", 1, 65536); break;
                case 'l': o->label = optarg; break;
                case 'P': o->pid = (pid_t) parse_double(optarg, "pid", 1, 4194304); break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc)
                die("unexpected argument '%s'", argv[optind]);
        if (!o->port)
                die("-p PORT is required");
        return -1;
}

static bool is_loopback(const struct sockaddr_storage *ss) {
        if (ss->ss_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *) ss)->sin_addr.s_addr) >> 24) == 127;
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) ss)->sin6_addr);
}

/* The target from -a and -p: a numeric loopback address, or the tool dies. */
static void set_target(struct lg *g) {
        struct sockaddr_in *in4 = (struct sockaddr_in *) &g->target;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &g->target;

        memset(&g->target, 0, sizeof(g->target));
        if (inet_pton(AF_INET, g->opt.addr_str, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t) g->opt.port);
                g->target_len = sizeof(struct sockaddr_in);
        } else if (inet_pton(AF_INET6, g->opt.addr_str, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t) g->opt.port);
                g->target_len = sizeof(struct sockaddr_in6);
        } else {
                die("'%s' is not a numeric IPv4 or IPv6 address (names are not looked up)", g->opt.addr_str);
        }
        if (!is_loopback(&g->target))
                die("'%s' is not a loopback address; this tool only loads loopback", g->opt.addr_str);
}

/* Use every descriptor we are allowed; die if -c needs more. */
static void raise_nofile(unsigned conc) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (uint64_t) conc + 16 > (uint64_t) rl.rlim_cur)
                die("-c %u needs more descriptors than RLIMIT_NOFILE allows (%llu)", conc,
                    (unsigned long long) rl.rlim_cur);
}

static void on_signal(int sig) {
        (void) sig;
        lg_interrupted = 1;
}

/* The epoll set, the payload pattern and one idle slot per connection. */
static void setup(struct lg *g) {
        signal(SIGPIPE, SIG_IGN);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        init_pattern(g);
        g->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (g->epfd < 0)
                die("epoll_create1: %s", strerror(errno));
        g->conns = calloc(g->opt.conc, sizeof(*g->conns));
        if (!g->conns)
                die("out of memory");
        for (unsigned i = 0; i < g->opt.conc; i++) {
                g->conns[i].fd = -1;
                g->conns[i].idx = i;
                g->conns[i].state = S_IDLE;
                g->conns[i].msg = malloc(g->opt.msg_size);
                if (!g->conns[i].msg)
                        die("out of memory");
        }
}

/* The end of the output line, common to every mode: errors by kind. */
static void print_errors(const struct lg *g) {
        const struct stats *st = &g->st;

        printf(" errors=%" PRIu64, st->err_connect + st->err_reset + st->err_timeout + st->err_verify +
               st->err_eof + st->err_other + st->err_stall);
        printf(" err_connect=%" PRIu64 " err_reset=%" PRIu64 " err_timeout=%" PRIu64 " err_verify=%" PRIu64
               " err_eof=%" PRIu64 " err_other=%" PRIu64 " err_stall=%" PRIu64 " last_errno=%s%s%s%s\n",
               st->err_connect, st->err_reset, st->err_timeout, st->err_verify, st->err_eof, st->err_other,
               st->err_stall, st->last_errno ? strerrorname_np(st->last_errno) : "0",
               g->opt.label ? " label=" : "", g->opt.label ? g->opt.label : "",
               lg_interrupted ? " interrupted=1" : "");
        fflush(stdout);
}

static void teardown(struct lg *g) {
        for (unsigned i = 0; i < g->opt.conc; i++) {
                if (g->conns[i].fd >= 0)
                        close(g->conns[i].fd);
                free(g->conns[i].msg);
        }
        free(g->conns);
        free(g->lat.v);
        close(g->epfd);
}

int main(int argc, char **argv) {
        static struct lg lg; /* static: the pattern and scratch buffers are large */
        int status;

        if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        lg.opt = default_opts;
        lg.epfd = -1;
        lg.opt.mode = parse_mode(argv[1]);
        status = parse_options(&lg.opt, argc, argv);
        if (status >= 0)
                return status;
        set_target(&lg);
        raise_nofile(lg.opt.conc);
        setup(&lg);

        if (lg.opt.mode == M_HOLD)
                run_hold(&lg);
        else
                run_timed(&lg);
        print_errors(&lg);
        teardown(&lg);
        return lg_interrupted ? 130 : 0;
}
