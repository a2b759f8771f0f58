/* See notify.h. Messages are sent from the main process with a plain
 * send(): the kernel attaches the sender's credentials (systemd sets
 * SO_PASSCRED on its socket), which is what NotifyAccess=main checks. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
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
static bool connected;               /* false: connect() failed, retried by state messages */
static struct sockaddr_un address;
static socklen_t address_len;
static unsigned failed;
static unsigned failed_kinds;
static int last_failure;

static int notify_connect(void) {
        if (connect(notify_fd, (struct sockaddr *) &address, address_len) < 0)
                return negative_errno();
        connected = true;
        return 0;
}

int notify_open(void) {
        const char *name = getenv("NOTIFY_SOCKET");
        size_t n;

        notify_close();
        if (!name || !name[0])
                return 0;
        n = strlen(name);
        if ((name[0] != '/' && name[0] != '@') || n < 2 || n > sizeof(address.sun_path) - (name[0] == '/'))
                return -EINVAL;
        address = (struct sockaddr_un) { .sun_family = AF_UNIX };
        memcpy(address.sun_path, name, n);
        if (name[0] == '@')
                address.sun_path[0] = 0; /* abstract: the length, not a NUL, ends the name */
        address_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'));

        /* Opened even when nobody listens yet, so a later connect() needs
         * no descriptor (see notify.h). */
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (notify_fd < 0)
                return negative_errno();
        return notify_connect();
}

void notify_close(void) {
        notify_fd = safe_close(notify_fd);
        connected = false;
}

/* A datagram socket connected to a peer whose queue is full polls
 * writable once the peer has read (the kernel wakes its senders), so
 * poll() bounds the wait and send() retries. Signals are blocked and read
 * from the signalfd, so poll() is interrupted only by a stop signal. */
static int send_waiting_fd(const char *msg, size_t n, int fd, uint64_t wait_usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + wait_usec;
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = { 0 };
        struct iovec iov = { .iov_base = (void *) msg, .iov_len = n };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        if (fd >= 0) {
                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof(control.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        for (;;) {
                struct pollfd p = { .fd = notify_fd, .events = POLLOUT };
                uint64_t now;

                if (sendmsg(notify_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
                        return 0;
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                        return negative_errno();
                now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        return -EAGAIN;
                if (poll(&p, 1, usec_to_timeout_ms(deadline - now)) < 0 && errno != EINTR)
                        return negative_errno();
        }
}

static int send_waiting(const char *msg, size_t n, uint64_t wait_usec) {
        return send_waiting_fd(msg, n, -1, wait_usec);
}

__attribute__((format(printf, 2, 3)))
static void notify_send(unsigned kind, const char *fmt, ...) {
        bool state = kind & (NOTIFY_KIND_READY | NOTIFY_KIND_RELOADING | NOTIFY_KIND_STOPPING);
        char msg[512];
        va_list ap;
        int n, r;

        if (notify_fd < 0)
                return;
        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof(msg))
                n = (int) strlen(msg); /* a status cut short still says what it can */
        if (!connected && !state)
                return; /* notify_open() said so; a state message will try again */
        r = connected ? 0 : notify_connect();
        if (r == 0)
                r = send_waiting(msg, (size_t) n, state ? NOTIFY_STATE_WAIT_USEC : 0);
        if (r < 0) {
                failed++;
                failed_kinds |= kind;
                last_failure = -r;
        }
}

unsigned notify_failures(int *last_error, unsigned *kinds) {
        unsigned n = failed;

        *last_error = n ? last_failure : 0;
        *kinds = n ? failed_kinds : 0;
        failed = 0;
        failed_kinds = 0;
        return n;
}

void notify_kinds_format(unsigned kinds, char *buf, size_t size) {
        static const char *const names[] = { "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=", "WATCHDOG=1" };
        size_t used = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(names) && used < size; i++)
                if (kinds & (1u << i)) {
                        int w = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", names[i]);
                        if (w < 0)
                                break;
                        used += (size_t) w;
                }
}

uint64_t notify_watchdog_interval(void) {
        uint64_t usec = 0;

        if (sd_watchdog_enabled(0, &usec) <= 0)
                return 0;
        return usec / 2;
}

void notify_ready(const char *status) {
        notify_send(NOTIFY_KIND_READY, "READY=1\nSTATUS=%s", status);
}

void notify_status(const char *status) {
        notify_send(NOTIFY_KIND_STATUS, "STATUS=%s", status);
}

void notify_reloading(void) {
        /* MONOTONIC_USEC lets systemd match READY=1 to this reload. */
        notify_send(NOTIFY_KIND_RELOADING, "RELOADING=1\nSTATUS=Reloading configuration\nMONOTONIC_USEC=%" PRIu64,
                    now_usec(CLOCK_MONOTONIC));
}

void notify_stopping(const char *status, uint64_t extend_usec) {
        notify_send(NOTIFY_KIND_STOPPING, "STOPPING=1\nSTATUS=%s\nEXTEND_TIMEOUT_USEC=%" PRIu64, status, extend_usec);
}

void notify_watchdog(void) {
        notify_send(NOTIFY_KIND_WATCHDOG, "WATCHDOG=1");
}

void notify_store_remove(const char *name) {
        notify_send(NOTIFY_KIND_STATUS, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

int notify_store_fd(int fd, const char *name) {
        char msg[128];
        int p[2], r;

        if (notify_fd < 0)
                return -ENOTCONN;
        r = connected ? 0 : notify_connect();
        if (r < 0)
                return r;
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
        r = send_waiting_fd(msg, strlen(msg), fd, NOTIFY_STATE_WAIT_USEC);
        if (r < 0)
                return r;
        /* The barrier: systemd closes the pipe's far end once it has dealt
         * with every message sent before it, the store among them. */
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        r = send_waiting_fd("BARRIER=1", strlen("BARRIER=1"), p[1], NOTIFY_STATE_WAIT_USEC);
        safe_close(p[1]);
        if (r == 0) {
                struct pollfd pf = { .fd = p[0], .events = 0 };
                int n = poll(&pf, 1, usec_to_timeout_ms(NOTIFY_STATE_WAIT_USEC));
                r = n > 0 ? 0 : n == 0 ? -ETIMEDOUT : negative_errno();
        }
        safe_close(p[0]);
        return r;
}
