/* fork-floor: how many fork() + _exit() + waitpid() cycles per second this
 * machine does. No fork-per-client server can accept connections faster
 * than it can do this, so it is the floor cost of the design.
 *
 * Built twice: fork-floor is a minimal process; fork-floor-libs
 * (-DWITH_DAEMON_LIBS) also maps echo-mpserv's shared libraries, because
 * fork() and exit() cost grows with the number of mappings.
 *
 * Usage: fork-floor [-d SECONDS] [-m MEBIBYTES] [-l LABEL]
 *   -m  touch this much private memory before forking, to see how the
 *       parent's size changes the cost (default 0: a minimal process)
 * Output: one line of key=value pairs. Bounded by -d (default 3 s). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef WITH_DAEMON_LIBS
/* Only referenced, never called: makes the dynamic linker map the daemon's
 * libraries (and everything they pull in) into this process too. */
#include <libconfig.h>
#include <math.h>
#include <systemd/sd-daemon.h>
/* Function pointers: ISO C converts between function pointer types, never
 * to void *. */
typedef void (*fn_t)(void);
__attribute__((used)) static fn_t volatile daemon_libs[] = { (fn_t) sd_booted, (fn_t) config_init, (fn_t) nextafter };
#define VARIANT "daemon-libs"
#else
#define VARIANT "plain"
#endif

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int count_maps(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        int n = 0, ch;
        if (!f)
                return -1;
        while ((ch = getc(f)) != EOF)
                n += ch == '\n';
        fclose(f);
        return n;
}

struct options {
        double duration;        /* -d: seconds of forking */
        unsigned long mib;      /* -m: private memory touched first */
        const char *label;      /* -l */
};

/* Returns -1 to go on, or the exit status. */
static int parse_options(struct options *o, int argc, char **argv) {
        int c;

        while ((c = getopt(argc, argv, "d:m:l:h")) >= 0) {
                switch (c) {
                case 'd':
                        o->duration = strtod(optarg, NULL);
                        if (!(o->duration > 0 && o->duration <= 600)) {
                                fprintf(stderr, "fork-floor: -d expects 0..600 seconds\n");
                                return 2;
                        }
                        break;
                case 'm':
                        o->mib = strtoul(optarg, NULL, 10);
                        if (o->mib > 4096) {
                                fprintf(stderr, "fork-floor: -m expects at most 4096\n");
                                return 2;
                        }
                        break;
                case 'l':
                        o->label = optarg;
                        break;
                default:
                        fprintf(stderr, "Usage: fork-floor [-d SECONDS] [-m MEBIBYTES] [-l LABEL]\n");
                        return c == 'h' ? 0 : 2;
                }
        }
        return -1;
}

struct tally {
        uint64_t forks, failures;
        double secs;
};

/* Forks, exits and reaps until duration is over. Returns 0, or -1 after
 * more than 1,000 failed forks (reported). */
static int fork_loop(double duration, struct tally *r) {
        double t0 = now_s(), t, end = t0 + duration;

        do {
                pid_t pid = fork();
                if (pid == 0)
                        _exit(0);
                if (pid < 0) {
                        r->failures++;
                        if (r->failures > 1000) {
                                fprintf(stderr, "fork-floor: fork: %s\n", strerror(errno));
                                return -1;
                        }
                        usleep(1000);
                } else {
                        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                                ;
                        r->forks++;
                }
                t = now_s();
        } while (t < end);
        r->secs = t - t0;
        return 0;
}

int main(int argc, char **argv) {
        struct options o = { .duration = 3.0 };
        struct tally r = { 0 };
        char *ballast = NULL;
        int status = parse_options(&o, argc, argv);

        if (status >= 0)
                return status;
        if (o.mib) {
                ballast = malloc(o.mib << 20);
                if (!ballast) {
                        fprintf(stderr, "fork-floor: out of memory\n");
                        return 1;
                }
                memset(ballast, 1, o.mib << 20);
        }
        if (fork_loop(o.duration, &r) < 0)
                return 1;
        printf("mode=forkfloor variant=" VARIANT " maps=%d secs=%.3f forks=%llu forks_per_s=%.1f usec_per_fork=%.2f ballast_mib=%lu failures=%llu%s%s\n",
               count_maps(), r.secs, (unsigned long long) r.forks, (double) r.forks / r.secs,
               r.forks ? r.secs * 1e6 / (double) r.forks : 0.0, o.mib,
               (unsigned long long) r.failures, o.label ? " label=" : "", o.label ? o.label : "");
        free(ballast);
        return 0;
}
