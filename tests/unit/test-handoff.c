/* handoff: the file round-trips; truncated, oversized, foreign and hostile
 * content is refused without reading past the file; a process is the one
 * named only while it lives with the recorded start time; the live list
 * is written only through its own mapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"
#include "test.h"

static struct handoff_entry entry(pid_t pid) {
        struct handoff_entry e = { .pid = pid };

        e.peer.in.sin_family = AF_INET;
        e.peer.in.sin_addr.s_addr = htonl(0x7f000001);
        ASSERT_INT(handoff_start_time(pid, &e.start_time), ==, 0);
        return e;
}

static int raw_file(const void *data, size_t n) {
        int fd = memfd_create("test", MFD_CLOEXEC);

        ASSERT(fd >= 0);
        ASSERT_INT(write(fd, data, n), ==, (ssize_t) n);
        return fd;
}

static void test_round_trip(void) {
        struct handoff_entry e[2] = { entry(getpid()), entry(getppid()) }, *got;
        size_t n;
        int fd = handoff_write(e, 2);

        ASSERT(fd >= 0);
        ASSERT(write(fd, "x", 1) < 0); /* sealed */
        ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, 0);
        ASSERT_INT(n, ==, 2);
        ASSERT(memcmp(got, e, sizeof(e)) == 0);
        free(got);
        /* More entries than the reader takes: refused whole. */
        ASSERT_INT(handoff_read(fd, 1, &got, &n), ==, -EBADMSG);
        ASSERT(got == NULL && n == 0);
        close(fd);

        fd = handoff_write(NULL, 0);
        ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, 0);
        ASSERT(got == NULL && n == 0);
        close(fd);
}

static void test_malformed_files(void) {
        struct handoff_entry e[2] = { entry(getpid()), entry(getpid()) }, *got;
        char buf[4096];
        size_t n;
        int good = handoff_write(e, 2);
        ssize_t size = pread(good, buf, sizeof(buf), 0);

        ASSERT(size > 16);
        /* Every truncation, and one byte too many. */
        for (ssize_t cut = 0; cut < size; cut++) {
                int fd = raw_file(buf, (size_t) cut);
                ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, -EBADMSG);
                close(fd);
        }
        buf[size] = 0;
        int fd = raw_file(buf, (size_t) size + 1);
        ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, -EBADMSG);
        close(fd);
        /* A count that claims more than the file holds, a wrong magic, a
         * wrong version, a wrong entry size. */
        for (int field = 0; field < 4; field++) {
                char bad[4096];
                memcpy(bad, buf, (size_t) size);
                ((uint32_t *) bad)[field] ^= field == 3 ? 0x40000000 : 1;
                fd = raw_file(bad, (size_t) size);
                ASSERT_INT(handoff_read(fd, 1u << 31, &got, &n), ==, -EBADMSG);
                ASSERT(got == NULL && n == 0);
                close(fd);
        }
        /* Not a file at all. */
        int p[2];
        ASSERT(pipe(p) == 0);
        ASSERT_INT(handoff_read(p[0], 16, &got, &n), ==, -EBADMSG);
        close(p[0]);
        close(p[1]);
        close(good);
}

static void test_hostile_entries_skipped(void) {
        struct handoff_entry e[4] = { entry(getpid()), entry(getpid()), entry(getpid()), entry(getpid()) }, *got;
        size_t n;

        e[0].pid = 0; /* an empty slot: left out, not counted as malformed */
        e[1].pid = -5;
        e[2].peer.sa.sa_family = AF_UNIX;
        int fd = handoff_write(e, 4);
        ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, 2);
        ASSERT_INT(n, ==, 1);
        ASSERT_INT(got[0].pid, ==, getpid());
        free(got);
        close(fd);
}

static void test_same_process(void) {
        pid_t child = fork();

        ASSERT(child >= 0);
        if (child == 0) {
                pause();
                _exit(0);
        }
        struct handoff_entry e = entry(child);
        int pidfd = (int) pidfd_open(child, 0);
        if (pidfd < 0 && errno == ENOSYS) {
                /* valgrind 3.19 does not know pidfd_open(); the daemon then
                 * checks adopted sessions by their pid once a second. */
                printf("   skipped: pidfd_open() not available here\n");
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
                return;
        }
        ASSERT(pidfd >= 0);
        ASSERT_INT(handoff_same_process(pidfd, &e), ==, 0);
        e.start_time++;
        ASSERT_INT(handoff_same_process(pidfd, &e), ==, -ESRCH); /* another process with the pid */
        e.start_time = 0; /* unknown (the lister could not read it): the user decides */
        ASSERT_INT(handoff_same_process(pidfd, &e), ==, 0);
        kill(child, SIGKILL);
        ASSERT_INT(waitpid(child, NULL, 0), ==, child);
        ASSERT_INT(handoff_same_process(pidfd, &e), ==, -ESRCH); /* gone */
        close(pidfd);
        uint64_t t;
        ASSERT_INT(handoff_start_time(child, &t), ==, -ESRCH);
}

