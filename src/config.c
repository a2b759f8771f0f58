/* Loading, validating, dumping and comparing the configuration.
 *
 * Every key is described once in keys[]: its type, range, where it lives in
 * struct config and whether a reload applies it. Loading, --dump-config and
 * the reload report all walk that one table, so they cannot disagree. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "config.h"
#include "util.h"

enum kind {
        KIND_U16,
        KIND_U32,
        KIND_U64,
        KIND_DURATION, /* seconds in the file (integer or fraction), ms in memory */
        KIND_LOG_LEVEL,
        KIND_ADDRESSES,
};

struct key {
        const char *name;
        enum kind kind;
        size_t offset;
        uint64_t min, max; /* durations: in ms; 0 is always allowed and means "no limit" */
        bool reloadable;
};

#define FIELD(f) offsetof(struct config, f)
#define DAY_MS UINT64_C(86400000)

static const struct key keys[] = {
        { "port",              KIND_U16,       FIELD(port),                1, 65535,                  false },
        { "listen",            KIND_ADDRESSES, FIELD(listen),              1, CONFIG_MAX_LISTEN,      false },
        { "backlog",           KIND_U32,       FIELD(backlog),             1, 65535,                  false },
        { "max_clients",       KIND_U32,       FIELD(max_clients),         1, CONFIG_MAX_CLIENTS_LIMIT, true },
        { "idle_timeout",      KIND_DURATION,  FIELD(idle_timeout_ms),     1, 7 * DAY_MS,             true },
        { "write_timeout",     KIND_DURATION,  FIELD(write_timeout_ms),    1, 7 * DAY_MS,             true },
        { "max_session_time",  KIND_DURATION,  FIELD(max_session_time_ms), 1, 30 * DAY_MS,           true },
        { "max_session_bytes", KIND_U64,       FIELD(max_session_bytes),   0, UINT64_C(1) << 60,      true },
        { "buffer_size",       KIND_U32,       FIELD(buffer_size),         1024, 1024 * 1024,         true },
        { "drain_timeout",     KIND_DURATION,  FIELD(drain_timeout_ms),    1, 300 * 1000,             true },
        { "log_level",         KIND_LOG_LEVEL, FIELD(log_level),           0, 0,                      true },
};

static const char *const level_names[] = {
        [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void config_defaults(struct config *c) {
        /* memset first: padding and unused string bytes are zero, so two
         * equal configurations are equal byte for byte. */
        memset(c, 0, sizeof(*c));
        c->port = 7;
        c->n_listen = 1;
        snprintf(c->listen[0], CONFIG_ADDR_MAX, "::");
        c->backlog = 1024;
        c->max_clients = 256;
        c->idle_timeout_ms = 300 * 1000;
        c->write_timeout_ms = 30 * 1000;
        c->max_session_time_ms = 3600 * 1000;
        c->max_session_bytes = UINT64_C(1) << 30;
        c->buffer_size = 64 * 1024;
        c->drain_timeout_ms = 10 * 1000;
        c->log_level = LOG_INFO;
}

const char *config_log_level_name(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names) || !level_names[level])
                return "unknown";
        return level_names[level];
}

int config_log_level_from_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && strcmp(level_names[i], name) == 0)
                        return (int) i;
        return -EINVAL;
}

void config_diag_add(struct config_diag *d, const char *fmt, ...) {
        va_list ap;
        int n;

        d->count++;
        if (d->len >= sizeof(d->text) - 1)
                return;
        va_start(ap, fmt);
        n = vsnprintf(d->text + d->len, sizeof(d->text) - d->len - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        d->len += (size_t) n;
        if (d->len > sizeof(d->text) - 2)
                d->len = sizeof(d->text) - 2;
        d->text[d->len++] = '\n';
        d->text[d->len] = 0;
}

static void *field(struct config *c, const struct key *k) {
        return (char *) c + k->offset;
}

static const void *cfield(const struct config *c, const struct key *k) {
        return (const char *) c + k->offset;
}

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP: return "a group";
        case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
        case CONFIG_TYPE_FLOAT: return "a number with a fraction";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL: return "a boolean";
        case CONFIG_TYPE_ARRAY: return "an array";
        case CONFIG_TYPE_LIST: return "a list";
        default: return "an unknown type";
        }
}

static int set_integer(const char *name, const struct key *k, config_setting_t *s,
                       struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s);
        long long v;

        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
                config_diag_add(diag, "%s:%u: %s must be an integer, not %s", name, line, k->name, type_name(type));
                return -EINVAL;
        }
        v = config_setting_get_int64(s);
        if (v < 0 || (uint64_t) v < k->min || (uint64_t) v > k->max) {
                config_diag_add(diag, "%s:%u: %s = %lld is out of range (%" PRIu64 "..%" PRIu64 ")",
                                name, line, k->name, v, k->min, k->max);
                return -ERANGE;
        }
        if (k->kind == KIND_U16)
                *(uint16_t *) field(c, k) = (uint16_t) v;
        else if (k->kind == KIND_U32)
                *(uint32_t *) field(c, k) = (uint32_t) v;
        else
                *(uint64_t *) field(c, k) = (uint64_t) v;
        return 0;
}

