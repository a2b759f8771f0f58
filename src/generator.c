/* echo-mpserv-generator: derives echo-mpserv.socket from the configuration.
 *
 * systemd runs it at boot and on daemon-reload with its output directories
 * (normal early late). It writes a drop-in into the normal directory with
 * the caps systemd enforces for Accept=yes (always: systemd's own defaults
 * differ from the daemon's) and the port and addresses when the
 * configuration moves them (no file: the defaults). A file it cannot read (broken,
 * unreadable) fails closed: the drop-in keeps the socket from starting
 * rather than letting it listen on the defaults, which may be wider than
 * the file wants. The reasons go to the kernel log, where systemd's own
 * generators write (a generator's stderr reaches no log; journald imports
 * the kernel log), and the socket unit repeats them when it refuses to start.
 * It never fails the boot: the exit status is 0 unless it was called wrongly
 * or could not write its output. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dropin.h"
#include "util.h"

#define UNIT "echo-mpserv.socket"
#define DROPIN "50-echo-mpserv-generator.conf"
#define CHECKER SBINDIR "/echo-mpserv"
/* /dev/kmsg lets a writer through in bursts of 10 records per 5 s (the
 * default printk_devkmsg=ratelimit): keep room for the closing line. */
#define KMSG_PROBLEMS_MAX 8

/* One record per line, at error priority, in the kernel log; on stderr
 * when there is none to write to (a container without /dev/kmsg). */
static int kmsg_fd = -1;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
        char line[1024], record[1100];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        /* One write() per record, as /dev/kmsg wants; not dprintf(), whose
         * lseek() on /dev/kmsg fails with EINVAL. */
        n = snprintf(record, sizeof(record), "<3>echo-mpserv-generator[%ld]: %s\n", (long) getpid(), line);
        if (kmsg_fd >= 0 && n > 0 && write(kmsg_fd, record, strnlen(record, sizeof(record))) > 0)
                return;
        fprintf(stderr, "echo-mpserv-generator: %s\n", line);
}

static int write_dropin(const char *dir, const struct config *c, const char *source) {
        char path[4096], tmp[4100];
        FILE *f;
        int r;

        snprintf(path, sizeof(path), "%s/" UNIT ".d", dir);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        snprintf(path, sizeof(path), "%s/" UNIT ".d/" DROPIN, dir);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        f = fopen(tmp, "we");
        if (!f)
                return negative_errno();
        r = c ? dropin_write(c, source, f) : dropin_write_closed(source, CHECKER, f);
        if (fclose(f) != 0 && r == 0)
                r = -EIO;
        if (r == 0 && rename(tmp, path) < 0)
                r = negative_errno();
        if (r < 0)
                unlink(tmp);
        return r;
}

static int fail_closed(const char *dir, const char *path, struct config_diag *diag) {
        unsigned n = 0;
        int r;

        for (char *line = strtok(diag->text, "\n"); line; line = strtok(NULL, "\n"))
                if (n++ < KMSG_PROBLEMS_MAX)
                        report("%s", line);
        if (n > KMSG_PROBLEMS_MAX)
                report("... and %u more problem(s): echo-mpserv --check-config lists them",
                       n - KMSG_PROBLEMS_MAX);
        r = write_dropin(dir, NULL, path);
        if (r < 0) {
                report("cannot write to %s: %s", dir, strerror(-r));
                return 1;
        }
        report(UNIT " will not listen until %s is fixed; then run: "
               "systemctl daemon-reload && systemctl restart " UNIT, path);
        return 0;
}

int main(int argc, char *argv[]) {
        /* For tests only: systemd passes no way to name another file, or
         * another kernel log. */
        const char *path = getenv("ECHO_MPSERV_GENERATOR_CONFIG");
        const char *kmsg = getenv("ECHO_MPSERV_GENERATOR_KMSG");
        struct config_diag diag = { 0 };
        struct config c;
        bool no_file;
        int r;

        if (argc != 2 && argc != 4) {
                fprintf(stderr, "echo-mpserv-generator: usage: %s NORMAL-DIR [EARLY-DIR LATE-DIR]\n", argv[0]);
                return 2;
        }
        if (!path)
                path = CONFIG_DEFAULT_PATH;
        kmsg_fd = open(kmsg ? kmsg : "/dev/kmsg", O_WRONLY | O_NOCTTY | O_CLOEXEC | (kmsg ? O_APPEND : 0));

        /* The daemon's rule (config_load_file()): nothing at the path is
         * the defaults, and so the socket's; a symbolic link to nothing is
         * a broken configuration, as it is for the daemon. */
        r = config_load_file(path, false, &c, &no_file, &diag);
        if (r < 0)
                return fail_closed(argv[1], path, &diag);
        r = write_dropin(argv[1], &c, path);
        if (r < 0) {
                report("cannot write to %s: %s", argv[1], strerror(-r));
                return 1;
        }
        return 0;
}
