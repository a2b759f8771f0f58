/* spawn: a worker owns its client and nothing else, with a clean
 * environment and signal state, and reports through its shared report. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/wait.h>

#include "children.h"
#include "spawn.h"
#include "tcp-pair.h"
#include "util.h"

/* Counts pid's descriptors, minus a wrapper's: valgrind parks its own just
 * below the hard limit, where a program's never land. */
static int count_fds(pid_t pid, int *highest) {
        struct rlimit rl;
        char path[64];
        struct dirent *e;
        int n = 0;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        d = opendir(path);
        ASSERT(d);
        ASSERT(getrlimit(RLIMIT_NOFILE, &rl) == 0);
        *highest = -1;
        while ((e = readdir(d)))
                if (e->d_name[0] != '.' && (rlim_t) atoi(e->d_name) < rl.rlim_max - 16) {
                        int fd = atoi(e->d_name);
                        n++;
                        if (fd > *highest)
                                *highest = fd;
                }
        closedir(d);
        return n;
}

static void status_line(pid_t pid, const char *key, char *out, size_t size) {
        char path[64], line[256];
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "r");
        ASSERT(f);
        out[0] = 0;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, key, strlen(key)) == 0)
                        snprintf(out, size, "%s", line + strlen(key));
        fclose(f);
}

