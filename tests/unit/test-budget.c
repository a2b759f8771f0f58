/* budget: records paid from the bucket, the rest folded into summaries
 * whose counts add up, and the records that say when folding starts and
 * stops. */
#include <arpa/inet.h>
#include <signal.h>

#include "budget.h"
#include "capture.h"
#include "log.h"
#include "peer.h"
#include "util.h"

#define T0 (100 * USEC_PER_SEC)

static struct config cfg(uint32_t rate_milli, uint32_t burst) {
        struct config c = { .log_connection_rate_milli = rate_milli, .log_connection_burst = burst,
                            .source_prefix_v4 = 32, .source_prefix_v6 = 64 };
        return c;
}

static struct session_end session(const char *client, uint64_t bytes, enum close_reason reason) {
        struct session_end s = { .child = { .pid = 4321, .start_usec = T0 - USEC_PER_SEC } };

        s.child.peer = peer_at(client, 40000);
        s.report.local = peer_at("192.0.2.1", 7);
        s.report.stats = (struct worker_stats) { .bytes_in = bytes, .bytes_out = bytes, .end_usec = T0, .reason = reason };
        return s;
}

/* n sessions like s, all ending at now. */
static void end_sessions(struct budget *b, const struct config *c, const struct session_end *s, int n, uint64_t now) {
        for (int i = 0; i < n; i++)
                budget_connection(b, c, s, 0, now);
}

static unsigned count(const char *text, const char *needle) {
        unsigned n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p++)
                n++;
        return n;
}

static void test_burst_then_folded(void) {
        struct config c = cfg(2000, 3); /* 2 a second, 3 at once */
        struct budget b;
        struct capture cap;
        struct session_end s = session("192.0.2.9", 10, CLOSE_CLIENT);
        const char *out;

        budget_init(&b, &c, T0);
        ASSERT(budget_due(&b) == UINT64_MAX);
        capture_start(&cap);
        end_sessions(&b, &c, &s, 10, T0);
        out = capture_end(&cap);
        ASSERT_INT(count(out, "info: connection 192.0.2.9:40000"), ==, 3);
        ASSERT_INT(count(out, "notice: connection records over budget (2 a second, bursts of 3)"), ==, 1);
        ASSERT_INT(b.recorded, ==, 3);
        ASSERT_INT(b.connections, ==, 7);
        ASSERT_INT(budget_due(&b), ==, T0 + BUDGET_INTERVAL_USEC);

        /* Half a second later the bucket holds one record again. */
        capture_start(&cap);
        budget_connection(&b, &c, &s, 0, T0 + USEC_PER_SEC / 2);
        budget_connection(&b, &c, &s, 0, T0 + USEC_PER_SEC / 2);
        out = capture_end(&cap);
        ASSERT_INT(count(out, "info: connection "), ==, 1);
        ASSERT_INT(b.recorded, ==, 4);
        ASSERT_INT(b.connections, ==, 8);
}

static void test_summary_adds_up(void) {
        struct config c = cfg(1000, 1);
        struct budget b;
        struct capture cap;
        struct session_end a = session("192.0.2.9", 100, CLOSE_CLIENT), r = session("198.51.100.7", 5, CLOSE_RESET);
        const char *out;

        budget_init(&b, &c, T0);
        capture_start(&cap);
        budget_connection(&b, &c, &a, 0, T0);           /* recorded */
        end_sessions(&b, &c, &a, 4, T0);   /* folded */
        budget_connection(&b, &c, &r, 0, T0);
        budget_connection(&b, &c, &r, SIGKILL, T0);     /* killed: error, from its wait status */
        budget_flush(&b, T0 + 2 * USEC_PER_SEC, 9, false);
        out = capture_end(&cap);
        ASSERT_STR_CONTAINS(out, "info: summary of 6 connection(s) closed in the last 2.0 s without a record each "
                                 "(over the record budget): client-closed 4, reset 1, error 1; 410 bytes in, "
                                 "410 bytes out, 6.000 s in sessions; 2 source(s): 192.0.2.9 4, 198.51.100.7 2; "
                                 "1 recorded and 6 summarized of 9 served\n");
        ASSERT_INT(b.recorded + b.summarized, ==, 7);
        ASSERT_INT(b.connections, ==, 0);
        ASSERT(b.folding); /* until a flush finds nothing new */
        ASSERT_INT(budget_due(&b), ==, T0 + 2 * USEC_PER_SEC + BUDGET_INTERVAL_USEC);

        capture_start(&cap);
        budget_flush(&b, T0 + 12 * USEC_PER_SEC, 9, false);
        out = capture_end(&cap);
        ASSERT(strcmp(out, "notice: connection records within budget again: 6 connection(s) went into 1 "
                           "summary record(s) in the last 12 s\n") == 0);
        ASSERT(!b.folding && budget_due(&b) == UINT64_MAX);

        /* Back under budget: records again, nothing folded. */
        capture_start(&cap);
        budget_connection(&b, &c, &a, 0, T0 + 20 * USEC_PER_SEC);
        out = capture_end(&cap);
        ASSERT_INT(count(out, "info: connection "), ==, 1);
        ASSERT_INT(b.recorded, ==, 2);
}

