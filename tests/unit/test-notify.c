/* notify: what reaches a NOTIFY_SOCKET we own. */
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stddef.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"
#include "test.h"

static int sock;
static char sock_path[64];

static const char *receive(void) {
        static char buf[512];
        ssize_t n = recv(sock, buf, sizeof(buf) - 1, 0);

        ASSERT(n > 0);
        buf[n] = 0;
        return buf;
}

static void test_messages(void) {
        ASSERT(strcmp((notify_ready("serving"), receive()), "READY=1\nSTATUS=serving") == 0);
        ASSERT(strcmp((notify_status("x"), receive()), "STATUS=x") == 0);
        notify_reloading();
        const char *m = receive();
        ASSERT_STR_CONTAINS(m, "RELOADING=1\n");
        ASSERT_STR_CONTAINS(m, "MONOTONIC_USEC=");
        ASSERT(strcmp((notify_stopping("bye", 17000000), receive()),
                      "STOPPING=1\nSTATUS=bye\nEXTEND_TIMEOUT_USEC=17000000") == 0);
        ASSERT(strcmp((notify_watchdog(), receive()), "WATCHDOG=1") == 0);
}

/* Out of descriptors (the daemon's accept() failing with EMFILE), every
 * notification still goes out: the socket was opened at start. */
static void test_out_of_descriptors(void) {
        struct rlimit old, low;
        int fd;

        ASSERT(getrlimit(RLIMIT_NOFILE, &old) == 0);
        fd = dup(0);
        ASSERT(fd >= 0);
        close(fd);
        low = (struct rlimit) { .rlim_cur = (rlim_t) fd, .rlim_max = old.rlim_max };
        ASSERT(setrlimit(RLIMIT_NOFILE, &low) == 0);
        ASSERT(dup(0) < 0 && errno == EMFILE);
        ASSERT(strcmp((notify_watchdog(), receive()), "WATCHDOG=1") == 0);
        ASSERT(strcmp((notify_ready("busy"), receive()), "READY=1\nSTATUS=busy") == 0);
        ASSERT(setrlimit(RLIMIT_NOFILE, &old) == 0);
        int err = -1;
        unsigned kinds = 1;
        ASSERT_INT(notify_failures(&err, &kinds), ==, 0);
        ASSERT_INT(err, ==, 0);
        ASSERT_INT(kinds, ==, 0);
}

