/* admission and sources: the decisions, with a clock the test controls. */
#include "admission.h"
#include "peer.h"
#include "test.h"
#include "util.h"

/* A client at ip (any port: admission looks at the address alone). */
static union sockaddr_any peer(const char *ip) {
        return peer_at(ip, 0);
}

/* Admitted sessions are held in `held` (most recent last), to be released. */
#define HELD_MAX 64
static struct admission_hold held[HELD_MAX];
static unsigned n_held;

/* What admit() and check() return for an admitted connection; otherwise
 * they return the refuse_reason. */
#define ADMITTED (-1)

static int admit(struct admission *a, const union sockaddr_any *p, uint64_t now) {
        enum refuse_reason reason = _REFUSE_MAX;
        struct admission_hold h;
        bool admitted = admission_check(a, p, now, &h, &reason);

        ASSERT(!h.counted || admitted); /* an exempt client is admitted uncounted */
        if (!admitted) {
                ASSERT(reason < _REFUSE_MAX);
                return (int) reason;
        }
        if (n_held < HELD_MAX)
                held[n_held++] = h;
        else
                admission_release(a, &h, now);
        return ADMITTED;
}

static void release_last(struct admission *a, uint64_t now) {
        ASSERT(n_held > 0);
        admission_release(a, &held[--n_held], now);
        ASSERT(!held[n_held].counted);
}

static void release_all(struct admission *a, uint64_t now) {
        while (n_held)
                release_last(a, now);
}

static int check(struct admission *a, const char *ip, uint64_t now) {
        union sockaddr_any p = peer(ip);

        return admit(a, &p, now);
}

static struct config base(void) {
        struct config c;

        config_defaults(&c);
        c.source_rate_milli = 0;
        c.max_clients_per_source = 0;
        c.n_exempt = 0;
        return c;
}

/* The default exemption: loopback, however it arrives, is neither limited
 * nor counted; everyone else still is, and deny still applies to it. */
static void test_loopback_exempt_by_default(void) {
        const char *local[] = { "127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1" };
        struct config c;
        struct admission a;
        union sockaddr_any other = peer("192.0.2.1");
        uint64_t t = USEC_PER_SEC;

        config_defaults(&c);
        c.source_burst = 2;
        c.max_clients_per_source = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (size_t i = 0; i < ELEMENTSOF(local); i++) {
                union sockaddr_any p = peer(local[i]);

                for (int k = 0; k < 100; k++) {
                        enum refuse_reason reason;
                        struct admission_hold h;

                        ASSERT(admission_check(&a, &p, t, &h, &reason));
                        ASSERT(!h.counted);
                }
        }
        ASSERT(admission_sources(&a) == 0);
        ASSERT_INT(admit(&a, &other, t), ==, ADMITTED);
        ASSERT_INT(admit(&a, &other, t), ==, REFUSE_PER_SOURCE);
        release_all(&a, t);
        ASSERT_INT(admit(&a, &other, t), ==, REFUSE_RATE);      /* burst of 2 spent */
        /* Exempt from the per-source limits only. */
        c.n_deny = 1;
        ASSERT_INT(cidr_parse("127.0.0.0/8", &c.deny[0]), ==, 0);
        ASSERT_INT(check(&a, "127.0.0.1", t), ==, REFUSE_DENIED);
        /* Emptied, loopback is one source like any other. */
        c.n_deny = 0;
        c.n_exempt = 0;
        ASSERT_INT(check(&a, "127.0.0.1", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "127.0.0.1", t), ==, REFUSE_PER_SOURCE);
        release_all(&a, t);
        admission_done(&a);
}

