/* children: slot pool, pid table (including collisions and deletes), the
 * shared-memory hand-over from a real child process, and the trust
 * boundary: nothing a worker writes changes the parent's bookkeeping. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "children.h"
#include "test.h"

static void test_claim_until_full(void) {
        struct children c;
        struct child *s[4];

        ASSERT_INT(children_init(&c, 4), ==, 0);
        for (int i = 0; i < 4; i++) {
                s[i] = children_claim(&c);
                ASSERT(s[i]);
                children_commit(&c, s[i], 100 + i);
        }
        ASSERT(children_claim(&c) == NULL);
        ASSERT_INT(c.active, ==, 4);
        ASSERT(children_find(&c, 102) == s[2]);
        ASSERT(children_find(&c, 999) == NULL);
        children_release(&c, s[2]);
        ASSERT_INT(c.active, ==, 3);
        ASSERT(children_find(&c, 102) == NULL);
        ASSERT(children_claim(&c) == s[2]); /* LIFO reuse */
        children_done(&c);
}

static void test_failed_fork_slot(void) {
        struct children c;
        struct child *s;

        ASSERT_INT(children_init(&c, 2), ==, 0);
        s = children_claim(&c);
        children_release(&c, s); /* never committed */
        ASSERT_INT(c.active, ==, 0);
        ASSERT_INT(c.n_free, ==, 2);
        children_done(&c);
}

/* Random inserts and deletes against a reference list; pids chosen to
 * collide heavily in a small table. */
static void test_table_against_reference(void) {
        enum { CAP = 64 };
        struct children c;
        pid_t live[CAP];
        struct child *slots[CAP];
        int n = 0;
        uint32_t rnd = 1;

        ASSERT_INT(children_init(&c, CAP), ==, 0);
        for (int round = 0; round < 20000; round++) {
                rnd = rnd * 1664525 + 1013904223;
                if (n < CAP && (n == 0 || (rnd >> 16) % 2)) {
                        pid_t pid = (pid_t) (1 + ((rnd >> 8) % 4096) * 128);
                        bool dup = false;
                        for (int i = 0; i < n; i++)
                                dup |= live[i] == pid;
                        if (dup)
                                continue;
                        slots[n] = children_claim(&c);
                        ASSERT(slots[n]);
                        children_commit(&c, slots[n], pid);
                        live[n++] = pid;
                } else {
                        int k = (int) ((rnd >> 4) % (uint32_t) n);
                        ASSERT(children_find(&c, live[k]) == slots[k]);
                        children_release(&c, slots[k]);
                        live[k] = live[n - 1];
                        slots[k] = slots[n - 1];
                        n--;
                }
                for (int i = 0; i < n; i++)
                        ASSERT(children_find(&c, live[i]) == slots[i]);
                ASSERT_INT(c.active, ==, n);
        }
        children_done(&c);
}

static void count(struct child *s, void *userdata) {
        (void) s;
        (*(int *) userdata)++;
}

static void test_shared_with_child(void) {
        struct children c;
        struct child *s;
        struct slot_report *r;
        struct session_end e;
        int status, seen = 0;
        pid_t pid;

        ASSERT_INT(children_init(&c, 8), ==, 0);
        s = children_claim(&c);
        s->start_usec = 42;
        r = children_report(&c, s);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                r->stats.bytes_in = 1234;
                r->stats.bytes_out = 1200;
                r->stats.reason = CLOSE_CLIENT;
                _exit(0);
        }
        children_commit(&c, s, pid);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(children_find(&c, pid) == s);
        children_ended(&c, s, 100, &e);
        ASSERT(e.report.stats.bytes_in == 1234 && e.report.stats.bytes_out == 1200);
        ASSERT_INT(e.report.stats.reason, ==, CLOSE_CLIENT);
        ASSERT(e.child.start_usec == 42 && e.child.pid == pid);
        children_foreach(&c, count, &seen);
        ASSERT_INT(seen, ==, 1);
        children_release(&c, s);
        children_done(&c);
}

static union sockaddr_any peer_of(const char *ip, uint16_t port) {
        union sockaddr_any a = { .in.sin_family = AF_INET, .in.sin_port = htons(port) };

        ASSERT(inet_pton(AF_INET, ip, &a.in.sin_addr) == 1);
        return a;
}