static void test_clean_worker(void) {
        struct worker_limits lim = { .buffer_size = 1024, .idle_timeout_usec = 10000 * USEC_PER_MSEC,
                                     .write_timeout_usec = 10000 * USEC_PER_MSEC, .max_session_time_usec = 30000 * USEC_PER_MSEC };
        struct children kids;
        struct child *ch;
        struct slot_report *report;
        sigset_t blocked, orig;
        char buf[16], line[256];
        int client, server, highest, status;
        int extra_epoll = epoll_create1(0), extra_pipe[2];
        pid_t pid;

        ASSERT(pipe(extra_pipe) == 0);
        setenv("NOTIFY_SOCKET", "/run/nowhere", 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("WATCHDOG_USEC", "1000", 1);
        sigemptyset(&blocked);
        sigaddset(&blocked, SIGCHLD);
        sigaddset(&blocked, SIGTERM);
        ASSERT(sigprocmask(SIG_BLOCK, &blocked, &orig) == 0);

        /* Inherited the way a careless parent would pass it on. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        spawn_reset_signals();
        ASSERT_INT(children_init(&kids, 4), ==, 0);
        tcp_pair(&client, &server);
        ch = children_claim(&kids);
        ch->start_usec = now_usec(CLOCK_MONOTONIC);
        report = children_report(&kids, ch);
        pid = spawn_worker(server, report, ch->start_usec, &lim, &orig, NULL);
        ASSERT(pid > 0);
        close(server);
        children_commit(&kids, ch, pid);

        /* An echo proves the worker is up and past its set-up. */
        ASSERT(write(client, "ping", 4) == 4);
        ASSERT(read(client, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) == 0);

        ASSERT_INT(count_fds(pid, &highest), <=, 4);
        ASSERT_INT(highest, ==, 3);
        status_line(pid, "SigBlk:", line, sizeof(line));
        ASSERT(strtoull(line, NULL, 16) == 0);              /* the original, empty mask */
        /* The dispositions: checked from inside (test_prepare_from_inside());
         * /proc's SigCgt shows valgrind's handlers, not the program's. */

        ASSERT(shutdown(client, SHUT_WR) == 0);
        ASSERT(read(client, buf, sizeof(buf)) == 0);
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT_INT(report->stats.reason, ==, CLOSE_CLIENT);
        ASSERT(report->stats.bytes_in == 4 && report->stats.bytes_out == 4);
        ASSERT_INT(report->local.sa.sa_family, ==, AF_INET);
        children_release(&kids, ch);
        children_done(&kids);
        sigprocmask(SIG_SETMASK, &orig, NULL);
        close(client);
        close(extra_epoll);
        close(extra_pipe[0]);
        close(extra_pipe[1]);
}

/* The set-up itself, observed from inside the child (a process's
 * /proc/PID/environ shows its environment as of exec, not after unsetenv).
 * The child reports each check as one bit of its exit status. */
static void test_prepare_from_inside(void) {
        int client, server, status, p[2];
        sigset_t empty;
        pid_t pid;

        tcp_pair(&client, &server);
        ASSERT(pipe(p) == 0);
        /* Above 3, so only close_range() can be what closes them. */
        for (int i = 0; i < 2; i++) {
                int high = fcntl(p[i], F_DUPFD, 10);
                close(p[i]);
                p[i] = high;
        }
        setenv("NOTIFY_SOCKET", "/run/nowhere", 1);
        setenv("LISTEN_PID", "1", 1);
        setenv("LISTEN_FDNAMES", "x", 1);
        setenv("WATCHDOG_PID", "1", 1);
        setenv("KEEP_ME", "1", 1);
        sigemptyset(&empty);
        /* Inherited the way a careless parent would pass them on. */
        signal(SIGQUIT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGUSR2, SIG_IGN);
        spawn_reset_signals();
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                sigset_t now;
                int bad = 0;

                if (spawn_prepare_worker(server, &empty) != 3)
                        _exit(0x7f);
                bad |= getenv("NOTIFY_SOCKET") || getenv("LISTEN_PID") || getenv("LISTEN_FDNAMES") ? 1 : 0;
                bad |= getenv("WATCHDOG_PID") ? 2 : 0;
                bad |= getenv("KEEP_ME") ? 0 : 4;
                bad |= fcntl(p[0], F_GETFD) >= 0 || fcntl(p[1], F_GETFD) >= 0 ? 8 : 0;
                bad |= fcntl(3, F_GETFD) < 0 ? 16 : 0;
                sigprocmask(SIG_SETMASK, NULL, &now);
                bad |= sigismember(&now, SIGCHLD) ? 32 : 0;
                /* The daemon's signals and SIGPIPE ignored, SIGTERM caught (to
                 * cut the session, interrupting calls), every other signal at
                 * its default, whatever the test inherited. Asked with
                 * sigaction(), which answers for the program also under
                 * valgrind. glibc's reserved real-time signals (32, 33) are
                 * out of any program's reach. */
                for (int sig = 1; sig < NSIG; sig++) {
                        struct sigaction sa;
                        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
                                continue;
                        if (sig == SIGINT || sig == SIGHUP || sig == SIGUSR1 || sig == SIGPIPE)
                                bad |= sa.sa_handler == SIG_IGN ? 0 : 64;
                        else if (sig == SIGTERM)
                                bad |= sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL &&
                                       !(sa.sa_flags & SA_RESTART) ? 0 : 128;
                        else
                                bad |= sa.sa_handler == SIG_DFL ? 0 : 64;
                }
                _exit(bad);
        }
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status));
        ASSERT_INT(WEXITSTATUS(status), ==, 0);
        close(client);
        close(server);
        close(p[0]);
        close(p[1]);
}

/* What the kernel caps socket_buffer at, as the sysctls say. */
static void test_socket_buffer_caps(void) {
        uint32_t rmem = 0, wmem = 0;
        unsigned long want;
        FILE *f;

        ASSERT_INT(spawn_socket_buffer_caps(&rmem, &wmem), ==, 0);
        f = fopen("/proc/sys/net/core/rmem_max", "r");
        ASSERT(f && fscanf(f, "%lu", &want) == 1);
        fclose(f);
        ASSERT(rmem == want);
        f = fopen("/proc/sys/net/core/wmem_max", "r");
        ASSERT(f && fscanf(f, "%lu", &want) == 1);
        fclose(f);
        ASSERT(wmem == want);
}

int main(void) {
        RUN(test_clean_worker);
        RUN(test_prepare_from_inside);
        RUN(test_socket_buffer_caps);
        return 0;
}
