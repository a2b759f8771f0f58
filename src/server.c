/* See server.h.
 *
 * Invariants of the loop:
 * - Nothing runs in signal context: the daemon's signals (daemon_signals())
 *   are blocked from the start of main() and read from a signalfd.
 * - The listeners are polled only while accepting is possible (below the
 *   cap, no resource back-off, no pending fork retry, not draining); the
 *   kernel backlog is the only queue. server_update_listening() derives that state;
 *   nothing else arms or disarms the listeners.
 * - Every worker is reaped by a WNOHANG loop and is in exactly one record:
 *   its own, or a summary when the record budget is spent (budget.h).
 * - The parent closes its copy of a client right after the fork.
 * - Admission control runs before any fork: a refused connection costs an
 *   accept() and a reset, never a process. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "admission.h"
#include "children.h"
#include "log.h"
#include "logaddr.h"
#include "notify.h"
#include "report.h"
#include "server-private.h"
#include "session-log.h"
#include "spawn.h"
#include "util.h"

#define SIGNAL_TAG UINT32_MAX
#define STATUS_INTERVAL_USEC (500 * USEC_PER_MSEC)


/* The counters the operator sees, for report.c. */
static struct report_state server_report_state(const struct server *s) {
        return (struct report_state) {
                .active = s->children.active, .max_clients = s->cfg.max_clients, .served = s->served,
                .refused = s->adm.refused, .sources = admission_sources(&s->adm),
                .source_table_size = s->adm.sources.capacity, .forgotten = admission_forgotten(&s->adm),
                .at_cap = s->at_cap, .fork_failing = s->pending_fd >= 0,
                .accept_paused = s->resume_at != 0, .draining = s->draining,
                .restart_pending = s->restart_pending,
                .uptime_usec = now_usec(CLOCK_MONOTONIC) - s->started_usec,
        };
}

void server_format_status(const struct server *s, char *buf, size_t size) {
        struct report_state st = server_report_state(s);

        report_status(&st, buf, size);
}

static void send_status(struct server *s, uint64_t now) {
        char status[256];

        server_format_status(s, status, sizeof(status));
        notify_status(status);
        s->status_dirty = false;
        s->status_at = now + STATUS_INTERVAL_USEC;
}

void server_update_listening(struct server *s) {
        bool cap = s->children.active >= s->cfg.max_clients;
        bool want;

        if (cap != s->at_cap && !s->draining) {
                s->at_cap = cap;
                s->cap_changes[cap] = sat_add(s->cap_changes[cap], 1);
                server_log_cap(s, now_usec(CLOCK_MONOTONIC));
                s->status_dirty = true;
        }
        want = !cap && !s->draining && s->resume_at == 0 && s->pending_fd < 0;
        if (want == s->listening)
                return;
        for (unsigned i = 0; i < s->ls->n; i++) {
                struct epoll_event ev = { .events = want ? EPOLLIN : 0, .data.u32 = i };
                (void) epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->ls->l[i].fd, &ev);
        }
        s->listening = want;
}

void server_record_reaped(struct server *s, struct child *ch, int status) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        struct session_end e;

        children_ended(&s->children, ch, now, &e);
        if (WIFSIGNALED(status))
                slot_report_killed(&e.report);
        budget_connection(&s->budget, &s->cfg, &e, status, now);
        admission_release(&s->adm, &ch->hold, now);
        if (s->draining) {
                /* Drained only if it ended by itself: not killed,
                 * and not ended by the cut (SIGTERM, ours or not). */
                if (WIFSIGNALED(status) || e.report.stats.reason == CLOSE_SHUTDOWN)
                        s->cut++;
                else
                        s->drained++;
        }
        server_unlist_session(s, ch);
        children_release(&s->children, ch);
        s->status_dirty = true;
}

void server_reap(struct server *s) {
        for (;;) {
                struct child *ch;
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);

                if (pid < 0 && errno == EINTR)
                        continue;
                if (pid <= 0)
                        break;
                ch = children_find(&s->children, pid);
                if (ch)
                        server_record_reaped(s, ch, status);
        }
        server_update_listening(s);
}