/* What a compromised worker can write: every byte of the shared reports,
 * each 32-bit word set to `word` (the position of a live slot, where a
 * worker would want the parent to think it ran), then a close reason, error
 * number, address family and end time that no honest worker reports. */
static void scribble(struct children *c, uint32_t word) {
        uint32_t *w = (uint32_t *) (void *) c->reports;

        for (size_t i = 0; i < c->capacity * sizeof(struct slot_report) / sizeof(*w); i++)
                w[i] = word;
        for (uint32_t i = 0; i < c->capacity; i++) {
                c->reports[i].stats.reason = 1000000;
                c->reports[i].stats.error = -7;
                c->reports[i].local.sa.sa_family = 0x7777;
                c->reports[i].stats.end_usec = UINT64_MAX;
        }
}

/* The parent's record as it was before the worker ran. */
static void assert_intact(const struct child *ch, pid_t pid, const char *ip, uint16_t port, uint64_t start) {
        union sockaddr_any want = peer_of(ip, port);

        ASSERT_INT(ch->pid, ==, pid);
        ASSERT(ch->start_usec == start);
        ASSERT(!ch->cut);
        ASSERT(memcmp(&ch->peer, &want, sizeof(want)) == 0);
}

/* A worker that overwrites the whole shared mapping (its own report and
 * every other) cannot change which slot is freed, which pid is whose, the
 * peer the parent logs, or the active count; what it reported is checked
 * before the parent uses it. The parent's records are not even mapped in
 * the worker. */
static void test_worker_cannot_touch_bookkeeping(void) {
        enum { CAP = 4 };
        struct children c;
        struct child *a, *b, *got[CAP];
        struct session_end e;
        long page = sysconf(_SC_PAGESIZE);
        unsigned char vec;
        int status, n = 0;
        pid_t pid;

        ASSERT_INT(children_init(&c, CAP), ==, 0);
        b = children_claim(&c);
        b->peer = peer_of("198.51.100.7", 2000);
        b->start_usec = 7;
        children_commit(&c, b, 4242);
        a = children_claim(&c);
        a->peer = peer_of("192.0.2.9", 1000);
        a->start_usec = 5;
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                /* The parent-only records are absent here: nothing to write. */
                void *rec = (void *) ((uintptr_t) c.child & ~(uintptr_t) (page - 1));
                if (mincore(rec, (size_t) page, &vec) == 0 || errno != ENOMEM)
                        _exit(3);
                scribble(&c, (uint32_t) (b - c.child));
                _exit(0);
        }
        children_commit(&c, a, pid);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status));
        ASSERT_INT(WEXITSTATUS(status), ==, 0);

        ASSERT(children_find(&c, pid) == a);
        ASSERT(children_find(&c, 4242) == b);
        assert_intact(a, pid, "192.0.2.9", 1000, 5);
        assert_intact(b, 4242, "198.51.100.7", 2000, 7);

        children_ended(&c, a, 1000, &e);
        ASSERT(memcmp(&e.child.peer, &a->peer, sizeof(a->peer)) == 0);
        ASSERT_INT(e.child.pid, ==, pid);
        ASSERT(e.child.start_usec == 5);
        ASSERT_INT(e.report.stats.reason, ==, CLOSE_ERROR);
        ASSERT_INT(e.report.stats.error, ==, 0);
        ASSERT_INT(e.report.local.sa.sa_family, ==, AF_UNSPEC);
        ASSERT(e.report.stats.end_usec == 1000);

        children_release(&c, a);
        ASSERT_INT(c.active, ==, 1);
        ASSERT(children_find(&c, pid) == NULL);
        ASSERT(children_find(&c, 4242) == b);
        /* The freed slot is a's; b is never handed out while it runs. */
        while (n < CAP && (got[n] = children_claim(&c)))
                ASSERT(got[n++] != b);
        ASSERT(got[0] == a);
        ASSERT_INT(n, ==, CAP - 1);
        assert_intact(b, 4242, "198.51.100.7", 2000, 7);
        children_done(&c);
}