static int set_duration(const char *name, const struct key *k, config_setting_t *s,
                        struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s);
        double seconds;
        uint64_t ms;

        if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
                seconds = (double) config_setting_get_int64(s);
        else if (type == CONFIG_TYPE_FLOAT)
                seconds = config_setting_get_float(s);
        else {
                config_diag_add(diag, "%s:%u: %s must be a number of seconds, not %s",
                                name, line, k->name, type_name(type));
                return -EINVAL;
        }
        if (!isfinite(seconds) || seconds < 0 || seconds * 1000.0 > (double) k->max + 0.5 ||
            (seconds > 0 && seconds * 1000.0 < 0.5)) {
                config_diag_add(diag, "%s:%u: %s = %g s is out of range (0 for no limit, or 0.001..%" PRIu64 " s)",
                                name, line, k->name, seconds, k->max / 1000);
                return -ERANGE;
        }
        ms = (uint64_t) llround(seconds * 1000.0);
        *(uint32_t *) field(c, k) = (uint32_t) ms;
        return 0;
}

static int set_log_level(const char *name, const struct key *k, config_setting_t *s,
                         struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        const char *v = config_setting_get_string(s);
        int level;

        if (!v) {
                config_diag_add(diag, "%s:%u: %s must be a string, not %s",
                                name, line, k->name, type_name(config_setting_type(s)));
                return -EINVAL;
        }
        level = config_log_level_from_name(v);
        if (level < 0) {
                config_diag_add(diag, "%s:%u: %s = \"%s\" is not one of error, warning, notice, info, debug",
                                name, line, k->name, v);
                return -EINVAL;
        }
        c->log_level = level;
        return 0;
}

static int add_address(const char *name, unsigned line, const char *v, struct config *c,
                       struct config_diag *diag) {
        unsigned char bin[sizeof(struct in6_addr)];

        if (!v) {
                config_diag_add(diag, "%s:%u: listen entries must be strings", name, line);
                return -EINVAL;
        }
        if (inet_pton(AF_INET, v, bin) != 1 && inet_pton(AF_INET6, v, bin) != 1) {
                config_diag_add(diag, "%s:%u: listen: \"%s\" is not a numeric IPv4 or IPv6 address",
                                name, line, v);
                return -EINVAL;
        }
        for (uint32_t i = 0; i < c->n_listen; i++)
                if (strcmp(c->listen[i], v) == 0) {
                        config_diag_add(diag, "%s:%u: listen: \"%s\" is given twice", name, line, v);
                        return -EINVAL;
                }
        if (c->n_listen >= CONFIG_MAX_LISTEN) {
                config_diag_add(diag, "%s:%u: listen: more than %d addresses", name, line, CONFIG_MAX_LISTEN);
                return -E2BIG;
        }
        memset(c->listen[c->n_listen], 0, CONFIG_ADDR_MAX);
        snprintf(c->listen[c->n_listen++], CONFIG_ADDR_MAX, "%s", v);
        return 0;
}

static int set_addresses(const char *name, const struct key *k, config_setting_t *s,
                         struct config *c, struct config_diag *diag) {
        unsigned line = config_setting_source_line(s);
        int type = config_setting_type(s), n, r = 0;

        c->n_listen = 0;
        memset(c->listen, 0, sizeof(c->listen));
        if (type == CONFIG_TYPE_STRING)
                return add_address(name, line, config_setting_get_string(s), c, diag);
        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
                config_diag_add(diag, "%s:%u: %s must be an array of address strings, not %s",
                                name, line, k->name, type_name(type));
                return -EINVAL;
        }
        n = config_setting_length(s);
        if (n == 0) {
                config_diag_add(diag, "%s:%u: %s must name at least one address", name, line, k->name);
                return -EINVAL;
        }
        for (int i = 0; i < n && r >= 0; i++)
                r = add_address(name, line, config_setting_get_string_elem(s, i), c, diag);
        return r;
}

static int set_key(const char *name, const struct key *k, config_setting_t *s,
                   struct config *c, struct config_diag *diag) {
        switch (k->kind) {
        case KIND_U16: case KIND_U32: case KIND_U64:
                return set_integer(name, k, s, c, diag);
        case KIND_DURATION:
                return set_duration(name, k, s, c, diag);
        case KIND_LOG_LEVEL:
                return set_log_level(name, k, s, c, diag);
        case KIND_ADDRESSES:
                return set_addresses(name, k, s, c, diag);
        }
        return -EINVAL;
}

static const struct key *find_key(const char *n) {
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strcmp(keys[i].name, n) == 0)
                        return &keys[i];
        return NULL;
}

