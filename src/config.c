/* Loading and validating the configuration: the file read with a bound,
 * scanned (config-scan.c), parsed by libconfig, and its settings turned into
 * struct config fields (config-values.c) according to the key table
 * (config-keys.c); the diagnostics collected on the way. With
 * config-values.c, the only files that include <libconfig.h>. */
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "config-keys.h"
#include "config-scan.h"
#include "config-values.h"
#include "util.h"

/* Room kept at the end of the text for the line that counts the rest. */
#define DIAG_TAIL 64

void config_diag_add(struct config_diag *d, const char *fmt, ...) {
        char line[1024];
        va_list ap;
        int n;

        d->count++;
        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0)
                n = snprintf(line, sizeof(line), "(a problem that cannot be described)");
        if ((size_t) n >= sizeof(line))
                n = sizeof(line) - 1;
        if (d->kept == d->len && d->len + (size_t) n + 1 + DIAG_TAIL < sizeof(d->text)) {
                memcpy(d->text + d->len, line, (size_t) n);
                d->len += (size_t) n;
                d->text[d->len++] = '\n';
                d->text[d->len] = 0;
                d->kept = d->len;
                d->shown++;
                return;
        }
        n = snprintf(d->text + d->kept, sizeof(d->text) - d->kept, "(and %u more problem(s) not shown)\n",
                     d->count - d->shown);
        d->len = d->kept + (size_t) n;
}

/* Hands the settings libconfig returned to the scan's comparison. */
static int check_all_read(const char *name, config_setting_t *root, const struct config_scan *scan,
                          struct config_diag *diag) {
        unsigned n = (unsigned) config_setting_length(root);
        _cleanup_(freep) struct config_read *got = calloc(n ? n : 1, sizeof(*got));

        if (!got)
                return -ENOMEM;
        for (unsigned i = 0; i < n; i++) {
                config_setting_t *s = config_setting_get_elem(root, i);
                const char *key = config_setting_name(s);

                got[i] = (struct config_read) { .name = key ? key : "", .line = config_setting_source_line(s) };
        }
        config_scan_compare(name, scan, got, n, diag);
        return 0;
}

static void config_scan_donep(struct config_scan *scan) {
        config_scan_done(scan);
}

int config_parse(const char *name, const char *text, size_t len, struct config *out, struct config_diag *diag) {
        _cleanup_(config_scan_donep) struct config_scan scan = { 0 };
        unsigned before = diag->count;
        struct config c;
        config_t lc;
        int r;

        if (memchr(text, 0, len)) {
                size_t at = (size_t) ((const char *) memchr(text, 0, len) - text);
                unsigned line = 1;
                for (size_t i = 0; i < at; i++)
                        line += text[i] == '\n';
                config_diag_add(diag, "%s:%u: contains a NUL byte; not a text file", name, line);
                return -EINVAL;
        }
        /* Parse even after a bad literal, so one run reports every problem;
         * the count check at the end still refuses the file. But never hand
         * libconfig what the scan withholds (see config-scan.h). */
        r = config_scan(name, text, len, &scan, diag);
        if (r < 0) {
                config_diag_add(diag, "%s: %s", name, strerror(-r));
                return r;
        }
        if (scan.withhold)
                return -EINVAL;

        /* libconfig 1.5 calls a comment on a last line without a newline a
         * syntax error; a file is text, so it gets its newline. */
        _cleanup_(freep) char *copy = malloc(len + 2);
        if (!copy) {
                config_diag_add(diag, "%s: %s", name, strerror(ENOMEM));
                return -ENOMEM;
        }
        memcpy(copy, text, len);
        copy[len] = '\n';
        copy[len + 1] = 0;

        config_defaults(&c);
        config_init(&lc);
        if (config_read_string(&lc, copy) != CONFIG_TRUE) {
                config_scan_parse_error(name, &scan, (unsigned) config_error_line(&lc), config_error_text(&lc),
                                        diag);
                config_destroy(&lc);
                return -EINVAL;
        }
        r = check_all_read(name, config_root_setting(&lc), &scan, diag);
        if (r < 0)
                config_diag_add(diag, "%s: %s", name, strerror(-r));
        config_set_all(name, config_root_setting(&lc), &c, diag);
        /* One source for the key: a file holding both would keep the
         * secret in the world-readable place it was moved out of. */
        if (c.log_hash_key[0] && c.log_hash_key_credential[0])
                config_diag_add(diag, "%s:%u: log_hash_key and log_hash_key_credential exclude each other; "
                                "keep the key in the credential only", name,
                                config_setting_source_line(config_lookup(&lc, "log_hash_key")));
        config_destroy(&lc);

        if (diag->count > before)
                return -EINVAL;
        *out = c;
        return 0;
}

static int read_capped(int fd, char **ret, size_t *ret_len) {
        _cleanup_(freep) char *buf = malloc(CONFIG_MAX_FILE_SIZE + 2);
        size_t len;
        int r;

        if (!buf)
                return -ENOMEM;
        r = read_bounded(fd, buf, CONFIG_MAX_FILE_SIZE, &len);
        if (r < 0)
                return r;
        if (len > CONFIG_MAX_FILE_SIZE)
                return -EFBIG;
        buf[len] = 0;
        *ret = buf;
        buf = NULL;
        *ret_len = len;
        return 0;
}

int config_load(const char *path, struct config *out, struct config_diag *diag) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *text = NULL;
        struct stat st;
        size_t len;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = negative_errno();
                config_diag_add(diag, "%s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                config_diag_add(diag, "%s: not a regular file", path);
                return -EINVAL;
        }
        if (st.st_size > CONFIG_MAX_FILE_SIZE) {
                config_diag_add(diag, "%s: %lld bytes is more than the %d-byte limit; not parsed",
                                path, (long long) st.st_size, CONFIG_MAX_FILE_SIZE);
                return -EFBIG;
        }
        r = read_capped(fd, &text, &len);
        if (r == -EFBIG)
                config_diag_add(diag, "%s: grew past the %d-byte limit while being read; not parsed",
                                path, CONFIG_MAX_FILE_SIZE);
        else if (r < 0)
                config_diag_add(diag, "%s: %s", path, strerror(-r));
        if (r < 0)
                return r;
        return config_parse(path, text, len, out, diag);
}

