/* log: stderr format and levels, journal fallback, the rate limiter and
 * the records it owes. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "capture.h"
#include "log.h"
#include "util.h"

static void test_stderr_lines(void) {
        struct capture c;
        const char *out;

        unsetenv("JOURNAL_STREAM");
        unsetenv("INVOCATION_ID");
        log_setup();
        ASSERT(log_get_target() == LOG_TARGET_STDERR);
        log_set_max_level(LOG_INFO);
        capture_start(&c);
        log_msg(LOG_INFO, MSGID_STARTUP, "hello %d", 42);
        log_msg(LOG_DEBUG, NULL, "not shown");
        ASSERT_INT(log_errno(LOG_WARNING, -EMFILE, NULL, "accept()"), ==, -EMFILE);
        out = capture_end(&c);
        ASSERT(strcmp(out, "info: hello 42\nwarning: accept(): Too many open files\n") == 0);
}

/* A multi-line diagnostic becomes one record per line, each led by the
 * prefix; empty lines make none. */
static void test_lines(void) {
        struct capture c;
        const char *out;

        unsetenv("JOURNAL_STREAM");
        unsetenv("INVOCATION_ID");
        log_setup();
        log_set_max_level(LOG_INFO);
        capture_start(&c);
        log_lines(LOG_ERR, MSGID_RELOAD_FAILED, "reload failed: ", "a.conf:1: one\n\na.conf:2: two\n");
        log_lines(LOG_ERR, NULL, "", "no newline at the end");
        log_lines(LOG_ERR, NULL, "x", "");
        out = capture_end(&c);
        ASSERT(strcmp(out, "error: reload failed: a.conf:1: one\nerror: reload failed: a.conf:2: two\n"
                           "error: no newline at the end\n") == 0);
}

static void test_stderr_into_the_journal_keeps_the_priority(void) {
        struct capture c;
        struct stat st;
        char env[64];
        const char *out;

        unsetenv("INVOCATION_ID");
        capture_start(&c);
        ASSERT(fstat(STDERR_FILENO, &st) == 0);
        snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", env, 1);
        log_setup();
        log_set_target(LOG_TARGET_STDERR);      /* as main() does before exiting at start */
        log_set_max_level(LOG_INFO);
        log_msg(LOG_ERR, NULL, "no socket");
        out = capture_end(&c);
        unsetenv("JOURNAL_STREAM");
        log_setup();
        ASSERT(strcmp(out, "<3>no socket\n") == 0);
}

static void test_target_choice(void) {
        char env[64];
        struct stat st;

        ASSERT(fstat(STDERR_FILENO, &st) == 0);
        snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", env, 1);
        ASSERT(log_choose_target(true) == LOG_TARGET_JOURNAL);
        ASSERT(log_choose_target(false) == LOG_TARGET_STDERR); /* journald gone: keep every record */
        setenv("JOURNAL_STREAM", "1:2", 1); /* some other stream: inherited, not ours */
        ASSERT(log_choose_target(true) == LOG_TARGET_STDERR);
        unsetenv("JOURNAL_STREAM");
        setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
        ASSERT(log_choose_target(true) == LOG_TARGET_JOURNAL);
        ASSERT(log_choose_target(false) == LOG_TARGET_STDERR);
        unsetenv("INVOCATION_ID");
        ASSERT(log_choose_target(true) == LOG_TARGET_STDERR);
}

static void test_ratelimit(void) {
        struct ratelimit rl = { .interval_usec = USEC_PER_SEC, .burst = 2 };
        unsigned suppressed = 99;

        ASSERT(ratelimit_allow(&rl, 1000, &suppressed) && suppressed == 0);
        ASSERT(ratelimit_allow(&rl, 2000, &suppressed) && suppressed == 0);
        for (int i = 0; i < 5; i++)
                ASSERT(!ratelimit_allow(&rl, 3000 + (uint64_t) i, &suppressed));
        ASSERT(!ratelimit_allow(&rl, 1000 + USEC_PER_SEC - 1, &suppressed));
        ASSERT(ratelimit_allow(&rl, 1000 + USEC_PER_SEC, &suppressed));
        ASSERT_INT(suppressed, ==, 6);
        ASSERT(ratelimit_allow(&rl, 1001 + USEC_PER_SEC, &suppressed) && suppressed == 0);
}

static void test_ratelimit_owed(void) {
        struct ratelimit rl = { .interval_usec = USEC_PER_SEC, .burst = 1 };
        unsigned suppressed;

        ASSERT(ratelimit_allow(&rl, 5000, &suppressed));
        ASSERT_INT(ratelimit_owed_at(&rl), ==, 0); /* nothing folded, nothing owed */
        ASSERT(!ratelimit_allow(&rl, 6000, &suppressed));
        ASSERT(!ratelimit_allow(&rl, 7000, &suppressed));
        ASSERT_INT(ratelimit_owed_at(&rl), ==, 5000 + USEC_PER_SEC);
        /* At that time the owed record goes through with the count... */
        ASSERT(ratelimit_allow(&rl, 5000 + USEC_PER_SEC, &suppressed));
        ASSERT_INT(suppressed, ==, 2);
        ASSERT_INT(ratelimit_owed_at(&rl), ==, 0);
        /* ...and uses up its window like any record. */
        ASSERT(!ratelimit_allow(&rl, 5001 + USEC_PER_SEC, &suppressed));
        ASSERT_INT(ratelimit_owed_at(&rl), ==, 5000 + 2 * USEC_PER_SEC);
}

int main(void) {
        RUN(test_stderr_lines);
        RUN(test_lines);
        RUN(test_stderr_into_the_journal_keeps_the_priority);
        RUN(test_target_choice);
        RUN(test_ratelimit);
        RUN(test_ratelimit_owed);
        return 0;
}
