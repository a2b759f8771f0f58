/* Logging: the only module that writes log records.
 *
 * Records go to the journal (native protocol, structured fields) when stderr
 * is connected to it (JOURNAL_STREAM) or when systemd started us
 * (INVOCATION_ID), provided the journal socket exists; otherwise each record is one line on stderr,
 * "LEVEL: MESSAGE", written with a single write() so concurrent writers never
 * interleave. If a journal send fails, that record falls back to stderr. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

/* One MESSAGE_ID per event kind; the catalog (systemd/echo-mpserv.catalog)
 * explains each. Changing one breaks operators' journalctl filters. */
#define MSGID_STARTUP           "29740cc534dd41cd953de89b774700d7"
#define MSGID_LISTENING         "2c4f968968bc43deb51554edd6091da7"
#define MSGID_CONNECTION        "f0e38bcc52874ef98e57dc873ff05f03"
#define MSGID_RELOAD            "1a61a028dd5d468e823654794d134c78"
#define MSGID_RELOAD_FAILED     "ff66d4fdc1864302aa80493330d311fe"
#define MSGID_CAP_REACHED       "cab1346d77af4af4878a1512ee803b12"
#define MSGID_CAP_CLEARED       "0852565aef4948ff8820917fd73a844c"
#define MSGID_FORK_FAILED       "e735915437374159803937ee1ec69c68"
#define MSGID_ACCEPT_FAILED     "13476d5a0ceb4d19bad4c4f815932018"
#define MSGID_SHUTDOWN          "c79735824d4b44e9afbbbb03121bb193"
#define MSGID_CONFIG            "0811b5610c134c1a8d2887b7af0592cf"
#define MSGID_RECOVERED         "cd1301de15e842e9a0c93c1a0d503e9e"
#define MSGID_STOPPED           "3422e862351748908e86a27c34e010ff"
#define MSGID_SUMMARY           "be95ba5a64a6407e94dc2029a61a6edd"
#define MSGID_REFUSED           "b1e067611acd413c80239b49fcde3715"
#define MSGID_BUDGET_SPENT      "1f4a63ea058a4cf896d327bf2bccee01"
#define MSGID_BUDGET_SUMMARY    "7f8dfbe9eb64428aaebb1bf94479cdb5"
#define MSGID_BUDGET_RESTORED   "f9fa98b289b648e79b0c5bc47a255a59"

enum log_target {
        LOG_TARGET_STDERR,
        LOG_TARGET_JOURNAL,
};

/* Chooses the target from the environment (see above). */
void log_setup(void);
/* The choice itself, given whether the journal socket exists. */
enum log_target log_choose_target(bool journal_socket_present);
enum log_target log_get_target(void);
/* LOG_TARGET_STDERR also serves a process about to exit: journald attributes
 * a native record to a unit by reading the sender's cgroup, which is gone
 * once the sender has exited (systemd issue #2913), and "systemctl status"
 * would not show it; the stderr stream is attributed when it connects. */
void log_set_target(enum log_target t);
void log_set_max_level(int level);
int log_get_max_level(void);

static inline bool log_enabled(int level) {
        return level <= log_get_max_level();
}

/* msgid may be NULL. */
void log_msg(int level, const char *msgid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One record per line of a multi-line text (such as the "FILE:LINE: message"
 * lines of a configuration error), each led by prefix. */
void log_lines(int level, const char *msgid, const char *prefix, const char *text);

/* Logs "MESSAGE: strerror(-err)" and returns err, so a caller can log and
 * fail in one statement: return log_errno(LOG_ERR, r, NULL, "..."). */
int log_errno(int level, int err, const char *msgid, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A record with extra journal fields, each "KEY=value". On stderr only the
 * message is shown, so the message must carry what an operator needs. */
void log_struct(int level, const char *msgid, const char *message, const char *const *fields, size_t n_fields);

/* Allows `burst` events per `interval_usec`; past that it counts what it
 * suppressed so the next allowed record can say so. A caller that must not
 * leave the last events unsaid (a state that changed back and forth) writes
 * that next record itself at ratelimit_owed_at(). */
struct ratelimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin;
        unsigned count;
        unsigned suppressed;
};

/* True when the caller may log now; *suppressed receives (and resets) the
 * number of events dropped since the last allowed one. */
bool ratelimit_allow(struct ratelimit *rl, uint64_t now_usec, unsigned *suppressed);
/* When events were suppressed: the end of their window, from which
 * ratelimit_allow() lets the record that reports them through. 0 when
 * nothing is owed. */
uint64_t ratelimit_owed_at(const struct ratelimit *rl);
