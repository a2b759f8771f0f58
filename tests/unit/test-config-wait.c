/* config-wait: when a daemon with a broken file waits, and what it tells
 * the service manager until a reload loads the file or a stop ends it. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config-wait.h"
#include "log.h"
#include "test.h"

static int notes;
static char dir[] = "/tmp/test-config-wait-XXXXXX";
static char path[64];

static const char *receive(void) {
        static char buf[1024];
        ssize_t n = recv(notes, buf, sizeof(buf) - 1, MSG_DONTWAIT);

        ASSERT(n > 0);
        buf[n] = 0;
        return buf;
}

static void write_file(const char *text) {
        FILE *f = fopen(path, "w");

        ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

/* fd 3 as systemd passes it; LISTEN_PID and SYSTEMD_EXEC_PID name us. */
static void pass_socket(bool listening) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), pair[2];
        char pid[24];

        ASSERT(fd >= 0);
        if (listening) {
                ASSERT(listen(fd, 4) == 0);
        } else {
                close(fd);
                ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
                fd = pair[0];
                close(pair[1]);
        }
        if (fd != 3) {
                ASSERT(dup2(fd, 3) == 3);
                close(fd);
        }
        snprintf(pid, sizeof(pid), "%ld", (long) getpid());
        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("SYSTEMD_EXEC_PID", pid, 1);
        setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
}

static void test_applies(void) {
        pass_socket(true);
        ASSERT(config_wait_applies());
        unsetenv("INVOCATION_ID");      /* standalone: exits 78 */
        ASSERT(!config_wait_applies());
        pass_socket(false);             /* Accept=yes: one connected socket */
        ASSERT(!config_wait_applies());
        pass_socket(true);
        unsetenv("LISTEN_FDS");         /* started by systemd, nothing passed */
        ASSERT(!config_wait_applies());
}

static void test_waits_until_a_reload_loads(void) {
        struct config c;
        bool no_file = true;

        /* Pending before the wait (blocked, as in the daemon), read lowest
         * first: a reload of a still broken file keeps it waiting and says
         * so, then SIGTERM ends the wait. */
        write_file("log_level = info;\n");
        raise(SIGHUP);
        raise(SIGTERM);
        ASSERT_INT(config_wait(path, true, "c.conf:1: first problem\nc.conf:2: second\n", &c, &no_file), ==,
                   -ECANCELED);
        ASSERT_STR_CONTAINS(receive(), "READY=1\nSTATUS=Not serving, the configuration does not load: c.conf:1: "
                            "first problem (and more: echo-mpserv --check-config); fix the file, then run: "
                            "systemctl reload echo-mpserv");
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT_STR_CONTAINS(receive(), "log_level = info: a string value must be in double quotes");

        /* A reload that loads ends the wait with that configuration. */
        write_file("max_clients = 7;\n");
        raise(SIGHUP);
        ASSERT_INT(config_wait(path, true, "c.conf:1: a problem\n", &c, &no_file), ==, 0);
        ASSERT_INT(c.max_clients, ==, 7);
        ASSERT(!no_file);
        ASSERT(strstr(receive(), "STATUS=Not serving, the configuration does not load: c.conf:1: a problem; fix"));
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT(recv(notes, (char[8]) { 0 }, 8, MSG_DONTWAIT) < 0); /* READY=1 is the server's, once it serves */
}

int main(void) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        sigset_t mask;

        ASSERT(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/c.conf", dir);
        snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", dir);
        notes = socket(AF_UNIX, SOCK_DGRAM, 0);
        ASSERT(notes >= 0 && bind(notes, (struct sockaddr *) &a, sizeof(a)) == 0);
        setenv("NOTIFY_SOCKET", a.sun_path, 1);
        /* Out of the way of fd 3, where the passed socket goes. */
        ASSERT(dup2(notes, 50) == 50 && close(notes) == 0);
        notes = 50;
        sigemptyset(&mask);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        ASSERT(sigprocmask(SIG_BLOCK, &mask, NULL) == 0);
        log_setup();

        RUN(test_applies);
        RUN(test_waits_until_a_reload_loads);
        unlink(a.sun_path);
        unlink(path);
        rmdir(dir);
        return 0;
}
