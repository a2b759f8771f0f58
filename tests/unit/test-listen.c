/* listen: binding from the configuration, and taking sockets the way
 * systemd passes them (fd 3 onwards, LISTEN_FDS, LISTEN_PID). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen.h"
#include "test.h"

static void pass_fds(const int *fds, int n, const char *names) {
        char v[32];

        int high[8];

        /* Via high numbers first: an fd may already sit where another goes. */
        for (int i = 0; i < n; i++) {
                high[i] = fcntl(fds[i], F_DUPFD, 100);
                close(fds[i]);
        }
        for (int i = 0; i < n; i++) {
                ASSERT(dup2(high[i], 3 + i) == 3 + i);
                close(high[i]);
        }
        snprintf(v, sizeof(v), "%d", n);
        setenv("LISTEN_FDS", v, 1);
        snprintf(v, sizeof(v), "%d", (int) getpid());
        setenv("LISTEN_PID", v, 1);
        if (names)
                setenv("LISTEN_FDNAMES", names, 1);
        else
                unsetenv("LISTEN_FDNAMES");
}

static int tcp_listener(const char *ip) {
        struct sockaddr_in a = { .sin_family = AF_INET };
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        inet_pton(AF_INET, ip, &a.sin_addr);
        ASSERT(bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0);
        ASSERT(listen(fd, 8) == 0);
        return fd;
}

static void test_nothing_passed(void) {
        struct listen_set ls;
        char err[256];

        unsetenv("LISTEN_FDS");
        listen_set_init(&ls);
        ASSERT_INT(listen_inherit(&ls, err, sizeof(err)), ==, 0);
        ASSERT_INT(ls.n, ==, 0);
}

static void test_inherit_two(void) {
        int fds[2] = { tcp_listener("127.0.0.1"), tcp_listener("127.0.0.2") };
        struct listen_set ls;
        char err[256];

        pass_fds(fds, 2, "echo:other");
        listen_set_init(&ls);
        ASSERT_INT(listen_inherit(&ls, err, sizeof(err)), ==, 2);
        ASSERT_INT(ls.n, ==, 2);
        ASSERT(strcmp(ls.l[0].name, "echo") == 0 && strcmp(ls.l[1].name, "other") == 0);
        ASSERT_STR_CONTAINS(ls.l[1].address, "127.0.0.2:");
        ASSERT(ls.l[0].inherited && ls.l[0].fd == 3);
        ASSERT(fcntl(3, F_GETFL) & O_NONBLOCK);
        ASSERT(getenv("LISTEN_FDS") == NULL); /* never leaks to workers */
        listen_close_all(&ls);
        ASSERT(fcntl(3, F_GETFD) < 0);
}

static void test_inherit_wrong_kind(void) {
        int fds[2] = { tcp_listener("127.0.0.1"), socket(AF_INET, SOCK_DGRAM, 0) };
        struct listen_set ls;
        char err[256];

        pass_fds(fds, 2, "echo:udp");
        listen_set_init(&ls);
        ASSERT_INT(listen_inherit(&ls, err, sizeof(err)), <, 0);
        ASSERT_STR_CONTAINS(err, "fd 4 (udp) is a non-listening datagram socket (AF_INET)");
        ASSERT_INT(ls.n, ==, 0);
        ASSERT(fcntl(3, F_GETFD) < 0 && fcntl(4, F_GETFD) < 0); /* nothing left open */
}

static void test_inherit_connected(void) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        int l = tcp_listener("127.0.0.1"), c = socket(AF_INET, SOCK_STREAM, 0), s;
        struct listen_set ls;
        char err[256];

        getsockname(l, (struct sockaddr *) &a, &len);
        ASSERT(connect(c, (struct sockaddr *) &a, len) == 0);
        s = accept(l, NULL, NULL);
        pass_fds(&s, 1, NULL);
        listen_set_init(&ls);
        ASSERT_INT(listen_inherit(&ls, err, sizeof(err)), ==, 1);
        ASSERT_INT(ls.n, ==, 0);
        ASSERT_INT(ls.connected_fd, ==, 3);
        listen_close_all(&ls);
        close(c);
        close(l);
}

