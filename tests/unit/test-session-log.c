/* session-log: the per-connection record, as an operator reads it. */
#include <arpa/inet.h>
#include <signal.h>
#include <sys/wait.h>

#include "capture.h"
#include "log.h"
#include "session-log.h"
#include "util.h"

static struct session_end sample(void) {
        struct session_end s = { .child = { .pid = 4321, .start_usec = 1000000 } };

        s.child.peer.in6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, "::ffff:192.0.2.9", &s.child.peer.in6.sin6_addr);
        s.child.peer.in6.sin6_port = htons(40000);
        s.report.local.in.sin_family = AF_INET;
        inet_pton(AF_INET, "192.0.2.1", &s.report.local.in.sin_addr);
        s.report.local.in.sin_port = htons(7);
        s.report.stats = (struct worker_stats) { .bytes_in = 100, .bytes_out = 90, .end_usec = 3500000,
                                          .reason = CLOSE_WRITE_TIMEOUT };
        return s;
}

static const char *record(const struct session_end *s, int status) {
        struct capture c;

        capture_start(&c);
        session_log_record(s, status, 9000000);
        return capture_end(&c);
}

static void test_normal(void) {
        struct session_end s = sample();

        ASSERT(strcmp(record(&s, 0),
                      "info: connection 192.0.2.9:40000 -> 192.0.2.1:7 closed: write-timeout after 2.500 s, "
                      "100 bytes in, 90 bytes out, worker 4321\n") == 0);
}

static void test_killed(void) {
        struct session_end s = sample();

        s.report.stats.end_usec = 0; /* killed before it could record the end */
        ASSERT_STR_CONTAINS(record(&s, SIGKILL), "closed: error (worker killed by SIGKILL) after 8.000 s");
        s.child.cut = true;
        ASSERT_STR_CONTAINS(record(&s, SIGTERM), "closed: shutdown (worker killed by SIGTERM)");
}

static void test_error_detail(void) {
        struct session_end s = sample();

        s.report.stats.reason = CLOSE_ERROR;
        s.report.stats.error = ENOMEM;
        ASSERT_STR_CONTAINS(record(&s, 0), "closed: error (Cannot allocate memory)");
        s.report.stats.reason = CLOSE_NONE; /* died during set-up */
        s.report.stats.error = 0;
        ASSERT_STR_CONTAINS(record(&s, 1 << 8), "closed: error (worker exited with status 1)");
}

static void test_level(void) {
        struct session_end s = sample();

        log_set_max_level(LOG_NOTICE);
        ASSERT(strcmp(record(&s, 0), "") == 0);
        log_set_max_level(LOG_INFO);
}

int main(void) {
        unsetenv("JOURNAL_STREAM");
        unsetenv("INVOCATION_ID");
        log_setup();
        RUN(test_normal);
        RUN(test_killed);
        RUN(test_error_detail);
        RUN(test_level);
        return 0;
}