static void handle_signals(struct server *s) {
        struct signalfd_siginfo si;

        while (read(s->sfd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD:
                        server_reap(s);
                        break;
                case SIGTERM:
                        /* Under socket activation systemd keeps the
                         * listener: the next daemon can take it at once. */
                        if (!s->draining && s->ls->n > 0 && s->ls->l[0].inherited && listen_started_by_systemd())
                                server_hand_off(s);
                        else
                                server_begin_shutdown(s, (int) si.ssi_signo);
                        break;
                case SIGINT:
                        server_begin_shutdown(s, (int) si.ssi_signo);
                        break;
                case SIGHUP:
                        if (!s->draining)
                                server_reload(s);
                        break;
                case SIGUSR1:
                        /* What is pending since the last reports first, so
                         * the summary is the whole picture. */
                        report_refusals(&s->refusals, &s->adm, now_usec(CLOCK_MONOTONIC));
                        budget_flush(&s->budget, now_usec(CLOCK_MONOTONIC), s->served, false);
                        s->report_at = now_usec(CLOCK_MONOTONIC) + REPORT_INTERVAL_USEC;
                        struct report_state st = server_report_state(s);
                        report_summary(&st);
                        break;
                }
        }
        /* Signals coalesce: always sweep, whatever the signalfd said. */
        if (!s->handed_off)
                server_reap(s);
}

/* Lost notifications are the watchdog's business: a minute of lost
 * WATCHDOG=1 and systemd aborts the daemon. Failed sends add up here; one
 * record a second says how many (and all that are left, at exit). */
static void report_notify_failures(struct server *s, uint64_t now, bool final) {
        unsigned suppressed, kinds;
        char what[80];
        int err;

        s->notify_failed += notify_failures(&err, &kinds);
        s->notify_kinds |= kinds;
        if (err)
                s->notify_error = err;
        if (!s->notify_failed || (!ratelimit_allow(&s->notify_rl, now, &suppressed) && !final))
                return;
        notify_kinds_format(s->notify_kinds, what, sizeof(what));
        log_errno(LOG_WARNING, -s->notify_error, NULL, "%u notification(s) to systemd could not be sent "
                  "(%s); systemd may consider the daemon hung", s->notify_failed, what);
        s->notify_failed = 0;
        s->notify_kinds = 0;
}

static void run_deadlines(struct server *s, uint64_t now) {
        if (s->resume_at && now >= s->resume_at) {
                s->resume_at = 0;
                if (s->pending_fd >= 0) {
                        int fd = s->pending_fd;
                        struct admission_hold hold = s->pending_hold;
                        s->pending_fd = -1;
                        s->pending_hold.counted = false;
                        (void) server_start_worker(s, fd, &s->pending_peer, &hold);
                }
                server_update_listening(s);
        }
        if (s->draining)
                server_drain_deadlines(s, now);
        if (now >= s->report_at) {
                report_refusals(&s->refusals, &s->adm, now);
                s->report_at = now + REPORT_INTERVAL_USEC;
        }
        if (s->unwatched && now >= s->sweep_at)
                server_sweep_adopted(s, now);
        server_write_owed_records(s, now, false);
        if (s->status_dirty && now >= s->status_at)
                send_status(s, now);
        if (s->watchdog_interval && now >= s->watchdog_at) {
                notify_watchdog();
                s->watchdog_at = now + s->watchdog_interval;
        }
        report_notify_failures(s, now, false);
}

