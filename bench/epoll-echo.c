/* epoll-echo: a non-forking, single-threaded epoll echo server, written for
 * the benchmark as the upper bound a fork-per-client server is compared
 * with. Not a product: no limits, no logging.
 *
 * Usage: epoll-echo PORT [ADDRESS]   (ADDRESS numeric, default 127.0.0.1)
 *
 * Level-triggered. Each connection reads into one shared buffer and writes
 * straight back; only what the socket would not take is kept, in a
 * per-connection buffer, and the connection stops reading until that is
 * flushed (so memory per client stays bounded and ordering trivial). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64  /* accepts per listener event, then serve the clients */

struct client {
        int fd;
        char *pending;  /* unsent echo, NULL when none */
        size_t off, len;
};

struct server {
        int lfd, epfd;
        char buf[BUF_SIZE]; /* what one recv() brings, echoed at once */
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
        (void) sig;
        stop = 1;
}

static void drop(struct client *c) {
        close(c->fd);
        free(c->pending);
        free(c);
}

static void set_events(struct server *s, struct client *c, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        (void) epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes data; keeps what did not fit. Returns -1 when the client is gone. */
static int write_out(struct server *s, struct client *c, const char *data, size_t len) {
        while (len > 0) {
                ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
                if (n > 0) {
                        data += n;
                        len -= (size_t) n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        if (!c->pending) {
                                c->pending = malloc(BUF_SIZE);
                                if (!c->pending)
                                        return -1;
                        }
                        memmove(c->pending, data, len);
                        c->off = 0;
                        c->len = len;
                        set_events(s, c, EPOLLOUT);
                        return 0;
                }
                return -1;
        }
        return 0;
}

/* The client is writable again: sends what is pending, reads again once
 * it is all gone. */
static void flush_pending(struct server *s, struct client *c) {
        ssize_t n = send(c->fd, c->pending + c->off, c->len, MSG_NOSIGNAL);

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                drop(c);
                return;
        }
        c->off += (size_t) n;
        c->len -= (size_t) n;
        if (c->len == 0)
                set_events(s, c, EPOLLIN);
}

/* Reads and echoes up to 1 MiB, then lets the others run. */
static void echo_some(struct server *s, struct client *c) {
        for (int i = 0; i < 16; i++) {
                ssize_t n = recv(c->fd, s->buf, sizeof(s->buf), 0);
                if (n > 0) {
                        if (write_out(s, c, s->buf, (size_t) n) < 0) {
                                drop(c);
                                return;
                        }
                        if (c->len > 0)
                                return;
                        if ((size_t) n < sizeof(s->buf))
                                return;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                /* EOF (everything read was echoed) or error */
                if (n == 0)
                        (void) shutdown(c->fd, SHUT_WR);
                drop(c);
                return;
        }
}

static void on_client(struct server *s, struct client *c) {
        if (c->len > 0)
                flush_pending(s, c);
        else
                echo_some(s, c);
}

static void accept_clients(struct server *s) {
        for (int k = 0; k < ACCEPT_BATCH; k++) {
                int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                struct epoll_event ev;
                struct client *c;

                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE)
                                fprintf(stderr, "epoll-echo: accept: %s\n", strerror(errno));
                        return;
                }
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
                c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->fd = fd;
                ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = c };
                if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        drop(c);
        }
}

/* The listener on sin and the epoll set watching it. Returns 0, or -1
 * (reported). */
static int open_server(struct server *s, const struct sockaddr_in *sin) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &(int) { 1 }, sizeof(int)) < 0 ||
            bind(s->lfd, (const struct sockaddr *) sin, sizeof(*sin)) < 0 || listen(s->lfd, 4096) < 0) {
                perror("epoll-echo: listen");
                return -1;
        }
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev) < 0) {
                perror("epoll-echo: epoll");
                return -1;
        }
        return 0;
}

/* Serves until SIGTERM or SIGINT. Returns the exit status. */
static int serve(struct server *s) {
        struct epoll_event evs[MAX_EVENTS];

        while (!stop) {
                int n = epoll_wait(s->epfd, evs, MAX_EVENTS, -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        perror("epoll-echo: epoll_wait");
                        return 1;
                }
                for (int i = 0; i < n; i++) {
                        if (evs[i].data.ptr)
                                on_client(s, evs[i].data.ptr);
                        else
                                accept_clients(s);
                }
        }
        return 0;
}

int main(int argc, char **argv) {
        static struct server s;
        struct sockaddr_in sin = { .sin_family = AF_INET };
        struct rlimit rl;
        const char *addr = argc > 2 ? argv[2] : "127.0.0.1";
        int port;

        if (argc < 2 || argc > 3 || (port = atoi(argv[1])) < 1 || port > 65535) {
                fprintf(stderr, "Usage: %s PORT [NUMERIC-IPV4-ADDRESS]\n", argv[0]);
                return 2;
        }
        if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
                fprintf(stderr, "epoll-echo: '%s' is not a numeric IPv4 address\n", addr);
                return 2;
        }
        sin.sin_port = htons((uint16_t) port);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        signal(SIGPIPE, SIG_IGN);
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        if (open_server(&s, &sin) < 0)
                return 1;
        return serve(&s);
}