/* What every field of a report may hold, made safe; honest values kept. */
static void test_report_check(void) {
        struct slot_report r = { .local = peer_of("192.0.2.1", 7),
                                 .stats = { .bytes_in = UINT64_MAX, .bytes_out = 3, .end_usec = 50,
                                            .reason = CLOSE_RESET, .error = ECONNRESET } };
        struct slot_report honest = r;

        slot_report_check(&r, 100);
        ASSERT(memcmp(&r, &honest, sizeof(r)) == 0);
        r.stats.reason = UINT32_MAX;
        r.stats.error = 4096;
        r.local.sa.sa_family = AF_UNIX;
        r.stats.end_usec = 101;
        slot_report_check(&r, 100);
        ASSERT_INT(r.stats.reason, ==, CLOSE_ERROR);
        ASSERT_INT(r.stats.error, ==, 0);
        ASSERT_INT(r.local.sa.sa_family, ==, AF_UNSPEC);
        ASSERT(r.stats.end_usec == 100 && r.stats.bytes_in == UINT64_MAX);
        r.stats.reason = _CLOSE_REASON_MAX;
        r.stats.error = INT32_MIN;
        slot_report_check(&r, 100);
        ASSERT_INT(r.stats.reason, ==, CLOSE_ERROR);
        ASSERT_INT(r.stats.error, ==, 0);
}

/* A killed worker's figure is the acknowledged one, never more than it
 * claimed, whatever the shared report holds. */
static void test_report_killed(void) {
        struct slot_report r = { .stats = { .bytes_out = 100000, .bytes_acked = 4096 } };

        slot_report_killed(&r);
        ASSERT(r.stats.bytes_out == 4096);
        r.stats.bytes_acked = UINT64_MAX; /* a worker gone wrong claims more */
        slot_report_killed(&r);
        ASSERT(r.stats.bytes_out == 4096);
        r.stats.bytes_acked = 0; /* killed during the echo */
        slot_report_killed(&r);
        ASSERT(r.stats.bytes_out == 0);
}

/* Who records a session: decided once, by whichever side comes first. */
static void test_recorder_decided_once(void) {
        struct slot_report r = { 0 };

        /* The worker ends first, the daemon there: the daemon records. */
        ASSERT(!slot_report_worker_done(&r, false));
        ASSERT(slot_report_parent_leaves(&r)); /* the daemon must reap it */
        /* The daemon leaves first: the worker records, the daemon does not. */
        r = (struct slot_report) { 0 };
        ASSERT(!slot_report_parent_leaves(&r));
        ASSERT(slot_report_worker_done(&r, false));
        /* The daemon was killed (never told): the orphaned worker records. */
        r = (struct slot_report) { 0 };
        ASSERT(slot_report_worker_done(&r, true));
        /* Across processes, through the shared mapping. */
        struct slot_report *shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
                                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(shared != MAP_FAILED);
        memset(shared, 0, sizeof(*shared));
        pid_t pid = fork();
        if (pid == 0)
                _exit(slot_report_worker_done(shared, false) ? 1 : 0);
        int status;
        ASSERT_INT(waitpid(pid, &status, 0), ==, pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(slot_report_parent_leaves(shared));
        munmap(shared, sizeof(*shared));
}

/* A reload's record policy reaches every live worker's report, and only
 * those; a fresh report has none (the worker keeps its own). */
static void test_policy_to_live_reports(void) {
        struct record_policy p = { .set = 1, .log_addresses = 1, .prefix_v4 = 24, .prefix_v6 = 48, .log_level = 4 };
        struct children c;
        struct child *a, *b;

        ASSERT_INT(children_init(&c, 4), ==, 0);
        a = children_claim(&c);
        children_commit(&c, a, 100);
        b = children_claim(&c);
        ASSERT_INT(slot_report_policy(children_report(&c, a)).set, ==, 0);
        children_set_policy(&c, &p);
        struct record_policy got = slot_report_policy(children_report(&c, a));
        ASSERT(memcmp(&got, &p, sizeof(p)) == 0);
        ASSERT_INT(slot_report_policy(children_report(&c, b)).set, ==, 0); /* claimed, not running */
        children_commit(&c, b, 101);
        children_release(&c, a);
        ASSERT(children_claim(&c) == a);
        ASSERT_INT(slot_report_policy(children_report(&c, a)).set, ==, 0); /* zeroed for the next worker */
        children_done(&c);
}

int main(void) {
        RUN(test_claim_until_full);
        RUN(test_recorder_decided_once);
        RUN(test_failed_fork_slot);
        RUN(test_table_against_reference);
        RUN(test_shared_with_child);
        RUN(test_worker_cannot_touch_bookkeeping);
        RUN(test_report_check);
        RUN(test_report_killed);
        RUN(test_policy_to_live_reports);
        return 0;
}
