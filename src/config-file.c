/* Which file the daemon reads, and what its absence means: one rule for the
 * start, --check-config and every reload (config.h, config_load_file()). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "config-keys.h"

int config_load_file(const char *path, bool given, struct config *out, bool *no_file, struct config_diag *diag) {
        struct config_diag before = *diag;
        struct stat st;
        int r;

        *no_file = false;
        r = config_load(path, out, diag);
        if (r == -ENOENT && !given) {
                *diag = before;
                /* open() said ENOENT, yet there is something at path: a
                 * symbolic link to nothing. Someone put it there to be the
                 * configuration; the defaults would take its place without
                 * a word. */
                if (lstat(path, &st) == 0) {
                        config_diag_add(diag, "%s: a symbolic link to a file that does not exist", path);
                        return -ENOENT;
                }
                config_defaults(out);
                *no_file = true;
                return 0;
        }
        return r;
}