/* A failed send is counted with its kind, never raises SIGPIPE. */
static void test_failures_counted(void) {
        int err = 0;
        unsigned kinds = 0;
        char name[64], what[80];

        /* An abstract name, systemd's other form; a socket that goes away. */
        int srv = socket(AF_UNIX, SOCK_DGRAM, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(name, sizeof(name), "@test-notify-%d", (int) getpid());
        memcpy(a.sun_path + 1, name + 1, strlen(name) - 1);
        ASSERT(bind(srv, (struct sockaddr *) &a, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(name))) == 0);
        setenv("NOTIFY_SOCKET", name, 1);
        ASSERT(notify_open() == 0);
        notify_status("abstract");
        char buf[64];
        ssize_t n = recv(srv, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        ASSERT(n == 15 && memcmp(buf, "STATUS=abstract", 15) == 0);
        close(srv);
        notify_watchdog();
        notify_ready("lost");
        ASSERT_INT(notify_failures(&err, &kinds), ==, 2);
        ASSERT(err == ECONNREFUSED || err == ENOTCONN); /* the kernel says either */
        notify_kinds_format(kinds, what, sizeof(what));
        ASSERT(strcmp(what, "READY=1, WATCHDOG=1") == 0);
        ASSERT_INT(notify_failures(&err, &kinds), ==, 0);
        notify_kinds_format(NOTIFY_KIND_READY | NOTIFY_KIND_STOPPING, what, 12);
        ASSERT(strcmp(what, "READY=1, ST") == 0); /* cut, still terminated */

        setenv("NOTIFY_SOCKET", "relative", 1);
        ASSERT_INT(notify_open(), ==, -EINVAL);
        unsetenv("NOTIFY_SOCKET");
        ASSERT_INT(notify_open(), ==, 0);
        notify_watchdog(); /* a no-op */
        ASSERT_INT(notify_failures(&err, &kinds), ==, 0);
}

/* A NOTIFY_SOCKET nobody listens on yet is reported, not fatal: STATUS=
 * and WATCHDOG=1 are skipped uncounted, and a state message connects
 * once somebody does. */
static void test_late_listener(void) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        int err = 0, srv;
        unsigned kinds = 0;
        char buf[64];

        snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/test-notify-late-%d", (int) getpid());
        unlink(a.sun_path);
        setenv("NOTIFY_SOCKET", a.sun_path, 1);
        ASSERT_INT(notify_open(), ==, -ENOENT);
        notify_status("nobody");
        notify_watchdog();
        ASSERT_INT(notify_failures(&err, &kinds), ==, 0);
        notify_stopping("nobody yet", 1);
        ASSERT_INT(notify_failures(&err, &kinds), ==, 1);
        ASSERT_INT(err, ==, ENOENT);
        ASSERT_INT(kinds, ==, NOTIFY_KIND_STOPPING);

        srv = socket(AF_UNIX, SOCK_DGRAM, 0);
        ASSERT(bind(srv, (struct sockaddr *) &a, sizeof(a)) == 0);
        notify_ready("late");
        ssize_t n = recv(srv, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        ASSERT(n == 19 && memcmp(buf, "READY=1\nSTATUS=late", 19) == 0);
        notify_watchdog(); /* connected now */
        n = recv(srv, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        ASSERT(n == 10 && memcmp(buf, "WATCHDOG=1", 10) == 0);
        ASSERT_INT(notify_failures(&err, &kinds), ==, 0);
        close(srv);
        unlink(a.sun_path);
        notify_close();
}

static void test_watchdog_interval(void) {
        char pid[16];

        unsetenv("WATCHDOG_USEC");
        ASSERT(notify_watchdog_interval() == 0);
        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        setenv("WATCHDOG_PID", pid, 1);
        setenv("WATCHDOG_USEC", "3000000", 1);
        ASSERT(notify_watchdog_interval() == 1500000);
        setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
        ASSERT(notify_watchdog_interval() == 0);
}

/* Receives one message and the descriptor it carries (-1: none). */
static const char *receive_fd(int *fd) {
        static char buf[512];
        union {
                struct cmsghdr h;
                char b[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.b,
                             .msg_controllen = sizeof(control.b) };
        ssize_t n = recvmsg(sock, &mh, 0);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        ASSERT(n > 0);
        buf[n] = 0;
        *fd = -1;
        if (c && c->cmsg_type == SCM_RIGHTS)
                memcpy(fd, CMSG_DATA(c), sizeof(int));
        return buf;
}

/* The store: the descriptor goes with FDSTORE=1 and its name, then the
 * barrier, whose pipe the manager closes once it has read both; only then
 * does notify_store_fd() return. A manager that never closes it makes it
 * fail after NOTIFY_STATE_WAIT_USEC, which is not waited for here. */
static void test_store_fd(void) {
        int p[2], status;
        pid_t manager;

        setenv("NOTIFY_SOCKET", sock_path, 1);
        ASSERT_INT(notify_open(), ==, 0);
        ASSERT(pipe(p) == 0);
        manager = fork();
        ASSERT(manager >= 0);
        if (manager == 0) {
                int fd, barrier;
                alarm(10); /* never outlive a failed test */
                struct stat a, b;
                const char *m = receive_fd(&fd);
                ASSERT(strcmp(m, "FDSTORE=1\nFDNAME=handoff") == 0);
                ASSERT(fd >= 0 && fstat(fd, &a) == 0 && fstat(p[0], &b) == 0 && a.st_ino == b.st_ino);
                m = receive_fd(&barrier);
                ASSERT(strcmp(m, "BARRIER=1") == 0 && barrier >= 0);
                close(barrier);
                _exit(0);
        }
        ASSERT_INT(notify_store_fd(p[0], "handoff"), ==, 0);
        ASSERT_INT(waitpid(manager, &status, 0), ==, manager);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(p[0]);
        close(p[1]);
        notify_store_remove("handoff");
        ASSERT(strcmp(receive(), "FDSTOREREMOVE=1\nFDNAME=handoff") == 0);
}

int main(void) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        char path[64];

        snprintf(path, sizeof(path), "/tmp/test-notify-%d", (int) getpid());
        snprintf(sock_path, sizeof(sock_path), "%s", path);
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        sock = socket(AF_UNIX, SOCK_DGRAM, 0);
        ASSERT(bind(sock, (struct sockaddr *) &a, sizeof(a)) == 0);
        setenv("NOTIFY_SOCKET", path, 1);
        ASSERT(notify_open() == 0);
        RUN(test_messages);
        RUN(test_out_of_descriptors);
        RUN(test_failures_counted);
        RUN(test_store_fd);
        RUN(test_late_listener);
        RUN(test_watchdog_interval);
        unlink(path);
        return 0;
}