/* The live list: entries set and cleared in place are what a reader of
 * the same descriptor finds, empty slots left out; a worker (a child) does
 * not have the mapping. */
static void test_live_table(void) {
        struct handoff_entry e[2] = { entry(getpid()), entry(getppid()) }, *got;
        struct handoff_table t;
        size_t n;
        pid_t child;
        int status;

        ASSERT_INT(handoff_table_open(&t, 8), ==, 0);
        ASSERT_INT(handoff_read(t.fd, 16, &got, &n), ==, 0);
        ASSERT(got == NULL && n == 0);
        handoff_table_set(&t, 2, &e[0]);
        handoff_table_set(&t, 7, &e[1]);
        handoff_table_set(&t, 8, &e[1]); /* out of range: nothing */
        ASSERT_INT(handoff_read(t.fd, 16, &got, &n), ==, 0);
        ASSERT_INT(n, ==, 2);
        ASSERT(memcmp(got, e, sizeof(e)) == 0);
        free(got);
        handoff_table_clear(&t, 2);
        ASSERT_INT(handoff_read(t.fd, 16, &got, &n), ==, 0);
        ASSERT(n == 1 && memcmp(got, &e[1], sizeof(e[1])) == 0);
        free(got);
        child = fork();
        ASSERT(child >= 0);
        if (child == 0) {
                unsigned char resident;
                /* Not mapped here: mincore() fails with ENOMEM. */
                _exit(mincore(t.map, 1, &resident) < 0 && errno == ENOMEM ? 0 : 1);
        }
        ASSERT_INT(waitpid(child, &status, 0), ==, child);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        handoff_table_close(&t);
        ASSERT_INT(t.fd, ==, -1);
}

/* Only the table's own mapping writes the list: another opening of the
 * memfd (as through /proc/PID/fd, or systemd's store) cannot write, resize
 * or map it writable, nor lift the seals. */
static void test_live_table_sealed(void) {
        struct handoff_entry e = entry(getpid()), *got;
        struct handoff_table t;
        char path[64];
        size_t n;
        int fd;

        ASSERT_INT(handoff_table_open(&t, 4), ==, 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", t.fd);
        fd = open(path, O_RDWR | O_CLOEXEC);
        ASSERT(fd >= 0);
        errno = 0;
        ASSERT(pwrite(fd, &e, sizeof(e), 16) < 0 && errno == EPERM);
        ASSERT(pwrite(t.fd, &e, sizeof(e), 16) < 0 && errno == EPERM);
        ASSERT(ftruncate(fd, 0) < 0 && errno == EPERM);
        ASSERT(ftruncate(fd, 1 << 20) < 0 && errno == EPERM);
        ASSERT(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EPERM);
        ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EPERM);
        handoff_table_set(&t, 1, &e); /* the table itself still can */
        ASSERT_INT(handoff_read(fd, 16, &got, &n), ==, 0);
        ASSERT(n == 1 && memcmp(got, &e, sizeof(e)) == 0);
        free(got);
        close(fd);
        handoff_table_close(&t);
}

/* The shared policy: written through rw, seen through ro, which cannot be
 * made writable; taken over from the store when it is such a memfd, made
 * anew when it is not. */
static void test_policy(void) {
        struct handoff_policy p, q;
        int fd, other;

        ASSERT_INT(handoff_policy_open(&p, -1), ==, 0);
        ASSERT(!p.stored && p.rw && p.ro);
        __atomic_store_n(p.rw, UINT64_C(0x0102030405060708), __ATOMIC_RELEASE);
        ASSERT(*p.ro == UINT64_C(0x0102030405060708));
        ASSERT(mprotect((void *) p.ro, sizeof(uint64_t), PROT_READ | PROT_WRITE) < 0 && errno == EACCES);
        ASSERT(ftruncate(p.fd, 0) < 0 && errno == EPERM);
        fd = dup(p.fd);
        ASSERT_INT(handoff_policy_open(&q, fd), ==, 0); /* the next daemon */
        ASSERT(q.stored && q.fd == fd);
        __atomic_store_n(q.rw, 42, __ATOMIC_RELEASE);
        ASSERT(*p.ro == 42);
        handoff_policy_close(&q);
        other = raw_file("12345678", 8); /* not sealed: anyone could shrink it under the mappings */
        ASSERT_INT(handoff_policy_open(&q, other), ==, 0);
        ASSERT(!q.stored && fcntl(q.fd, F_GET_SEALS) == (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW));
        handoff_policy_close(&q);
        handoff_policy_close(&p);
        ASSERT_INT(p.fd, ==, -1);
}

int main(void) {
        RUN(test_round_trip);
        RUN(test_live_table);
        RUN(test_live_table_sealed);
        RUN(test_policy);
        RUN(test_malformed_files);
        RUN(test_hostile_entries_skipped);
        RUN(test_same_process);
        return 0;
}
