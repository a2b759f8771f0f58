/* The restart without a stall (see server-private.h): handing the live
 * sessions over at SIGTERM under systemd, and adopting those of the
 * previous daemon at the start.
 *
 * Invariants:
 * - Every session is in exactly one record: the daemon's (it reaped the
 *   worker) or the worker's own (the daemon had left), decided once per
 *   worker by slot_report_worker_done()/slot_report_parent_leaves().
 * - An adopted session counts under max_clients and its source's limits
 *   from the moment this daemon is ready until its pidfd says it ended;
 *   it is never reaped here (it is not our child) and has no record here. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"
#include "log.h"
#include "notify.h"
#include "server-private.h"
#include "session-log.h"
#include "util.h"

/* A worker that claimed its record before the daemon could leave it to the
 * worker (slot_report_parent_leaves()) is past its session and about to
 * _exit(): waited for, at most this long, since the claim is in memory a
 * worker can write. */
#define HAND_OFF_REAP_WAIT_MS 1000

struct leaving {
        struct server *s;
        pid_t *ended;                   /* workers the daemon still records */
        unsigned n;
        struct handoff_entry *next;     /* what the next daemon adopts */
        size_t n_next;
};

static void leave_one(struct child *ch, void *userdata) {
        struct leaving *l = userdata;
        struct handoff_entry *e = &l->next[l->n_next];

        if (!ch->adopted && slot_report_parent_leaves(children_report(&l->s->children, ch))) {
                l->ended[l->n++] = ch->pid;
                return;
        }
        l->s->handed_over++;
        *e = (struct handoff_entry) { .pid = ch->pid, .peer = ch->peer };
        if (handoff_start_time(ch->pid, &e->start_time) == 0)
                l->n_next++; /* gone already otherwise: nothing to count */
}

/* Only these pids: any other worker records itself from now on. */
static void reap_ended(struct server *s, pid_t pid) {
        struct child *ch = children_find(&s->children, pid);
        int status, fd = (int) pidfd_open(pid, 0);

        if (fd >= 0) {
                (void) poll(&(struct pollfd) { .fd = fd, .events = POLLIN }, 1, HAND_OFF_REAP_WAIT_MS);
                safe_close(fd);
        }
        if (ch && waitpid(pid, &status, WNOHANG) == pid)
                server_record_reaped(s, ch, status);
}

/* The list for the next daemon, in systemd's file descriptor store. */
static void store_sessions(const struct leaving *l) {
        int fd = handoff_write(l->next, l->n_next), r = fd;

        if (fd >= 0) {
                r = notify_store_fd(fd, HANDOFF_FDNAME);
                safe_close(fd);
        }
        if (r < 0)
                log_errno(LOG_WARNING, r, MSGID_SHUTDOWN, "cannot store the %zu session(s) handed over in "
                          "systemd's file descriptor store; the next daemon will not count them against "
                          "max_clients and the per-source limits", l->n_next);
}

void server_hand_off(struct server *s) {
        unsigned active = s->children.active;
        struct leaving l = { .s = s, .ended = calloc(active + 1, sizeof(pid_t)),
                             .next = calloc(active + 1, sizeof(struct handoff_entry)) };
        char status[256];

        s->handed_off = true;
        server_stop_accepting(s, now_usec(CLOCK_MONOTONIC));
        server_reap(s);
        if (l.ended && l.next) {
                children_foreach(&s->children, leave_one, &l);
                for (unsigned i = 0; i < l.n; i++)
                        reap_ended(s, l.ended[i]);
        } else /* the workers still running record themselves; one that ended just now goes unrecorded */
                s->handed_over = s->children.active;
        log_msg(LOG_NOTICE, MSGID_SHUTDOWN, "SIGTERM: stopped accepting; handing %u session(s) over, each "
                "ends on its own within drain_timeout (%" PRIu32 " ms) and writes its own record",
                s->handed_over, s->cfg.drain_timeout_ms);
        if (l.next)
                store_sessions(&l);
        free(l.ended);
        free(l.next);
        server_format_status(s, status, sizeof(status));
        notify_stopping(status, 5 * USEC_PER_SEC);
}

