/* See listen.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "handoff.h"
#include "listen.h"
#include "util.h"

void listen_set_init(struct listen_set *ls) {
        *ls = (struct listen_set) { .connected_fd = -1, .handoff_fd = -1, .policy_fd = -1 };
}

void listen_close_all(struct listen_set *ls) {
        for (unsigned i = 0; i < ls->n; i++)
                ls->l[i].fd = safe_close(ls->l[i].fd);
        ls->n = 0;
        ls->connected_fd = safe_close(ls->connected_fd);
        ls->handoff_fd = safe_close(ls->handoff_fd);
        ls->policy_fd = safe_close(ls->policy_fd);
}

/* The worker sets SO_OOBINLINE on its client before the first read (see
 * spawn.c). It is set on the listener too, so that sockets the kernel
 * completes from now on have it from their first byte: without it, a
 * second urgent pointer arriving before that read makes the kernel drop the
 * first urgent byte from the stream. */
static int urgent_inline(int fd) {
        if (setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &(int) { 1 }, sizeof(int)) < 0)
                return negative_errno();
        return 0;
}

static int record(struct listener *l, int fd) {
        union sockaddr_any a;
        socklen_t len = sizeof(a);
        int flags, r;

        if (getsockname(fd, &a.sa, &len) < 0)
                return negative_errno();
        r = urgent_inline(fd);
        if (r < 0)
                return r;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return negative_errno();
        l->fd = fd;
        addr_host_port(&a, (char[ADDR_HOST_MAX]) { 0 }, &l->port);
        addr_to_string(&a, l->address);
        return 0;
}

/* What this daemon serves on: a listening TCP socket. */
static bool is_tcp_listener(int fd) {
        return sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
}

static const char *describe_socket(int fd, char *buf, size_t size) {
        int type = 0, domain = 0, listening = 0;
        socklen_t len = sizeof(int);

        if (sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0)
                return "not a socket";
        (void) getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
        len = sizeof(int);
        (void) getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
        len = sizeof(int);
        (void) getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
        snprintf(buf, size, "a %s %s socket (%s)",
                 listening ? "listening" : "non-listening",
                 type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "datagram" :
                 type == SOCK_SEQPACKET ? "seqpacket" : "other",
                 domain == AF_UNIX ? "AF_UNIX" : domain == AF_INET ? "AF_INET" :
                 domain == AF_INET6 ? "AF_INET6" : "other family");
        return buf;
}

int listen_inherit(struct listen_set *ls, char *err, size_t errlen) {
        char **names = NULL;
        int n, r = 0;

        n = sd_listen_fds_with_names(1, &names);
        if (n < 0) {
                snprintf(err, errlen, "cannot use the sockets passed by systemd (LISTEN_FDS): %s", strerror(-n));
                return n;
        }
        if (n > LISTEN_MAX) {
                snprintf(err, errlen, "systemd passed %d sockets; at most %d are supported", n, LISTEN_MAX);
                r = -E2BIG;
        }
        for (int i = 0; i < n && r == 0; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";
                char kind[96];

                if (strcmp(name, HANDOFF_FDNAME) == 0 && sd_is_socket(fd, AF_UNSPEC, 0, -1) == 0) {
                        if (ls->handoff_fd < 0)
                                ls->handoff_fd = fd;
                        else
                                safe_close(fd); /* one list only: the first */
                } else if (strcmp(name, HANDOFF_POLICY_FDNAME) == 0 && sd_is_socket(fd, AF_UNSPEC, 0, -1) == 0) {
                        if (ls->policy_fd < 0)
                                ls->policy_fd = fd;
                        else
                                safe_close(fd);
                } else if (is_tcp_listener(fd)) {
                        struct listener *l = &ls->l[ls->n];
                        snprintf(l->name, sizeof(l->name), "%s", name);
                        l->inherited = true;
                        r = record(l, fd);
                        if (r < 0)
                                snprintf(err, errlen, "fd %d (%s): %s", fd, name, strerror(-r));
                        else
                                ls->n++;
                } else if (n == 1 && sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 0, 0) > 0) {
                        ls->connected_fd = fd;
                        (void) urgent_inline(fd); /* early as can be for Accept=yes */
                } else {
                        snprintf(err, errlen, "fd %d (%s) is %s; echo-mpserv needs listening TCP sockets "
                                 "(ListenStream= with an IP address or port, Accept=no)",
                                 fd, name, describe_socket(fd, kind, sizeof(kind)));
                        r = -EINVAL;
                }
        }
        if (names)
                for (int i = 0; i < n; i++)
                        free(names[i]);
        free(names);
        if (r < 0) {
                /* Nothing half-taken: every passed fd is ours to close. */
                for (int i = 0; i < n; i++)
                        safe_close(SD_LISTEN_FDS_START + i);
                listen_set_init(ls);
                return r;
        }
        return (int) ls->n + (ls->connected_fd >= 0);
}

