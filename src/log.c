/* See log.h for the contract. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define MAX_FIELDS 24
#define LINE_MAX_LEN 2048

static enum log_target target = LOG_TARGET_STDERR;
static int max_level = LOG_INFO;
/* stderr is the journal's stream: lines carry "<N>" (sd-daemon(3)) so the
 * journal keeps their priority. */
static bool stderr_journal;

static const char *const level_prefix[] = {
        "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
};

static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

enum log_target log_choose_target(bool journal_socket_present) {
        /* sd_journal_send() reports success when journald is absent and
         * drops the record, so the journal is chosen only when it exists. */
        if (journal_socket_present && (stderr_is_journal() || getenv("INVOCATION_ID")))
                return LOG_TARGET_JOURNAL;
        return LOG_TARGET_STDERR;
}

void log_setup(void) {
        stderr_journal = stderr_is_journal();
        target = log_choose_target(access("/run/systemd/journal/socket", W_OK) == 0);
}

enum log_target log_get_target(void) {
        return target;
}

void log_set_target(enum log_target t) {
        target = t;
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

static void write_stderr(int level, const char *message) {
        char line[LINE_MAX_LEN];
        int n = stderr_journal ? snprintf(line, sizeof(line), "<%d>%s\n", level & 7, message)
                               : snprintf(line, sizeof(line), "%s: %s\n", level_prefix[level & 7], message);
        size_t len = n < 0 ? 0 : (size_t) n;

        if (len >= sizeof(line)) {
                len = sizeof(line) - 1;
                line[len - 1] = '\n';
        }
        while (len > 0) {
                ssize_t w = write(STDERR_FILENO, line, len);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return; /* nowhere left to report it */
                memmove(line, line + w, len - (size_t) w);
                len -= (size_t) w;
        }
}

void log_struct(int level, const char *msgid, const char *message, const char *const *fields, size_t n_fields) {
        char prio[16], mid[48], msg[LINE_MAX_LEN];
        struct iovec iov[MAX_FIELDS + 4];
        size_t n = 0;

        if (!log_enabled(level))
                return;
        if (target == LOG_TARGET_JOURNAL) {
                snprintf(msg, sizeof(msg), "MESSAGE=%s", message);
                snprintf(prio, sizeof(prio), "PRIORITY=%d", level & 7);
                iov[n++] = (struct iovec) { msg, strlen(msg) };
                iov[n++] = (struct iovec) { prio, strlen(prio) };
                iov[n++] = (struct iovec) { (void *) "SYSLOG_IDENTIFIER=echo-mpserv", 29 };
                if (msgid) {
                        snprintf(mid, sizeof(mid), "MESSAGE_ID=%s", msgid);
                        iov[n++] = (struct iovec) { mid, strlen(mid) };
                }
                for (size_t i = 0; i < n_fields && n < ELEMENTSOF(iov); i++)
                        iov[n++] = (struct iovec) { (void *) fields[i], strlen(fields[i]) };
                if (sd_journal_sendv(iov, (int) n) >= 0)
                        return;
        }
        write_stderr(level, message);
}

__attribute__((format(printf, 4, 0)))
static void log_va(int level, const char *msgid, int err, const char *fmt, va_list ap) {
        char message[LINE_MAX_LEN];
        int n = vsnprintf(message, sizeof(message), fmt, ap);

        if (err < 0 && n >= 0 && (size_t) n < sizeof(message))
                snprintf(message + n, sizeof(message) - (size_t) n, ": %s", strerror(-err));
        log_struct(level, msgid, message, NULL, 0);
}

void log_msg(int level, const char *msgid, const char *fmt, ...) {
        va_list ap;

        if (!log_enabled(level))
                return;
        va_start(ap, fmt);
        log_va(level, msgid, 0, fmt, ap);
        va_end(ap);
}

int log_errno(int level, int err, const char *msgid, const char *fmt, ...) {
        va_list ap;

        if (!log_enabled(level))
                return err;
        va_start(ap, fmt);
        log_va(level, msgid, err, fmt, ap);
        va_end(ap);
        return err;
}

void log_lines(int level, const char *msgid, const char *prefix, const char *text) {
        for (const char *p = text; *p;) {
                size_t n = strcspn(p, "\n");

                if (n > 0)
                        log_msg(level, msgid, "%s%.*s", prefix, (int) n, p);
                p += n + (p[n] == '\n');
        }
}

bool ratelimit_allow(struct ratelimit *rl, uint64_t now, unsigned *suppressed) {
        if (rl->begin == 0 || now - rl->begin >= rl->interval_usec) {
                rl->begin = now;
                rl->count = 0;
        }
        if (rl->count < rl->burst) {
                rl->count++;
                *suppressed = rl->suppressed;
                rl->suppressed = 0;
                return true;
        }
        rl->suppressed++;
        return false;
}

uint64_t ratelimit_owed_at(const struct ratelimit *rl) {
        return rl->suppressed ? rl->begin + rl->interval_usec : 0;
}
