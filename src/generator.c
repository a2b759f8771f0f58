/* echo-mpserv-generator: derives echo-mpserv.socket from the configuration.
 *
 * systemd runs it at boot and on daemon-reload with its output directories
 * (normal early late). It writes a drop-in into the normal directory when
 * the configuration moves the port or the addresses, nothing when they are
 * the defaults, and nothing (saying why on stderr, which systemd sends to
 * the kernel log) when the configuration is broken or unreadable: the socket
 * then keeps its defaults. It never fails the boot: the exit status is 0
 * unless it was called wrongly or could not write its output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dropin.h"

#define UNIT "echo-mpserv.socket"
#define DROPIN "50-echo-mpserv-generator.conf"

static int write_dropin(const char *dir, const struct config *c, const char *source) {
        char path[4096], tmp[4100];
        FILE *f;
        int r;

        snprintf(path, sizeof(path), "%s/" UNIT ".d", dir);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return -errno;
        snprintf(path, sizeof(path), "%s/" UNIT ".d/" DROPIN, dir);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        f = fopen(tmp, "we");
        if (!f)
                return -errno;
        r = dropin_write(c, source, f);
        if (fclose(f) != 0 && r == 0)
                r = -EIO;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int main(int argc, char *argv[]) {
        /* For tests only: systemd passes no way to name another file. */
        const char *path = getenv("ECHO_MPSERV_GENERATOR_CONFIG");
        struct config_diag diag = { 0 };
        struct config c;
        int r;

        if (argc != 2 && argc != 4) {
                fprintf(stderr, "echo-mpserv-generator: usage: %s NORMAL-DIR [EARLY-DIR LATE-DIR]\n", argv[0]);
                return 2;
        }
        if (!path)
                path = CONFIG_DEFAULT_PATH;

        r = config_load(path, &c, &diag);
        if (r == -ENOENT)
                return 0; /* no configuration: the socket's defaults are the defaults */
        if (r < 0) {
                for (char *line = strtok(diag.text, "\n"); line; line = strtok(NULL, "\n"))
                        fprintf(stderr, "echo-mpserv-generator: %s\n", line);
                fprintf(stderr, "echo-mpserv-generator: leaving " UNIT " at its defaults "
                        "(port 7) until the configuration is fixed\n");
                return 0;
        }
        if (dropin_is_default(&c))
                return 0;
        r = write_dropin(argv[1], &c, path);
        if (r < 0) {
                fprintf(stderr, "echo-mpserv-generator: cannot write to %s: %s\n", argv[1], strerror(-r));
                return 1;
        }
        return 0;
}