bool listen_started_by_systemd(void) {
        const char *pid = getenv("SYSTEMD_EXEC_PID");
        char own[24];

        if (!getenv("INVOCATION_ID") || !pid)
                return false;
        snprintf(own, sizeof(own), "%ld", (long) getpid());
        return strcmp(pid, own) == 0;
}

bool listen_passed_listener(void) {
        int n = sd_listen_fds(0);

        for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++)
                if (is_tcp_listener(fd))
                        return true;
        return false;
}

bool listen_client_waiting(void) {
        struct pollfd p[LISTEN_MAX];
        int n = sd_listen_fds(0), k = 0;

        for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n && k < LISTEN_MAX; fd++)
                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) > 0)
                        p[k++] = (struct pollfd) { .fd = fd, .events = POLLIN };
        return k > 0 && poll(p, (nfds_t) k, 0) > 0;
}

static int bind_one(struct listener *l, const char *address, uint16_t port, bool v6only,
                    int backlog, char *err, size_t errlen) {
        _cleanup_(closep) int fd = -1;
        union sockaddr_any a = { 0 };
        socklen_t len;
        int one = 1, family, r;

        if (inet_pton(AF_INET, address, &a.in.sin_addr) == 1) {
                family = AF_INET;
                a.in.sin_port = htons(port);
                len = sizeof(a.in);
        } else if (inet_pton(AF_INET6, address, &a.in6.sin6_addr) == 1) {
                family = AF_INET6;
                a.in6.sin6_port = htons(port);
                len = sizeof(a.in6);
        } else {
                snprintf(err, errlen, "cannot listen on %s: not a numeric address", address);
                return -EINVAL;
        }
        a.sa.sa_family = (sa_family_t) family;
        addr_to_string(&a, l->address);

        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                goto fail;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                goto fail;
        if (family == AF_INET6 &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &(int) { v6only }, sizeof(int)) < 0)
                goto fail;
        if (bind(fd, &a.sa, len) < 0 || listen(fd, backlog) < 0)
                goto fail;
        snprintf(l->name, sizeof(l->name), "config");
        r = record(l, fd);
        if (r < 0) {
                errno = -r;
                goto fail;
        }
        fd = -1;
        return 0;
fail:
        r = negative_errno();
        snprintf(err, errlen, "cannot listen on %s: %s", l->address, strerror(-r));
        return r;
}

int listen_bind(struct listen_set *ls, const struct config *c, uint16_t port, char *err, size_t errlen) {
        for (uint32_t i = 0; i < c->n_listen; i++) {
                const char *address = c->listen[i];
                bool dual = config_listen_dual_stack(c, i);
                int r = bind_one(&ls->l[ls->n], address, port, !dual, (int) c->backlog, err, errlen);

                if (r == -EAFNOSUPPORT && dual)
                        r = bind_one(&ls->l[ls->n], "0.0.0.0", port, false, (int) c->backlog, err, errlen);
                if (r < 0) {
                        listen_close_all(ls);
                        return r;
                }
                ls->n++;
        }
        return 0;
}