static int next_timeout_ms(const struct server *s, uint64_t now) {
        uint64_t next = UINT64_MAX;

        if (s->resume_at)
                next = s->resume_at;
        if (s->draining && !s->cutting && s->drain_deadline < next)
                next = s->drain_deadline;
        if (s->cutting && s->kill_deadline < next)
                next = s->kill_deadline;
        if (s->status_dirty && s->status_at < next)
                next = s->status_at;
        if (s->watchdog_interval && s->watchdog_at < next)
                next = s->watchdog_at;
        if (s->report_at < next)
                next = s->report_at;
        if (s->unwatched && s->sweep_at < next)
                next = s->sweep_at;
        if (server_records_due(s) < next)
                next = server_records_due(s);
        if (next == UINT64_MAX)
                return -1;
        return usec_to_timeout_ms(next > now ? next - now : 0);
}

/* The signals the daemon reads from its signalfd: the one place that
 * names them. */
static void daemon_signals(sigset_t *set) {
        sigemptyset(set);
        sigaddset(set, SIGCHLD);
        sigaddset(set, SIGTERM);
        sigaddset(set, SIGINT);
        sigaddset(set, SIGHUP);
        sigaddset(set, SIGUSR1);
}

int server_block_signals(sigset_t *worker_mask) {
        sigset_t mask;

        daemon_signals(&mask);
        /* Default dispositions, SIGPIPE ignored (log readers may go away).
         * WORKER_ORPHAN_SIGNAL means nothing to the daemon; ignored so that
         * one sent to the whole unit (systemctl kill -s USR2) does not kill
         * it. Each worker installs its own handler (worker_watch_parent()). */
        spawn_reset_signals();
        (void) signal(WORKER_ORPHAN_SIGNAL, SIG_IGN);
        if (sigprocmask(SIG_BLOCK, &mask, worker_mask) < 0)
                return negative_errno();
        return 0;
}

static int setup(struct server *s) {
        sigset_t mask;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = SIGNAL_TAG };
        int r;

        /* Blocked since main() began (server_block_signals()): what came
         * during the start-up is queued and read now. */
        daemon_signals(&mask);
        s->worker_mask = s->opt->worker_mask;
        r = notify_open();
        if (r == -EINVAL)
                log_msg(LOG_WARNING, NULL, "$NOTIFY_SOCKET is neither a path nor an abstract name; "
                        "running without notifications to systemd");
        else if (r < 0)
                log_errno(LOG_WARNING, r, NULL, "cannot connect to $NOTIFY_SOCKET; running on, "
                          "each state notification (READY=1, RELOADING=1, STOPPING=1) tries again");

        s->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->sfd < 0 || s->epfd < 0)
                return log_errno(LOG_ERR, negative_errno(), NULL, "cannot set up the event loop");
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sfd, &ev) < 0)
                return log_errno(LOG_ERR, negative_errno(), NULL, "cannot watch signals");
        for (unsigned i = 0; i < s->ls->n; i++) {
                struct epoll_event lev = { .events = EPOLLIN, .data.u32 = i };
                if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->ls->l[i].fd, &lev) < 0)
                        return log_errno(LOG_ERR, negative_errno(), NULL, "cannot watch %s",
                                         s->ls->l[i].address);
        }
        s->listening = true;
        r = children_init(&s->children, CONFIG_MAX_CLIENTS_LIMIT);
        if (r < 0)
                return log_errno(LOG_ERR, r, NULL, "cannot set up child accounting");
        r = admission_init(&s->adm, &s->cfg);
        if (r < 0)
                return log_errno(LOG_ERR, r, NULL, "cannot set up admission control");
        r = logaddr_configure(&s->cfg);
        if (r < 0)
                return log_errno(LOG_ERR, r, NULL, "cannot set up address hashing");
        server_check_socket_buffer(&s->cfg);
        server_list_open(s);
        server_policy_open(s);
        if (s->ls->handoff_fd >= 0)
                server_adopt(s);
        else
                server_adopt_leftovers(s);
        server_list_store(s);
        s->started_usec = now_usec(CLOCK_MONOTONIC);
        budget_init(&s->budget, &s->cfg, s->started_usec);
        s->report_at = s->started_usec + REPORT_INTERVAL_USEC;
        return 0;
}

