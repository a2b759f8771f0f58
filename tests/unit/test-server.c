/* server: what Accept=yes (server_run_connected()) does with its one
 * client under each client policy. The event loop, the drain and the
 * hand-off run the real binary: tests/integration/test_lifecycle.py and
 * test_handoff.py. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "server.h"
#include "tcp-pair.h"

/* A client from 127.0.0.1 held to every policy: the default loopback
 * exemption removed. */
static struct config strict(void) {
        struct config c;

        config_defaults(&c);
        c.n_exempt = 0;
        c.source_rate_milli = 0;
        c.max_clients_per_source = 0;
        return c;
}

/* The outcome for one client, and whether the client saw a reset (true) or
 * its echo (false). A served client runs in a child: serving ends that
 * process's signal setup. */
static enum server_connected_outcome run(const struct config *c, bool *reset) {
        enum server_connected_outcome outcome = SERVER_CONNECTED_SERVED;
        sigset_t mask;
        char buf[8];
        int client, server, status;
        pid_t pid;

        tcp_pair(&client, &server);
        ASSERT(fcntl(server, F_SETFL, 0) == 0); /* blocking, as systemd passes it */
        sigemptyset(&mask);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                close(client);
                _exit(server_run_connected(c, &mask, server, &outcome) < 0 ? 100 : (int) outcome);
        }
        close(server);
        /* A reset may come before the send or after it. */
        ssize_t n = send(client, "hi", 2, 0);
        if (n == 2)
                n = recv(client, buf, sizeof(buf), 0);
        *reset = n < 0 && (errno == ECONNRESET || errno == EPIPE);
        if (!*reset)
                ASSERT(n == 2 && memcmp(buf, "hi", 2) == 0);
        close(client);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) != 100);
        return (enum server_connected_outcome) WEXITSTATUS(status);
}

static void test_served_when_every_policy_holds(void) {
        struct config c = strict();
        bool reset;

        c.max_clients_per_source = 4;   /* /32 by default: systemd's count */
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_SERVED);
        ASSERT(!reset);
}

static void test_denied_is_refused(void) {
        struct config c = strict();
        bool reset;

        ASSERT_INT(cidr_parse("127.0.0.0/8", &c.deny[0]), ==, 0);
        c.n_deny = 1;
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_REFUSED);
        ASSERT(reset);
}

/* Each policy that no instance can enforce refuses the client. */
static void test_unenforceable_is_refused(void) {
        struct config c = strict();
        bool reset;

        c.source_rate_milli = 1000;
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_UNENFORCEABLE);
        ASSERT(reset);

        c = strict();
        c.max_clients_per_source = 4;
        c.source_prefix_v4 = 24;
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_UNENFORCEABLE);
        ASSERT(reset);

        c = strict();
        c.log_addresses = LOG_ADDRESSES_PREFIX;
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_UNENFORCEABLE);
        ASSERT(reset);
}

/* An exempt client is held to neither per-source limit, so neither can be
 * unenforceable for it. */
static void test_exempt_client_served_despite_source_rate(void) {
        struct config c;
        bool reset;

        config_defaults(&c);            /* loopback exempt */
        c.source_rate_milli = 1000;
        c.source_prefix_v4 = 24;
        ASSERT_INT(run(&c, &reset), ==, SERVER_CONNECTED_SERVED);
        ASSERT(!reset);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        RUN(test_served_when_every_policy_holds);
        RUN(test_denied_is_refused);
        RUN(test_unenforceable_is_refused);
        RUN(test_exempt_client_served_despite_source_rate);
        return 0;
}
