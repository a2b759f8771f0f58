/* report: the STATUS= line and the refusal records, read as the operator
 * reads them (stderr, where the records go outside the journal). */
#include <syslog.h>

#include "capture.h"
#include "log.h"
#include "peer.h"
#include "report.h"

static void test_status_line(void) {
        uint64_t refused[_REFUSE_MAX] = { [REFUSE_DENIED] = 1, [REFUSE_RATE] = 2, [REFUSE_PER_SOURCE] = 3 };
        struct report_state st = { .active = 4, .max_clients = 4, .served = 9, .refused = refused,
                                   .at_cap = true, .fork_failing = true, .restart_pending = "port" };
        char buf[256];

        report_status(&st, buf, sizeof(buf));
        ASSERT(strcmp(buf, "4 active (cap 4, AT CAP), 9 served, 6 refused (denied 1, rate 2, per-source 3); "
                      "fork failing, retrying; restart pending") == 0);
        st.fork_failing = false;
        st.accept_paused = true;
        st.restart_pending = "";
        report_status(&st, buf, sizeof(buf));
        ASSERT_STR_CONTAINS(buf, "; accept paused (out of resources)");
        ASSERT(!strstr(buf, "restart pending"));
        st.draining = true;
        report_status(&st, buf, sizeof(buf));
        ASSERT(strcmp(buf, "Draining: 4 session(s) left; 9 served") == 0);
}

static void refuse(struct admission *a, const char *ip, unsigned times, uint64_t now) {
        union sockaddr_any p = peer_at(ip, 0);
        struct admission_hold h;
        enum refuse_reason reason;

        for (unsigned i = 0; i < times; i++)
                ASSERT(!admission_check(a, &p, now, &h, &reason));
}

/* Admission under c (which it keeps using), denying 192.0.2.0/24. */
static void denying(struct admission *a, struct config *c) {
        config_defaults(c);
        ASSERT_INT(cidr_parse("192.0.2.0/24", &c->deny[0]), ==, 0);
        c->n_deny = 1;
        ASSERT_INT(admission_init(a, c), ==, 0);
}

/* The loudest sources by name, REPORT_MAX_LINES of them; the rest summed. */
static void test_refusals_named_then_summed(void) {
        struct admission a;
        struct config c;
        struct report_refusals r = { 0 };
        struct capture cap;
        char ip[32];
        const char *out;

        denying(&a, &c);
        refuse(&a, "192.0.2.1", 5, USEC_PER_SEC);
        for (unsigned i = 2; i < 2 + REPORT_MAX_LINES; i++) {
                snprintf(ip, sizeof(ip), "192.0.2.%u", i);
                refuse(&a, ip, 1, USEC_PER_SEC);
        }
        capture_start(&cap);
        report_refusals(&r, &a, 2 * USEC_PER_SEC);
        out = capture_end(&cap);
        ASSERT_STR_CONTAINS(out, "refused 5 connection(s) from 192.0.2.1 in the last 10 s: denied 5\n");
        ASSERT_STR_CONTAINS(out, "refused 1 connection(s) from 1 other source(s) in the last 10 s: denied 1\n");
        /* Reported: the next record starts from zero. */
        capture_start(&cap);
        report_refusals(&r, &a, 3 * USEC_PER_SEC);
        ASSERT(strcmp(capture_end(&cap), "") == 0);
        admission_done(&a);
}

/* Filtered out by log_level, the counts wait for the first record written,
 * which spans the time since. */
static void test_refusals_held_while_filtered(void) {
        struct admission a;
        struct config c;
        struct report_refusals r = { 0 };
        struct capture cap;

        denying(&a, &c);
        refuse(&a, "192.0.2.7", 2, USEC_PER_SEC);
        log_set_max_level(LOG_ERR);
        report_refusals(&r, &a, 10 * USEC_PER_SEC);
        refuse(&a, "192.0.2.7", 1, 20 * USEC_PER_SEC);
        log_set_max_level(LOG_INFO);
        capture_start(&cap);
        report_refusals(&r, &a, 40 * USEC_PER_SEC);
        ASSERT_STR_CONTAINS(capture_end(&cap), "refused 3 connection(s) from 192.0.2.7 in the last 40 s: denied 3");
        admission_done(&a);
}

int main(void) {
        RUN(test_status_line);
        RUN(test_refusals_named_then_summed);
        RUN(test_refusals_held_while_filtered);
        return 0;
}