int server_run(const struct config *cfg, const struct server_options *opt, struct listen_set *ls) {
        struct server s = {
                .cfg = *cfg, .opt = opt, .ls = ls, .epfd = -1, .sfd = -1, .pending_fd = -1, .listed.fd = -1,
                .policy.fd = -1,
                .on_defaults = opt->no_config_file,
                .trouble_rl = { .interval_usec = USEC_PER_SEC, .burst = 1 },
                .cap_rl = { .interval_usec = USEC_PER_SEC, .burst = 1 },
                .recover_rl = { .interval_usec = USEC_PER_SEC, .burst = 1 },
                .notify_rl = { .interval_usec = USEC_PER_SEC, .burst = 1 },
        };
        char status[256];
        int r;

        r = setup(&s);
        if (r < 0)
                goto out;

        log_msg(LOG_INFO, MSGID_STARTUP, "started: %u socket(s), max_clients %u, buffer %" PRIu32
                " bytes, idle %" PRIu32 " ms, write %" PRIu32 " ms, session %" PRIu32 " ms / %" PRIu64
                " bytes, drain %" PRIu32 " ms", ls->n, cfg->max_clients, cfg->buffer_size,
                cfg->idle_timeout_ms, cfg->write_timeout_ms, cfg->max_session_time_ms,
                cfg->max_session_bytes, cfg->drain_timeout_ms);
        s.watchdog_interval = notify_watchdog_interval();
        s.watchdog_at = now_usec(CLOCK_MONOTONIC);
        server_format_status(&s, status, sizeof(status));
        notify_ready(status);

        while (!s.handed_off && (!s.draining || s.children.active > 0)) {
                struct epoll_event ev[16];
                int n = epoll_wait(s.epfd, ev, ELEMENTSOF(ev), next_timeout_ms(&s, now_usec(CLOCK_MONOTONIC)));

                if (n < 0 && errno != EINTR) {
                        r = log_errno(LOG_ERR, negative_errno(), NULL, "epoll_wait() failed; exiting");
                        break;
                }
                for (int i = 0; i < n; i++) {
                        if (ev[i].data.u32 == SIGNAL_TAG)
                                handle_signals(&s);
                        else if (ev[i].data.u32 & SERVER_ADOPTED_TAG)
                                server_adopted_ended(&s, ev[i].data.u32 & ~SERVER_ADOPTED_TAG);
                        else if (ev[i].data.u32 < s.ls->n)
                                server_accept_ready(&s, &s.ls->l[ev[i].data.u32]);
                }
                run_deadlines(&s, now_usec(CLOCK_MONOTONIC));
        }

        /* Nothing counted is lost. */
        report_refusals(&s.refusals, &s.adm, now_usec(CLOCK_MONOTONIC));
        server_write_owed_records(&s, now_usec(CLOCK_MONOTONIC), true);
        report_notify_failures(&s, now_usec(CLOCK_MONOTONIC), true);
        /* The last STATUS= is what systemctl status shows of the stopped unit. */
        if (s.handed_off) {
                log_msg(LOG_NOTICE, MSGID_STOPPED, "stopped: %u session(s) handed over; %" PRIu64
                        " served in total", s.handed_over, s.served);
                snprintf(status, sizeof(status), "Stopped; %u session(s) handed over, each ending on its own",
                         s.handed_over);
                notify_status(status);
        } else if (s.draining) {
                log_msg(LOG_NOTICE, MSGID_STOPPED, "stopped: %u session(s) drained, %u cut; %" PRIu64
                        " served in total", s.drained, s.cut, s.served);
                snprintf(status, sizeof(status), "Stopped; %u session(s) drained, %u cut", s.drained, s.cut);
                notify_status(status);
        }
out:
        listen_close_all(ls);
        safe_close(s.pending_fd);
        safe_close(s.sfd);
        safe_close(s.epfd);
        notify_close();
        handoff_table_close(&s.listed);
        handoff_policy_close(&s.policy);
        children_done(&s.children);
        admission_done(&s.adm);
        return r;
}
