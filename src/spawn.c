/* See spawn.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "spawn.h"
#include "util.h"

#define WORKER_FD 3

/* Variables the worker must not inherit: a worker that talked to systemd or
 * took the listeners would confuse both. */
static const char *const inherited_env[] = {
        "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC",
        "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
};

void spawn_reset_signals(void) {
        for (int sig = 1; sig < NSIG; sig++) {
                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                /* glibc keeps two real-time signals for itself and refuses
                 * them (EINVAL); nothing here uses them. */
                (void) signal(sig, SIG_DFL);
        }
        /* A peer's reset is a normal end, reported as EPIPE, never a death. */
        (void) signal(SIGPIPE, SIG_IGN);
}

static int read_sysctl(const char *path, uint32_t *out) {
        _cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC);
        char buf[32];
        ssize_t n;

        if (fd < 0)
                return negative_errno();
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return negative_errno();
        buf[n] = 0;
        return sscanf(buf, "%" SCNu32, out) == 1 ? 0 : -EINVAL;
}

int spawn_socket_buffer_caps(uint32_t *rmem_max, uint32_t *wmem_max) {
        int r = read_sysctl("/proc/sys/net/core/rmem_max", rmem_max);

        return r < 0 ? r : read_sysctl("/proc/sys/net/core/wmem_max", wmem_max);
}

enum close_reason spawn_serve_here(int fd, struct slot_report *report, uint64_t start_usec,
                                   const struct worker_limits *limits) {
        socklen_t len = sizeof(report->local);
        void *buf;
        enum close_reason r;

        (void) getsockname(fd, &report->local.sa, &len);
        /* Urgent data (MSG_OOB) stays in the stream, so it is echoed like
         * every other byte (RFC 862; RFC 6093 advises it). The kernel looks
         * at the flag when the byte is read, so setting it before the first
         * read is enough, also for a connection the kernel completed before
         * the listener had the flag (see listen.c). */
        (void) setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &(int) { 1 }, sizeof(int));
        /* Abortive linger until the orderly close clears it (worker_close()):
         * if this worker is killed by a signal, the kernel resets the
         * connection instead of keeping the unacknowledged echo in an orphan
         * socket that neither max_clients nor write_timeout bounds. Set here
         * rather than on the listener (whose accepted sockets would inherit
         * it), as a connection may come without one (inetd mode) or before
         * the listener had it. */
        set_abortive_linger(fd);
        /* Echo replies are small and immediate: Nagle would hold them back
         * for a delayed ACK (tens of milliseconds per round trip). */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        /* What a client that stops reading can make the kernel hold for this
         * session until write_timeout ends it (the kernel doubles the value
         * for its bookkeeping). Setting it turns autotuning off. */
        if (limits->socket_buffer) {
                int size = (int) limits->socket_buffer;
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        }

        /* A mapping of its own rather than malloc(): malloc writes its
         * bookkeeping into heap pages shared with the parent (a copy-on-write
         * fault each), while these pages cost nothing until data arrives, so
         * an idle session holds no buffer at all. */
        buf = mmap(NULL, limits->buffer_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) {
                report->stats.reason = CLOSE_ERROR;
                report->stats.error = ENOMEM;
                worker_close(fd, limits, start_usec, NULL, &report->stats);
                return CLOSE_ERROR;
        }
        r = worker_echo(fd, limits, start_usec, buf, &report->stats);
        worker_close(fd, limits, start_usec, buf, &report->stats);
        munmap(buf, limits->buffer_size);
        return r;
}

int spawn_prepare_worker(int fd, const sigset_t *mask) {
        /* Own nothing but the client: listeners, epoll, signalfd and any
         * library descriptor (the journal socket) go, in one call. */
        if (fd != WORKER_FD && dup2(fd, WORKER_FD) < 0)
                return negative_errno();
        if (close_range(WORKER_FD + 1, ~0U, 0) < 0)
                for (int i = WORKER_FD + 1; i < 65536; i++)
                        (void) close(i);

        for (size_t i = 0; i < ELEMENTSOF(inherited_env); i++)
                (void) unsetenv(inherited_env[i]);

        /* Dispositions first, while the parent's blocked signals are still
         * blocked here: no SIGINT meant for the daemon can slip in between. */
        worker_set_signals();
        /* The parent blocks the signals it reads from its signalfd. */
        if (sigprocmask(SIG_SETMASK, mask, NULL) < 0)
                return negative_errno();
        return WORKER_FD;
}

static _noreturn_ void worker_main(int fd, struct slot_report *report, uint64_t start_usec,
                                   const struct worker_limits *limits, const sigset_t *mask,
                                   const struct spawn_orphan *orphan) {
        int r;

        fd = spawn_prepare_worker(fd, mask);
        r = fd < 0 || !orphan ? fd : worker_watch_parent(orphan->parent, orphan->drain_usec);
        if (r < 0) {
                report->stats.reason = CLOSE_ERROR;
                report->stats.error = -r;
                _exit(EXIT_FAILURE);
        }
        spawn_serve_here(fd, report, start_usec, limits);
        if (orphan && slot_report_worker_done(report, worker_orphaned()))
                orphan->record(report, &orphan->peer, start_usec);
        _exit(EXIT_SUCCESS);
}

pid_t spawn_worker(int client_fd, struct slot_report *report, uint64_t start_usec,
                   const struct worker_limits *limits, const sigset_t *worker_mask,
                   const struct spawn_orphan *orphan) {
        pid_t pid = fork();

        if (pid < 0)
                return negative_errno();
        if (pid == 0)
                worker_main(client_fd, report, start_usec, limits, worker_mask, orphan);
        return pid;
}
