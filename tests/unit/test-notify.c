/* notify: what reaches a NOTIFY_SOCKET we own. */
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"
#include "test.h"

static int sock;

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

int main(void) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        char path[64];

        snprintf(path, sizeof(path), "/tmp/test-notify-%d", (int) getpid());
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        sock = socket(AF_UNIX, SOCK_DGRAM, 0);
        ASSERT(bind(sock, (struct sockaddr *) &a, sizeof(a)) == 0);
        setenv("NOTIFY_SOCKET", path, 1);
        RUN(test_messages);
        RUN(test_watchdog_interval);
        unlink(path);
        return 0;
}