static void test_per_source_limit(void) {
        struct config c = base();
        struct admission a;
        union sockaddr_any x = peer("192.0.2.1"), y = peer("192.0.2.2"), mapped;
        uint64_t t = USEC_PER_SEC;

        c.max_clients_per_source = 2;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(admit(&a, &x, t), ==, ADMITTED);
        ASSERT_INT(admit(&a, &x, t), ==, ADMITTED);
        ASSERT_INT(admit(&a, &x, t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(admit(&a, &y, t), ==, ADMITTED); /* another /32: served */
        /* The same client seen through a dual-stack socket counts the same. */
        mapped = peer("::ffff:192.0.2.1");
        ASSERT_INT(admit(&a, &mapped, t), ==, REFUSE_PER_SOURCE);
        admission_release(&a, &held[0], t);             /* one of x's */
        admission_release(&a, &held[0], t);             /* gives back nothing twice */
        ASSERT_INT(admit(&a, &mapped, t), ==, ADMITTED);
        ASSERT(a.refused[REFUSE_PER_SOURCE] == 2);
        n_held = 0;
        admission_done(&a);

        /* Counted by /24: neighbours share the allowance. */
        c.source_prefix_v4 = 24;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(admit(&a, &x, t), ==, ADMITTED);
        ASSERT_INT(admit(&a, &y, t), ==, ADMITTED);
        ASSERT_INT(check(&a, "192.0.2.3", t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(admission_sources(&a), ==, 1);
        n_held = 0;
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
                ASSERT_INT(admit(&a, &x, t), ==, ADMITTED);
                release_last(&a, t);
        }
        ASSERT_INT(admit(&a, &same64, t), ==, REFUSE_RATE);     /* same /64, bucket dry */
        ASSERT_INT(admit(&a, &other, t), ==, ADMITTED);               /* everyone else is served */
        /* Blocked for 5 s even though tokens come back meanwhile. */
        ASSERT_INT(admit(&a, &x, t + 4 * USEC_PER_SEC), ==, REFUSE_RATE);
        ASSERT_INT(admit(&a, &x, t + 5 * USEC_PER_SEC + 1), ==, ADMITTED);
        ASSERT(a.refused[REFUSE_RATE] == 2);
        n_held = 0;
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
        ASSERT_INT(check(&a, "10.1.2.3", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "::1", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "10.9.1.1", t), ==, REFUSE_DENIED);
        ASSERT_INT(check(&a, "192.0.2.1", t), ==, REFUSE_DENIED);
        ASSERT_INT(check(&a, "::2", t), ==, REFUSE_DENIED);
        n_held = 0;
        admission_done(&a);
}

struct seen {
        int lines, rest_sources, rest_lines;
        bool untracked, named;
        uint32_t total[_REFUSE_MAX];
        uint32_t line_counts[16];
};

static void collect(const struct cidr *key, const uint32_t counts[_REFUSE_MAX], uint32_t sources, unsigned rest,
                    void *userdata) {
        struct seen *s = userdata;

        if (key)
                s->line_counts[s->lines++] = counts[REFUSE_DENIED];
        else {
                s->rest_sources += (int) sources;
                s->rest_lines++;
                s->untracked |= rest & REPORT_REST_UNTRACKED;
                s->named |= rest & REPORT_REST_NAMED;
        }
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
        n_held = 0;
        admission_done(&a);
}

/* A small table, so that tests push many more sources than it holds. */
#define TABLE 64
#define FLOOD 1000

static struct config strict(void) {
        struct config c = base();

        c.source_table_size = TABLE;
        c.max_clients_per_source = 2;
        c.source_rate_milli = 1000;     /* 1 per second */
        c.source_burst = 3;
        c.source_block_ms = 60 * 1000;
        ASSERT_INT(cidr_parse("10.0.0.0/8", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        return c;
}

static void flood_ip(char *ip, size_t size, int kind, int i) {
        snprintf(ip, size, "%d.%d.%d.%d", kind, (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

/* A source the table never saw still gets its limits: two sessions, the
 * third refused by the per-source cap (it took the last token), the fourth
 * refused for the rate and blocked. */
static void assert_fresh_source_limited(struct admission *a, const char *ip, uint64_t t) {
        unsigned before = n_held;

        ASSERT_INT(check(a, ip, t), ==, ADMITTED);
        ASSERT_INT(check(a, ip, t), ==, ADMITTED);
        ASSERT_INT(check(a, ip, t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(check(a, ip, t), ==, REFUSE_RATE);
        release_last(a, t);
        release_last(a, t);
        ASSERT_INT(n_held, ==, before);
        ASSERT_INT(check(a, ip, t + USEC_PER_SEC), ==, REFUSE_RATE); /* blocked, tokens or not */
}

static void block(struct admission *a, const char *ip, uint64_t t) {
        for (int i = 0; i < 3; i++) {
                ASSERT_INT(check(a, ip, t), ==, ADMITTED);
                release_last(a, t);
        }
        ASSERT_INT(check(a, ip, t), ==, REFUSE_RATE);
}

/* Resting entries never exceed the table; live ones come on top. Every
 * resting entry is in the list its state says, and found by its key. */
static void assert_bounded(const struct admission *a) {
        const struct sources *s = &a->sources;
        uint32_t resting = 0;

        ASSERT(s->resting <= TABLE);
        ASSERT(admission_sources(a) <= TABLE + n_held);
        for (int l = 0; l < _SOURCE_LISTS; l++)
                for (uint32_t p = s->lists[l].head; p != UINT32_MAX; p = s->pool[p].next) {
                        ASSERT(s->pool[p].list == l && s->pool[p].active == 0);
                        ASSERT(sources_find(s, &s->pool[p].key) == &s->pool[p]);
                        resting++;
                }
        ASSERT_INT(resting, ==, s->resting);
}

/* n sources (11.x.x.x) of one session each, ended at once: entries with
 * nothing live, forgotten first when the table is full. */
static void one_shot_sources(struct admission *a, int n, uint64_t t) {
        char ip[32];

        for (int i = 0; i < n; i++) {
                flood_ip(ip, sizeof(ip), 11, i);
                ASSERT_INT(check(a, ip, t), ==, ADMITTED);
                release_last(a, t);
                assert_bounded(a);
        }
}

static void test_full_of_denied_sources(void) {
        struct config c = strict();
        struct admission a;
        char ip[32];
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(admission_init(&a, &c), ==, 0);
        block(&a, "192.0.2.66", t);
        for (int i = 0; i < FLOOD; i++) {
                flood_ip(ip, sizeof(ip), 10, i);
                ASSERT_INT(check(&a, ip, t), ==, REFUSE_DENIED);
                assert_bounded(&a);
        }
        ASSERT(a.refused[REFUSE_DENIED] == FLOOD);
        /* Denied sources only ever took each other's places. */
        ASSERT_INT(check(&a, "192.0.2.66", t), ==, REFUSE_RATE);
        assert_fresh_source_limited(&a, "192.0.2.1", t);
        assert_bounded(&a);
        n_held = 0;
        admission_done(&a);
}

static void test_full_of_one_shot_sources(void) {
        struct config c = strict();
        struct admission a;
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(admission_init(&a, &c), ==, 0);
        block(&a, "192.0.2.66", t);
        /* A source with live sessions at its cap all along. */
        ASSERT_INT(check(&a, "192.0.2.77", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "192.0.2.77", t), ==, ADMITTED);
        one_shot_sources(&a, FLOOD, t);
        ASSERT(admission_forgotten(&a) >= FLOOD - TABLE);
        /* Neither the live source nor the blocked one was forgotten. */
        ASSERT_INT(check(&a, "192.0.2.77", t), ==, REFUSE_PER_SOURCE);
        ASSERT_INT(check(&a, "192.0.2.66", t), ==, REFUSE_RATE);
        assert_fresh_source_limited(&a, "192.0.2.1", t);
        release_all(&a, t);
        ASSERT_INT(check(&a, "192.0.2.77", t + USEC_PER_SEC), ==, ADMITTED);    /* its places given back */
        release_all(&a, t);
        assert_bounded(&a);
        n_held = 0;
        admission_done(&a);
}

static void test_full_of_blocked_sources(void) {
        struct config c = strict();
        struct admission a;
        char ip[32];
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(admission_init(&a, &c), ==, 0);
        block(&a, "192.0.2.66", t);     /* keeps trying */
        block(&a, "192.0.2.99", t);     /* goes quiet */
        for (int i = 0; i < FLOOD; i++) {
                flood_ip(ip, sizeof(ip), 12, i);
                block(&a, ip, t);
                if (i % 16 == 0)
                        ASSERT_INT(check(&a, "192.0.2.66", t), ==, REFUSE_RATE);
                assert_bounded(&a);
        }
        /* Only a table full of newer blocks made room by forgetting the
         * quiet one, which then starts afresh like any new source; the one
         * that kept trying is still blocked. */
        ASSERT_INT(check(&a, "192.0.2.66", t), ==, REFUSE_RATE);
        assert_fresh_source_limited(&a, "192.0.2.99", t);
        assert_fresh_source_limited(&a, "192.0.2.1", t);
        assert_bounded(&a);
        n_held = 0;
        admission_done(&a);
}

/* With the table full of blocks, sessions that overlap new sources: each
 * session ending must not make its own source (or the other idle ones) the
 * next to be forgotten, or its bucket would be fresh at every connection. */
static void test_blocks_do_not_churn_the_rest(void) {
        struct config c = strict();
        struct admission a;
        char ip[32];
        uint64_t t = USEC_PER_SEC;
        int admitted = 0;

        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (int i = 0; i < FLOOD; i++) {
                flood_ip(ip, sizeof(ip), 12, i);
                block(&a, ip, t);
        }
        ASSERT(a.sources.lists[SOURCE_BLOCKED].n <= TABLE / 2);
        for (int i = 0; i < 10; i++) {
                admitted += check(&a, "192.0.2.1", t) == ADMITTED;
                flood_ip(ip, sizeof(ip), 13, i);
                ASSERT_INT(check(&a, ip, t), ==, ADMITTED);   /* a new source while the session lasts */
                for (unsigned k = 0; k < n_held; k++)   /* the first one's session ends first */
                        admission_release(&a, &held[k], t);
                n_held = 0;
                assert_bounded(&a);
        }
        ASSERT_INT(admitted, ==, 3);                    /* the burst, then refused */
        n_held = 0;
        admission_done(&a);
}

static void test_report_exact_when_full(void) {
        struct config c = strict();
        struct admission a;
        struct seen s = { 0 };
        char ip[32];
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (int i = 0; i < FLOOD; i++) {
                flood_ip(ip, sizeof(ip), 10, i);
                ASSERT_INT(check(&a, ip, t), ==, REFUSE_DENIED);
                if (i % 20 == 0)
                        ASSERT_INT(check(&a, "10.255.255.255", t), ==, REFUSE_DENIED);
        }
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.line_counts[0], ==, FLOOD / 20);           /* the loudest, by name */
        ASSERT_INT(s.total[REFUSE_DENIED], ==, FLOOD + FLOOD / 20);
        /* Each source once at most; sources whose bits collide go uncounted
         * (about n^2 / 2^17 of n forgotten ones). */
        ASSERT_INT(s.lines + s.rest_sources, <=, FLOOD + 1);
        ASSERT_INT(s.lines + s.rest_sources, >=, FLOOD + 1 - FLOOD / 50);
        ASSERT(!s.untracked);
        memset(&s, 0, sizeof(s));
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.lines + s.rest_sources, ==, 0);
        ASSERT_INT(admission_sources(&a), ==, 0);
        n_held = 0;
        admission_done(&a);
}

/* A denied source that gets no tally (the table is full of sources that
 * were served) is not counted as one source per refusal. */
static void test_report_untracked_refusals_are_no_sources(void) {
        struct config c = strict();
        struct admission a;
        struct seen s = { 0 };
        uint64_t t = USEC_PER_SEC;

        ASSERT_INT(cidr_parse("10.20.0.0/16", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        one_shot_sources(&a, TABLE + 6, t);
        for (int i = 0; i < 50; i++)
                ASSERT_INT(check(&a, "10.20.0.1", t), ==, REFUSE_DENIED);
        admission_report(&a, t, 10, collect, &s);
        printf("   50 refusals of one untallied source: %d line(s), %d source(s), untracked %d\n",
               s.lines + s.rest_lines, s.rest_sources, s.untracked);
        ASSERT_INT(s.total[REFUSE_DENIED], ==, 50);
        ASSERT_INT(s.rest_lines, ==, 1);
        ASSERT_INT(s.rest_sources, ==, 0);
        ASSERT(s.untracked);
        n_held = 0;
        admission_done(&a);
}

/* A source named in the report whose earlier entry was forgotten: the
 * refusals under that entry stay in the sum, which says they are a named
 * source's rather than counting no source or claiming untracked ones. */
static void test_report_named_source_forgotten_before(void) {
        struct config c = base();
        struct admission a;
        struct seen s = { 0 };
        uint64_t t = USEC_PER_SEC;

        c.source_table_size = TABLE;
        c.max_clients_per_source = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(check(&a, "192.0.2.1", t), ==, ADMITTED);
        for (int i = 0; i < 3; i++)
                ASSERT_INT(check(&a, "192.0.2.1", t), ==, REFUSE_PER_SOURCE);
        release_last(&a, t);
        one_shot_sources(&a, TABLE + 6, t);
        ASSERT(admission_forgotten(&a) > 0);
        ASSERT_INT(check(&a, "192.0.2.1", t), ==, ADMITTED);
        for (int i = 0; i < 5; i++)
                ASSERT_INT(check(&a, "192.0.2.1", t), ==, REFUSE_PER_SOURCE);
        release_last(&a, t);
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.lines, ==, 1);
        ASSERT_INT(s.line_counts[0], ==, 0);            /* collect() keeps the denied count */
        ASSERT_INT(s.total[REFUSE_PER_SOURCE], ==, 8);
        ASSERT_INT(s.rest_lines, ==, 1);
        ASSERT_INT(s.rest_sources, ==, 0);
        ASSERT(s.named);
        ASSERT(!s.untracked);
        n_held = 0;
        admission_done(&a);
}

/* A source forgotten twice between two reports is one source. */
static void test_report_source_forgotten_twice_is_one(void) {
        struct config c = strict();
        struct admission a;
        struct seen s = { 0 };
        char ip[32];
        uint64_t t = USEC_PER_SEC;
        int distinct = 1;

        ASSERT_INT(cidr_parse("10.0.0.0/8", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        for (int round = 0; round < 2; round++) {
                ASSERT_INT(check(&a, "10.255.255.255", t), ==, REFUSE_DENIED);
                for (int i = 0; i < 2 * TABLE; i++, distinct++) {
                        flood_ip(ip, sizeof(ip), 10, round * 4 * TABLE + i);
                        ASSERT_INT(check(&a, ip, t), ==, REFUSE_DENIED);
                }
        }
        admission_report(&a, t, 10, collect, &s);
        printf("   %d distinct sources reported as %d\n", distinct, s.lines + s.rest_sources);
        ASSERT_INT(s.total[REFUSE_DENIED], ==, distinct + 1);
        ASSERT_INT(s.lines + s.rest_sources, <=, distinct);
        n_held = 0;
        admission_done(&a);
}

static unsigned recounted;

static void recount(struct admission *a, void *userdata) {
        const char *const *ips = userdata;

        for (unsigned i = 0; i < n_held; i++) {
                union sockaddr_any p = peer(ips[i]);
                admission_hold_session(a, &p, 2 * USEC_PER_SEC, &held[i]);
                ASSERT(held[i].counted);
                recounted++;
        }
}

static void test_reload_recounts_holds(void) {
        struct config c = base(), old;
        struct admission a;
        const char *ips[] = { "192.0.2.1", "192.0.2.2" };
        uint64_t t = USEC_PER_SEC;

        c.max_clients_per_source = 2;
        ASSERT_INT(admission_init(&a, &c), ==, 0);
        ASSERT_INT(check(&a, ips[0], t), ==, ADMITTED);
        ASSERT_INT(check(&a, ips[1], t), ==, ADMITTED);
        ASSERT_INT(check(&a, ips[0], t), ==, ADMITTED);
        ASSERT_INT(check(&a, ips[0], t), ==, REFUSE_PER_SOURCE);
        release_last(&a, t);
        old = c;
        c.source_prefix_v4 = 24;
        ASSERT_INT(admission_reconfigure(&a, &old, recount, (void *) ips), ==, 0);
        ASSERT_INT(recounted, ==, 2);
        ASSERT_INT(check(&a, "192.0.2.3", t), ==, REFUSE_PER_SOURCE);
        /* The refusal counted before the reload is still reported, once. */
        struct seen s = { 0 };
        admission_report(&a, t, 10, collect, &s);
        ASSERT_INT(s.total[REFUSE_PER_SOURCE], ==, 2);
        release_all(&a, t);
        ASSERT_INT(check(&a, "192.0.2.3", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "192.0.2.4", t), ==, ADMITTED);
        ASSERT_INT(check(&a, "192.0.2.5", t), ==, REFUSE_PER_SOURCE);
        /* A new table size starts afresh too. */
        old = c;
        c.source_table_size = TABLE;
        ASSERT_INT(admission_reconfigure(&a, &old, recount, (void *) ips), ==, 0);
        ASSERT(a.sources.capacity == TABLE);
        ASSERT_INT(check(&a, "192.0.2.5", t), ==, REFUSE_PER_SOURCE);
        n_held = 0;
        admission_done(&a);
}

/* Counts held while reports are filtered out saturate rather than wrap. */
static void test_counts_saturate(void) {
        ASSERT(sat_add_u32(1, 2) == 3);
        ASSERT(sat_add_u32(UINT32_MAX - 1, 1) == UINT32_MAX);
        ASSERT(sat_add_u32(UINT32_MAX, 1) == UINT32_MAX);
        ASSERT(sat_add_u32(5, UINT32_MAX) == UINT32_MAX);
}

int main(void) {
        RUN(test_counts_saturate);
        RUN(test_per_source_limit);
        RUN(test_rate_and_block);
        RUN(test_allow_deny);
        RUN(test_loopback_exempt_by_default);
        RUN(test_report_is_bounded_and_resets);
        RUN(test_full_of_denied_sources);
        RUN(test_full_of_one_shot_sources);
        RUN(test_full_of_blocked_sources);
        RUN(test_blocks_do_not_churn_the_rest);
        RUN(test_report_exact_when_full);
        RUN(test_report_untracked_refusals_are_no_sources);
        RUN(test_report_named_source_forgotten_before);
        RUN(test_report_source_forgotten_twice_is_one);
        RUN(test_reload_recounts_holds);
        return 0;
}