void server_record_own_end(const struct slot_report *report, const union sockaddr_any *peer, uint64_t start) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        struct session_end e = { .child = { .pid = getpid(), .start_usec = start, .peer = *peer },
                                 .report = *report };

        slot_report_check(&e.report, now);
        /* The journal's stream, not its native socket: that descriptor is
         * closed in the worker, and journald attributes a native record to
         * the unit only while the sender lives (see log.h). Outside the
         * record budget, which is the daemon's: at most max_clients such
         * records per hand-off. */
        log_set_target(LOG_TARGET_STDERR);
        session_log_record(&e, 0, now);
}

/* One session of the previous daemon, if it is still that process. */
static int adopt_one(struct server *s, const struct handoff_entry *e, uint64_t now) {
        _cleanup_(closep) int fd = -1;
        struct child *ch;
        int r;

        if (children_find(&s->children, e->pid))
                return -EEXIST; /* listed twice */
        fd = (int) pidfd_open(e->pid, 0);
        if (fd < 0)
                return errno == ESRCH ? -ESRCH : negative_errno();
        r = handoff_same_process(fd, e);
        if (r < 0)
                return r;
        ch = children_claim(&s->children);
        if (!ch)
                return -ENOSPC;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = SERVER_ADOPTED_TAG | (uint32_t) (ch - s->children.child) };
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                r = negative_errno();
                children_release(&s->children, ch);
                return r;
        }
        ch->adopted = true;
        ch->peer = e->peer;
        ch->start_usec = now;
        admission_hold_session(&s->adm, &e->peer, now, &ch->hold);
        ch->pidfd = fd;
        fd = -1;
        children_commit(&s->children, ch, e->pid);
        return 0;
}

void server_adopt(struct server *s) {
        struct handoff_entry *e;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned adopted = 0, gone = 0, refused = 0;
        int first_error = 0;
        size_t n;
        int r = handoff_read(s->ls->handoff_fd, CONFIG_MAX_CLIENTS_LIMIT, &e, &n);

        s->ls->handoff_fd = safe_close(s->ls->handoff_fd);
        /* Read: the store keeps nothing stale for a later start. */
        notify_store_remove(HANDOFF_FDNAME);
        if (r < 0) {
                log_errno(LOG_WARNING, r, MSGID_STARTUP, "the sessions handed over by the previous daemon "
                          "cannot be read; none is counted");
                return;
        }
        refused = (unsigned) r;
        for (size_t i = 0; i < n; i++) {
                r = adopt_one(s, &e[i], now);
                if (r == 0)
                        adopted++;
                else if (r == -ESRCH)
                        gone++;
                else
                        refused++;
                if (r < 0 && !first_error)
                        first_error = r;
        }
        free(e);
        s->adopted = adopted;
        log_msg(refused ? LOG_WARNING : LOG_INFO, MSGID_STARTUP, "adopted %u session(s) of the previous daemon "
                "(counted under max_clients and the per-source limits until they end); %u had ended (their pid "
                "gone or another process's), %u entries ignored as malformed or not ours%s%s", adopted, gone,
                refused, first_error ? "; the first not adopted: " : "", first_error ? strerror(-first_error) : "");
}

void server_adopted_ended(struct server *s, uint32_t slot) {
        struct child *ch;

        if (slot >= s->children.capacity)
                return;
        ch = &s->children.child[slot];
        if (!ch->adopted || ch->pid == 0)
                return;
        (void) epoll_ctl(s->epfd, EPOLL_CTL_DEL, ch->pidfd, NULL);
        ch->pidfd = safe_close(ch->pidfd);
        admission_release(&s->adm, &ch->hold, now_usec(CLOCK_MONOTONIC));
        if (s->draining)
                s->drained++; /* its end is its worker's to record */
        ch->adopted = false;
        children_release(&s->children, ch);
        s->status_dirty = true;
        server_update_listening(s);
}