int config_parse(const char *name, const char *text, size_t len, struct config *out, struct config_diag *diag) {
        config_t lc;
        struct config c;
        config_setting_t *root;
        unsigned before = diag->count;
        int n;

        if (memchr(text, 0, len)) {
                size_t at = (size_t) ((const char *) memchr(text, 0, len) - text);
                unsigned line = 1;
                for (size_t i = 0; i < at; i++)
                        line += text[i] == '\n';
                config_diag_add(diag, "%s:%u: contains a NUL byte; not a text file", name, line);
                return -EINVAL;
        }
        /* Parse even after a bad literal, so one run reports every problem;
         * the count check at the end still refuses the file. */
        (void) config_check_literals(name, text, len, diag);

        config_defaults(&c);
        config_init(&lc);
        if (config_read_string(&lc, text) != CONFIG_TRUE) {
                config_diag_add(diag, "%s:%d: %s", name, config_error_line(&lc), config_error_text(&lc));
                config_destroy(&lc);
                return -EINVAL;
        }

        root = config_root_setting(&lc);
        n = config_setting_length(root);
        for (int i = 0; i < n; i++) {
                config_setting_t *s = config_setting_get_elem(root, (unsigned) i);
                const char *key = config_setting_name(s);
                const struct key *k = key ? find_key(key) : NULL;

                if (!k)
                        config_diag_add(diag, "%s:%u: unknown key '%s'", name,
                                        config_setting_source_line(s), key ? key : "?");
                else
                        (void) set_key(name, k, s, &c, diag);
        }
        config_destroy(&lc);

        if (diag->count > before)
                return -EINVAL;
        *out = c;
        return 0;
}

static int read_capped(int fd, char **ret, size_t *ret_len) {
        _cleanup_(freep) char *buf = malloc(CONFIG_MAX_FILE_SIZE + 2);
        size_t len = 0;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + len, CONFIG_MAX_FILE_SIZE + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > CONFIG_MAX_FILE_SIZE)
                        return -EFBIG;
        }
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

static int format_value(const struct config *c, const struct key *k, char *buf, size_t size) {
        const void *p = cfield(c, k);
        uint32_t ms;
        size_t used = 0;

        switch (k->kind) {
        case KIND_U16:
                return snprintf(buf, size, "%u", *(const uint16_t *) p);
        case KIND_U32:
                return snprintf(buf, size, "%" PRIu32, *(const uint32_t *) p);
        case KIND_U64: {
                uint64_t v = *(const uint64_t *) p;
                /* Without the L suffix libconfig would wrap anything past 32 bits. */
                return snprintf(buf, size, "%" PRIu64 "%s", v, v > INT32_MAX ? "L" : "");
        }
        case KIND_DURATION:
                ms = *(const uint32_t *) p;
                if (ms % 1000 == 0)
                        return snprintf(buf, size, "%" PRIu32, ms / 1000);
                return snprintf(buf, size, "%" PRIu32 ".%03" PRIu32, ms / 1000, ms % 1000);
        case KIND_LOG_LEVEL:
                return snprintf(buf, size, "\"%s\"", config_log_level_name(c->log_level));
        case KIND_ADDRESSES:
                used += (size_t) snprintf(buf, size, "[");
                for (uint32_t i = 0; i < c->n_listen && used < size; i++)
                        used += (size_t) snprintf(buf + used, size - used, "%s\"%s\"",
                                                  i ? ", " : " ", c->listen[i]);
                if (used < size)
                        used += (size_t) snprintf(buf + used, size - used, " ]");
                return (int) used;
        }
        return -EINVAL;
}

int config_dump(const struct config *c, FILE *f) {
        char v[CONFIG_MAX_LISTEN * (CONFIG_ADDR_MAX + 4) + 8];

        fputs("# echo-mpserv: effective configuration (durations in seconds)\n", f);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                format_value(c, &keys[i], v, sizeof(v));
                fprintf(f, "%s = %s;\n", keys[i].name, v);
        }
        return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

unsigned config_describe_changes(const struct config *old, const struct config *new,
                                 char *buf, size_t size, bool *needs_restart) {
        char a[CONFIG_MAX_LISTEN * (CONFIG_ADDR_MAX + 4) + 8], b[sizeof(a)];
        unsigned changes = 0;
        size_t used = 0;

        *needs_restart = false;
        if (size > 0)
                buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                format_value(old, &keys[i], a, sizeof(a));
                format_value(new, &keys[i], b, sizeof(b));
                if (strcmp(a, b) == 0)
                        continue;
                changes++;
                if (!keys[i].reloadable)
                        *needs_restart = true;
                if (used < size)
                        used += (size_t) snprintf(buf + used, size - used, "%s%s %s -> %s%s",
                                                  changes > 1 ? ", " : "", keys[i].name, a, b,
                                                  keys[i].reloadable ? "" : " (after a restart)");
        }
        return changes;
}
