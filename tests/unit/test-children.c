/* children: slot pool, pid table (including collisions and deletes), and
 * the shared-memory hand-over from a real child process. */
#include <sys/wait.h>
#include <unistd.h>

#include "children.h"
#include "test.h"

static void test_claim_until_full(void) {
        struct children c;
        struct slot *s[4];

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
        struct slot *s;

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
        struct slot *slots[CAP];
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

static void count(struct slot *s, void *userdata) {
        (void) s;
        (*(int *) userdata)++;
}

static void test_shared_with_child(void) {
        struct children c;
        struct slot *s;
        int status, seen = 0;
        pid_t pid;

        ASSERT_INT(children_init(&c, 8), ==, 0);
        s = children_claim(&c);
        s->start_usec = 42;
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                s->stats.bytes_in = 1234;
                s->stats.bytes_out = 1200;
                s->stats.reason = CLOSE_CLIENT;
                _exit(s->start_usec == 42 ? 0 : 1);
        }
        children_commit(&c, s, pid);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(children_find(&c, pid) == s);
        ASSERT(s->stats.bytes_in == 1234 && s->stats.bytes_out == 1200);
        children_foreach(&c, count, &seen);
        ASSERT_INT(seen, ==, 1);
        children_release(&c, s);
        children_done(&c);
}

int main(void) {
        RUN(test_claim_until_full);
        RUN(test_failed_fork_slot);
        RUN(test_table_against_reference);
        RUN(test_shared_with_child);
        return 0;
}