static void test_bind(void) {
        struct config c;
        struct listen_set ls, again;
        char err[256];

        config_defaults(&c);
        c.n_listen = 2;
        snprintf(c.listen[0], sizeof(c.listen[0]), "127.0.0.1");
        snprintf(c.listen[1], sizeof(c.listen[1]), "::1");
        listen_set_init(&ls);
        ASSERT_INT(listen_bind(&ls, &c, 0, err, sizeof(err)), ==, 0);
        ASSERT_INT(ls.n, ==, 2);
        ASSERT_STR_CONTAINS(ls.l[1].address, "[::1]:");

        /* The same port again: one clear line naming the address. */
        c.n_listen = 1;
        listen_set_init(&again);
        ASSERT_INT(listen_bind(&again, &c, ls.l[0].port, err, sizeof(err)), <, 0);
        char want[64];
        snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%u: Address already in use", ls.l[0].port);
        ASSERT_STR_CONTAINS(err, want);
        ASSERT_INT(again.n, ==, 0);
        listen_close_all(&ls);

        snprintf(c.listen[0], sizeof(c.listen[0]), "192.0.2.1"); /* not ours */
        ASSERT_INT(listen_bind(&again, &c, 0, err, sizeof(err)), <, 0);
        ASSERT_STR_CONTAINS(err, "cannot listen on 192.0.2.1:0: Cannot assign requested address");
}

/* Standalone binding follows config_listen_dual_stack(): the unspecified
 * IPv6 address takes IPv4 clients too in every spelling, unless an IPv4
 * address is listed. */
static void test_bind_any_in_every_spelling(void) {
        const char *spellings[] = { "::", "0::0", "::0", "0:0:0:0:0:0:0:0" };
        struct config c;
        struct listen_set ls;
        char err[256];

        for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
                int v6only = -1;
                socklen_t len = sizeof(v6only);

                config_defaults(&c);
                snprintf(c.listen[0], sizeof(c.listen[0]), "%s", spellings[i]);
                listen_set_init(&ls);
                ASSERT_INT(listen_bind(&ls, &c, 0, err, sizeof(err)), ==, 0);
                ASSERT_INT(ls.n, ==, 1);
                ASSERT_INT(getsockopt(ls.l[0].fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), ==, 0);
                ASSERT_INT(v6only, ==, 0);
                listen_close_all(&ls);

                c.n_listen = 2;
                snprintf(c.listen[1], sizeof(c.listen[1]), "127.0.0.1");
                listen_set_init(&ls);
                ASSERT_INT(listen_bind(&ls, &c, 0, err, sizeof(err)), ==, 0);
                ASSERT_INT(getsockopt(ls.l[0].fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), ==, 0);
                ASSERT_INT(v6only, ==, 1);
                listen_close_all(&ls);
        }
}

static void test_started_by_systemd(void) {
        char pid[24];

        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        unsetenv("INVOCATION_ID");
        setenv("SYSTEMD_EXEC_PID", pid, 1);
        ASSERT(!listen_started_by_systemd());
        setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
        ASSERT(listen_started_by_systemd());
        setenv("SYSTEMD_EXEC_PID", "1", 1);     /* inherited from a service */
        ASSERT(!listen_started_by_systemd());
        unsetenv("SYSTEMD_EXEC_PID");
        ASSERT(!listen_started_by_systemd());
        unsetenv("INVOCATION_ID");
}

int main(void) {
        RUN(test_nothing_passed);
        RUN(test_started_by_systemd);
        RUN(test_inherit_two);
        RUN(test_inherit_wrong_kind);
        RUN(test_inherit_connected);
        RUN(test_bind);
        RUN(test_bind_any_in_every_spelling);
        return 0;
}