static void test_final_flush(void) {
        struct config c = cfg(1000, 1);
        struct budget b;
        struct capture cap;
        struct session_end a = session("192.0.2.9", 1, CLOSE_CLIENT);
        const char *out;

        budget_init(&b, &c, T0);
        capture_start(&cap);
        budget_connection(&b, &c, &a, 0, T0);
        budget_connection(&b, &c, &a, 0, T0);
        budget_flush(&b, T0 + 1, 2, true);
        out = capture_end(&cap);
        ASSERT_STR_CONTAINS(out, "info: summary of 1 connection(s)");
        ASSERT_STR_CONTAINS(out, "notice: connection records end with the daemon: 1 connection(s) went into 1 "
                                 "summary record(s)");
        ASSERT(!b.folding);
}

static void test_no_budget_and_quiet_levels(void) {
        struct config c = cfg(0, 1); /* rate 0: every connection recorded */
        struct budget b;
        struct capture cap;
        struct session_end a = session("192.0.2.9", 1, CLOSE_CLIENT);
        const char *out;

        budget_init(&b, &c, T0);
        capture_start(&cap);
        end_sessions(&b, &c, &a, 50, T0);
        out = capture_end(&cap);
        ASSERT_INT(count(out, "info: connection "), ==, 50);
        ASSERT(!b.folding);

        /* Below info there are no connection records to budget. */
        c = cfg(1000, 1);
        budget_init(&b, &c, T0);
        log_set_max_level(LOG_NOTICE);
        capture_start(&cap);
        end_sessions(&b, &c, &a, 5, T0);
        out = capture_end(&cap);
        log_set_max_level(LOG_INFO);
        ASSERT(strcmp(out, "") == 0);
        ASSERT(!b.folding && b.connections == 0);
}

/* Connections folded while info was logged are accounted for whatever the
 * level is at the flush: below info the summary is held (no flush due, no
 * record that would be filtered out, nothing counted as summarized), and
 * written at the first flush after info is logged again; held to the end,
 * it goes out at notice. */
static void test_summary_held_below_info(void) {
        struct config c = cfg(1, 1);
        struct budget b;
        struct capture cap;
        struct session_end a = session("192.0.2.9", 1, CLOSE_CLIENT);
        const char *out;

        budget_init(&b, &c, T0);
        capture_start(&cap);
        end_sessions(&b, &c, &a, 3, T0);
        out = capture_end(&cap);
        ASSERT_INT(b.recorded, ==, 1);
        ASSERT_INT(b.connections, ==, 2);

        log_set_max_level(LOG_NOTICE);
        ASSERT(budget_due(&b) == UINT64_MAX);
        capture_start(&cap);
        budget_flush(&b, T0 + 12 * USEC_PER_SEC, 3, false);
        out = capture_end(&cap);
        log_set_max_level(LOG_INFO);
        ASSERT(strcmp(out, "") == 0);
        ASSERT_INT(b.connections, ==, 2);
        ASSERT_INT(b.summarized, ==, 0);
        ASSERT(b.folding);

        ASSERT_INT(budget_due(&b), ==, T0 + BUDGET_INTERVAL_USEC);
        capture_start(&cap);
        budget_flush(&b, T0 + 20 * USEC_PER_SEC, 3, false);
        out = capture_end(&cap);
        ASSERT_STR_CONTAINS(out, "info: summary of 2 connection(s) closed in the last 20.0 s");
        ASSERT_STR_CONTAINS(out, "1 recorded and 2 summarized of 3 served");
        ASSERT_INT(b.recorded + b.summarized, ==, 3);

        /* Held to the end: written at notice with the daemon's last records. */
        budget_init(&b, &c, T0);
        capture_start(&cap);
        end_sessions(&b, &c, &a, 3, T0);
        log_set_max_level(LOG_NOTICE);
        budget_flush(&b, T0 + USEC_PER_SEC, 3, true);
        out = capture_end(&cap);
        log_set_max_level(LOG_INFO);
        ASSERT_STR_CONTAINS(out, "notice: summary of 2 connection(s)");
        ASSERT_STR_CONTAINS(out, "1 recorded and 2 summarized of 3 served");
        ASSERT_STR_CONTAINS(out, "notice: connection records end with the daemon: 2 connection(s) went into 1");
}

static void test_many_sources_keep_the_busiest(void) {
        struct config c = cfg(1000, 1);
        struct budget b;
        struct capture cap;
        struct session_end busy = session("203.0.113.5", 1, CLOSE_CLIENT);
        const char *out;
        char addr[32];

        budget_init(&b, &c, T0);
        capture_start(&cap);
        budget_connection(&b, &c, &busy, 0, T0); /* recorded */
        for (int i = 0; i < 200; i++) {
                struct session_end s = session("192.0.2.1", 1, CLOSE_CLIENT);
                snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 250, i % 250 + 1);
                inet_pton(AF_INET, addr, &s.child.peer.in.sin_addr);
                budget_connection(&b, &c, &s, 0, T0);
                budget_connection(&b, &c, &busy, 0, T0);
        }
        budget_flush(&b, T0 + 1, 401, false);
        out = capture_end(&cap);
        ASSERT_STR_CONTAINS(out, "summary of 400 connection(s)");
        ASSERT_STR_CONTAINS(out, "more than 32 source(s): 203.0.113.5 ~");
        ASSERT_INT(b.summarized, ==, 400);
}

int main(void) {
        unsetenv("JOURNAL_STREAM");
        unsetenv("INVOCATION_ID");
        log_setup();
        log_set_max_level(LOG_INFO);
        RUN(test_burst_then_folded);
        RUN(test_summary_adds_up);
        RUN(test_final_flush);
        RUN(test_no_budget_and_quiet_levels);
        RUN(test_summary_held_below_info);
        RUN(test_many_sources_keep_the_busiest);
        return 0;
}
