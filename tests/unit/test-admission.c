/* admission and sources: the decisions, with a clock the test controls. */
#include <arpa/inet.h>

#include "admission.h"
#include "test.h"
#include "util.h"

static union sockaddr_any peer(const char *ip) {
        union sockaddr_any a = { 0 };

        if (inet_pton(AF_INET, ip, &a.in.sin_addr) == 1) {
                a.in.sin_family = AF_INET;
        } else {
                ASSERT(inet_pton(AF_INET6, ip, &a.in6.sin6_addr) == 1);
                a.in6.sin6_family = AF_INET6;
        }
        return a;
}

static int check(struct admission *a, const char *ip, uint64_t now) {
        union sockaddr_any p = peer(ip);

        return admission_check(a, &p, now);
}

static struct config base(void) {
        struct config c;

        config_defaults(&c);
        c.source_rate_milli = 0;
        c.max_clients_per_source = 0;
        return c;
}

static void test_per_source_limit(void) {
        struct config c = base();
        struct admission a;
        union sockaddr_any x = peer("192.0.2.1"), y = peer("192.0.2.2"), mapped;
        uint64_t t = USEC_PER_SEC;

        c.max_clients_per_source = 2;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(admission_check(&a, &x, t), ==, -1);
        ASSERT_INT(admission_check(&a, &x, t), ==, -1);
        ASSERT_INT(admission_check(&a, &x, t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(admission_check(&a, &y, t), ==, -1); /* another /32: served */
        /* The same client seen through a dual-stack socket counts the same. */
        mapped.in6 = (struct sockaddr_in6) { .sin6_family = AF_INET6 };
        inet_pton(AF_INET6, "::ffff:192.0.2.1", &mapped.in6.sin6_addr);
        ASSERT_INT(admission_check(&a, &mapped, t), ==, REFUSE_PER_SOURCE);
        admission_release(&a, &x);
        ASSERT_INT(admission_check(&a, &mapped, t), ==, -1);
        ASSERT(a.refused[REFUSE_PER_SOURCE] == 2);
        admission_done(&a);

        /* Counted by /24: neighbours share the allowance. */
        c.source_prefix_v4 = 24;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(admission_check(&a, &x, t), ==, -1);
        ASSERT_INT(admission_check(&a, &y, t), ==, -1);
        ASSERT_INT(check(&a, "192.0.2.3", t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(admission_sources(&a), ==, 1);
        admission_done(&a);
}

static void test_rate_and_block(void) {
        struct config c = base();
        struct admission a;
        union sockaddr_any x = peer("2001:db8::1"), same64 = peer("2001:db8::ffff"), other = peer("2001:db9::1");
        uint64_t t = 10 * USEC_PER_SEC;

        c.source_rate_milli = 2000;     /* 2 per second */
        c.source_burst = 3;
        c.source_block_ms = 5000;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (int i = 0; i < 3; i++) {
                ASSERT_INT(admission_check(&a, &x, t), ==, -1);
                admission_release(&a, &x);
        }
        ASSERT_INT(admission_check(&a, &same64, t), ==, REFUSE_RATE);     /* same /64, bucket dry */
        ASSERT_INT(admission_check(&a, &other, t), ==, -1);               /* everyone else is served */
        /* Blocked for 5 s even though tokens come back meanwhile. */
        ASSERT_INT(admission_check(&a, &x, t + 4 * USEC_PER_SEC), ==, REFUSE_RATE);
        ASSERT_INT(admission_check(&a, &x, t + 5 * USEC_PER_SEC + 1), ==, -1);
        ASSERT(a.refused[REFUSE_RATE] == 2);
        admission_done(&a);
}

static void test_allow_deny(void) {
        struct config c = base();
        struct admission a;
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(cidr_parse("10.0.0.0/8", &c.allow[0]), ==, 0);
        ASSERT_INT(cidr_parse("::1", &c.allow[1]), ==, 0);
        c.n_allow = 2;
        ASSERT_INT(cidr_parse("10.9.0.0/16", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(check(&a, "10.1.2.3", t), ==, -1);
        ASSERT_INT(check(&a, "::1", t), ==, -1);
        ASSERT_INT(check(&a, "10.9.1.1", t), ==, REFUSE_DENIED);
        ASSERT_INT(check(&a, "192.0.2.1", t), ==, REFUSE_DENIED);
        ASSERT_INT(check(&a, "::2", t), ==, REFUSE_DENIED);
        admission_done(&a);
}

struct seen {
        int lines, rest_sources;
        uint32_t total[_REFUSE_MAX];
        uint32_t line_counts[16];
};

static void collect(const struct cidr *key, const uint32_t counts[_REFUSE_MAX], uint32_t sources, void *userdata) {
        struct seen *s = userdata;

        if (key)
                s->line_counts[s->lines++] = counts[REFUSE_DENIED];
        else
                s->rest_sources += (int) sources;
        for (int i = 0; i < _REFUSE_MAX; i++)
                s->total[i] += counts[i];
}

static void test_report_is_bounded_and_resets(void) {
        struct config c = base();
        struct admission a;
        struct seen s = { 0 };
        char ip[32];
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(cidr_parse("0.0.0.0/0", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (int i = 0; i < 100; i++) {
                snprintf(ip, sizeof(ip), "198.51.100.%d", i);
                for (int j = 0; j <= i % 3; j++)
                        ASSERT_INT(check(&a, ip, t), ==, REFUSE_DENIED);
        }
        /* One loud source among a hundred quiet ones. */
        for (int j = 0; j < 50; j++)
                ASSERT_INT(check(&a, "203.0.113.9", t), ==, REFUSE_DENIED);
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.lines, ==, 10);
        ASSERT_INT(s.rest_sources, ==, 91);
        ASSERT_INT(s.total[REFUSE_DENIED], ==, 249);       /* every refusal accounted for, once */
        /* The loudest first, then the ones refused three times. */
        ASSERT_INT(s.line_counts[0], ==, 50);
        for (int i = 1; i < 10; i++)
                ASSERT_INT(s.line_counts[i], ==, 3);
        ASSERT_INT(admission_sources(&a), ==, 0);          /* reported and idle: dropped */
        memset(&s, 0, sizeof(s));
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.lines + s.rest_sources, ==, 0);
        admission_done(&a);
}

static void test_table_full_fails_open(void) {
        struct config c = base();
        struct admission a;
        char ip[64];
        uint64_t t = USEC_PER_SEC;
        int admitted = 0;

        c.max_clients_per_source = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        /* Each source keeps a session open, so nothing can be swept. */
        for (int i = 0; i < ADMISSION_SOURCES / 2 + 10; i++) {
                snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
                admitted += check(&a, ip, t) == -1;
        }
        ASSERT_INT(admitted, ==, ADMISSION_SOURCES / 2 + 10);
        ASSERT(a.untracked == 10);
        /* A full table is swept for room at most once a second, however
         * many new sources arrive: not a pass over it per connection. */
        ASSERT(a.full_sweeps == 1);
        ASSERT_INT(check(&a, "2001:db8:ffff::1", t + ADMISSION_SWEEP_INTERVAL_USEC - 1), ==, -1);
        ASSERT(a.full_sweeps == 1 && a.untracked == 11);
        ASSERT_INT(check(&a, "2001:db8:ffff::2", t + ADMISSION_SWEEP_INTERVAL_USEC), ==, -1);
        ASSERT(a.full_sweeps == 2 && a.untracked == 12);
        admission_done(&a);
}

int main(void) {
        RUN(test_per_source_limit);
        RUN(test_rate_and_block);
        RUN(test_allow_deny);
        RUN(test_report_is_bounded_and_resets);
        RUN(test_table_full_fails_open);
        return 0;
}
