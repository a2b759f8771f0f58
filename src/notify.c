/* See notify.h. Messages are sent from the main process with a plain
 * send(): the kernel attaches the sender's credentials (systemd sets
 * SO_PASSCRED on its socket), which is what NotifyAccess=main checks. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"
#include "util.h"

static int notify_fd = -1;
static unsigned failed;
static int last_failure;

int notify_open(void) {
        const char *name = getenv("NOTIFY_SOCKET");
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        size_t n;
        socklen_t len;
        int fd;

        notify_close();
        if (!name || !name[0])
                return 0;
        n = strlen(name);
        if ((name[0] != '/' && name[0] != '@') || n < 2 || n > sizeof(a.sun_path) - (name[0] == '/'))
                return -EINVAL;
        memcpy(a.sun_path, name, n);
        if (name[0] == '@')
                a.sun_path[0] = 0; /* abstract: the length, not a NUL, ends the name */
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'));

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, (struct sockaddr *) &a, len) < 0) {
                int r = negative_errno();
                close(fd);
                return r;
        }
        notify_fd = fd;
        return 0;
}

void notify_close(void) {
        notify_fd = safe_close(notify_fd);
}

__attribute__((format(printf, 1, 2)))
static void notify_send(const char *fmt, ...) {
        char msg[512];
        va_list ap;
        int n;

        if (notify_fd < 0)
                return;
        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof(msg))
                n = (int) strlen(msg); /* a status cut short still says what it can */
        if (send(notify_fd, msg, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                failed++;
                last_failure = errno;
        }
}

unsigned notify_failures(int *last_error) {
        unsigned n = failed;

        *last_error = n ? last_failure : 0;
        failed = 0;
        return n;
}

uint64_t notify_watchdog_interval(void) {
        uint64_t usec = 0;

        if (sd_watchdog_enabled(0, &usec) <= 0)
                return 0;
        return usec / 2;
}

void notify_ready(const char *status) {
        notify_send("READY=1\nSTATUS=%s", status);
}

void notify_status(const char *status) {
        notify_send("STATUS=%s", status);
}

void notify_reloading(void) {
        /* MONOTONIC_USEC lets systemd match READY=1 to this reload. */
        notify_send("RELOADING=1\nSTATUS=Reloading configuration\nMONOTONIC_USEC=%" PRIu64,
                    now_usec(CLOCK_MONOTONIC));
}

void notify_stopping(const char *status, uint64_t extend_usec) {
        notify_send("STOPPING=1\nSTATUS=%s\nEXTEND_TIMEOUT_USEC=%" PRIu64, status, extend_usec);
}

void notify_watchdog(void) {
        notify_send("WATCHDOG=1");
}
