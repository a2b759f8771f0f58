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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"
#include "log.h"
#include "logaddr.h"
#include "notify.h"
#include "server-private.h"
#include "session-log.h"
#include "util.h"

/* Workers that claimed their record before the daemon could leave it to
 * them (slot_report_parent_leaves()) are past their session and about to
 * _exit(): waited for, at most this long IN ALL, since the claim is in
 * memory any worker can write. */
#define HAND_OFF_REAP_WAIT_MS 1000

struct leaving {
        struct server *s;
        pid_t *ended;                   /* workers the daemon still records */
        unsigned n;
        struct handoff_entry *next;     /* what the next daemon adopts */
        size_t n_next;
};

/* Lists a worker for the next daemon. Its start time is 0 (unknown) where
 * /proc does not show it (the daemon and its workers are not dumpable, so
 * ProtectProc= hides them): the next daemon then goes by the user, as for
 * the live list (server_list_session(), handoff_same_process()). */
static void list_next(struct leaving *l, const struct child *ch) {
        struct handoff_entry *e = &l->next[l->n_next];

        *e = (struct handoff_entry) { .pid = ch->pid, .peer = ch->peer };
        /* An adopted session keeps the start time it was listed with: /proc
         * may hide it from this daemon (see handoff_same_process()), which
         * checked it against the pidfd when it adopted it. */
        if (ch->adopted)
                e->start_time = ch->proc_start;
        else if (handoff_start_time(ch->pid, &e->start_time) < 0)
                e->start_time = 0;
        l->n_next++;
}

static void leave_one(struct child *ch, void *userdata) {
        struct leaving *l = userdata;

        if (!ch->adopted && slot_report_parent_leaves(children_report(&l->s->children, ch))) {
                l->ended[l->n++] = ch->pid;
                return;
        }
        l->s->handed_over++;
        list_next(l, ch);
}

/* Reaps and records the workers that claimed their record, waiting for
 * them until one deadline. One still running then has lied (or is slow):
 * it is handed over unrecorded (it claimed its record, so it does not write
 * one) and listed for the next daemon, which counts it until it ends. */
static void reap_ended(struct leaving *l) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + HAND_OFF_REAP_WAIT_MS * USEC_PER_MSEC;

        for (unsigned i = 0; i < l->n; i++) {
                struct child *ch = children_find(&l->s->children, l->ended[i]);
                int status, fd = (int) pidfd_open(l->ended[i], 0);
                uint64_t now = now_usec(CLOCK_MONOTONIC);

                if (fd >= 0) {
                        int ms = now < deadline ? (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC) : 0;
                        (void) poll(&(struct pollfd) { .fd = fd, .events = POLLIN }, 1, ms);
                        safe_close(fd);
                }
                if (!ch)
                        continue;
                if (waitpid(l->ended[i], &status, WNOHANG) == l->ended[i])
                        server_record_reaped(l->s, ch, status);
                else {
                        l->s->handed_over++;
                        list_next(l, ch);
                }
        }
}

/* The list for the next daemon, in systemd's file descriptor store, when
 * there is no live list there (server_list_store() failed). */
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
                reap_ended(&l);
        } else /* the workers still running record themselves; one that ended just now goes unrecorded */
                s->handed_over = s->children.active;
        /* The live list, kept since the start, names every session; without
         * one, the list written now does (unless memory ran out). */
        size_t listed = s->listed.fd >= 0 ? s->handed_over : l.n_next;
        log_msg(listed < s->handed_over ? LOG_WARNING : LOG_NOTICE, MSGID_SHUTDOWN, "SIGTERM: stopped "
                "accepting; handing %u session(s) over, each ends on its own within drain_timeout (%" PRIu32
                " ms) and writes its own record; %zu listed for the next daemon%s", s->handed_over,
                s->cfg.drain_timeout_ms, listed, listed < s->handed_over ? " (the others cannot be "
                "identified and will not count against max_clients there)" : "");
        if (l.next && s->listed.fd < 0)
                store_sessions(&l);
        free(l.ended);
        free(l.next);
        server_format_status(s, status, sizeof(status));
        notify_stopping(status, 5 * USEC_PER_SEC);
}

/* The shared policy's read-only mapping, inherited by the workers. */
static const uint64_t *shared_policy;

void server_policy_open(struct server *s) {
        int r, fd = s->ls->policy_fd;

        s->ls->policy_fd = -1;
        /* Only where a hand-off can happen, as the live list. */
        if (!(s->ls->n > 0 && s->ls->l[0].inherited && listen_started_by_systemd())) {
                safe_close(fd);
                return;
        }
        r = handoff_policy_open(&s->policy, fd);
        if (r == 0 && !s->policy.stored)
                r = notify_store_fd(s->policy.fd, HANDOFF_POLICY_FDNAME);
        if (r < 0) {
                log_errno(LOG_WARNING, r, MSGID_STARTUP, "cannot share the record policy with the next daemon "
                          "(systemd's file descriptor store); a reload after a restart will not reach the "
                          "records of the sessions handed over");
                handoff_policy_close(&s->policy);
        }
        shared_policy = s->policy.ro;
        server_policy_set(s);
}

void server_policy_set(struct server *s) {
        struct record_policy p = { .set = 1, .log_addresses = (uint8_t) s->cfg.log_addresses,
                                   .prefix_v4 = (uint8_t) s->cfg.source_prefix_v4,
                                   .prefix_v6 = (uint8_t) s->cfg.source_prefix_v6, .log_level = s->cfg.log_level };
        uint64_t v;

        children_set_policy(&s->children, &p);
        memcpy(&v, &p, sizeof(v));
        if (s->policy.rw)
                __atomic_store_n(s->policy.rw, v, __ATOMIC_RELEASE);
}

void server_record_own_end(const struct slot_report *report, const union sockaddr_any *peer, uint64_t start) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        struct session_end e = { .child = { .pid = getpid(), .start_usec = start, .peer = *peer },
                                 .report = *report };
        struct record_policy p = slot_report_policy(report);

        /* The policy the daemons share, when there is one: the last reload
         * of whichever daemon runs now reaches this worker too. */
        if (shared_policy) {
                uint64_t v = __atomic_load_n(shared_policy, __ATOMIC_ACQUIRE);
                memcpy(&p, &v, sizeof(p));
        }

        /* The daemon's log_level and log_addresses as of its last reload
         * (struct record_policy), never more verbose nor less private than
         * at the fork: any worker can write any report (children.h). */
        if (p.set) {
                if (p.log_level >= LOG_ERR && p.log_level <= log_get_max_level())
                        log_set_max_level(p.log_level);
                logaddr_tighten(p.log_addresses, p.prefix_v4, p.prefix_v6);
        }

        slot_report_check(&e.report, now);
        /* The journal's stream, not its native socket: that descriptor is
         * closed in the worker, and journald attributes a native record to
         * the unit only while the sender lives (see log.h). Outside the
         * record budget, which is the daemon's: at most max_clients such
         * records per hand-off. */
        log_set_target(LOG_TARGET_STDERR);
        session_log_record(&e, 0, now);
}

/* Whether the process e names still runs, without a pidfd: signal 0, and
 * its start time where /proc shows it. A pid reused by another process of
 * our user that /proc hides keeps the session counted longer; never less. */
static int still_running(const struct handoff_entry *e) {
        uint64_t start;

        if (e->pid == getpid())
                return -ESRCH;
        if (kill(e->pid, 0) < 0)
                return errno == EPERM ? -EPERM : errno == ESRCH ? -ESRCH : negative_errno();
        if (e->start_time && handoff_start_time(e->pid, &start) == 0 && start != e->start_time)
                return -ESRCH;
        return 0;
}

/* Watches an adopted session's pidfd: 0, or -errno (fd left open). */
static int watch(struct server *s, struct child *ch, int fd) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = SERVER_ADOPTED_TAG | (uint32_t) (ch - s->children.child) };

        return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? negative_errno() : 0;
}

/* One session of the previous daemon, if it is still that process. With
 * no pidfd for it (a fd limit below max_clients, or no pidfd_open()), it is
 * counted all the same and looked at by server_sweep_adopted(). Returns 0
 * (watched), 1 (counted, unwatched) or -errno. */
static int adopt_one(struct server *s, const struct handoff_entry *e, uint64_t now) {
        _cleanup_(closep) int fd = -1;
        struct child *ch;
        int r;

        if (children_find(&s->children, e->pid))
                return -EEXIST; /* listed twice */
        /* Without a pidfd (no descriptor left, or no pidfd_open() at all:
         * a kernel before 5.3, valgrind) the session is checked by its pid. */
        fd = (int) pidfd_open(e->pid, 0);
        if (fd < 0 && errno == ESRCH)
                return -ESRCH;
        r = fd >= 0 ? handoff_same_process(fd, e) : still_running(e);
        if (r == -EMFILE || r == -ENFILE) { /* no descriptor left to read /proc with the pidfd open */
                fd = safe_close(fd);
                r = still_running(e);
        }
        if (r < 0)
                return r;
        ch = children_claim(&s->children);
        if (!ch)
                return -ENOSPC;
        if (fd >= 0 && watch(s, ch, fd) < 0)
                fd = safe_close(fd); /* counted, unwatched */
        ch->adopted = true;
        ch->proc_start = e->start_time;
        ch->peer = e->peer;
        ch->start_usec = now;
        admission_hold_session(&s->adm, &e->peer, now, &ch->hold);
        ch->pidfd = fd;
        fd = -1;
        children_commit(&s->children, ch, e->pid);
        server_list_session(s, ch, e->start_time);
        if (ch->pidfd >= 0)
                return 0;
        s->unwatched++;
        return 1;
}

static void sweep_one(struct child *ch, void *userdata) {
        struct server *s = userdata;
        struct handoff_entry e;
        int fd, r;

        if (!ch->adopted || ch->pidfd >= 0)
                return;
        e = (struct handoff_entry) { .pid = ch->pid, .start_time = ch->proc_start };
        if (still_running(&e) < 0) {
                server_adopted_ended(s, (uint32_t) (ch - s->children.child));
                return;
        }
        fd = (int) pidfd_open(ch->pid, 0);
        if (fd < 0)
                return;
        r = handoff_same_process(fd, &e);
        if (r == -ESRCH) { /* ended between the two looks */
                safe_close(fd);
                server_adopted_ended(s, (uint32_t) (ch - s->children.child));
        } else if (r < 0 || watch(s, ch, fd) < 0)
                safe_close(fd); /* still short of descriptors: the next sweep tries again */
        else {
                ch->pidfd = fd;
                s->unwatched--;
        }
}

void server_sweep_adopted(struct server *s, uint64_t now) {
        children_foreach(&s->children, sweep_one, s);
        s->sweep_at = now + ADOPTED_SWEEP_USEC;
}

void server_adopt(struct server *s) {
        struct handoff_entry *e;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned adopted = 0, gone = 0, refused = 0, unwatched;
        int first_error = 0;
        size_t n;
        int r = handoff_read(s->ls->handoff_fd, CONFIG_MAX_CLIENTS_LIMIT, &e, &n);

        s->ls->handoff_fd = safe_close(s->ls->handoff_fd);
        /* Read: removed from the store by server_list_store(), once the
         * adoption is over, just before the new list goes in. */
        s->stale_list = true;
        if (r < 0) {
                log_errno(LOG_WARNING, r, MSGID_STARTUP, "the sessions handed over by the previous daemon "
                          "cannot be read; none is counted");
                return;
        }
        refused = (unsigned) r;
        for (size_t i = 0; i < n; i++) {
                r = adopt_one(s, &e[i], now);
                if (r >= 0)
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
        unwatched = s->unwatched;
        s->sweep_at = now + ADOPTED_SWEEP_USEC;
        log_msg(refused || unwatched ? LOG_WARNING : LOG_INFO, MSGID_STARTUP, "adopted %u session(s) of the previous "
                "daemon (counted under max_clients and the per-source limits until they end); %u had ended (their "
                "pid gone or another process's), %u entries ignored as malformed or not ours%s%s", adopted, gone,
                refused, first_error ? "; the first not adopted: " : "", first_error ? strerror(-first_error) : "");
        if (unwatched)
                log_msg(LOG_WARNING, MSGID_STARTUP, "%u adopted session(s) have no pidfd (the descriptor limit, "
                        "LimitNOFILE, is below what they need): still counted, their end noticed within %u ms",
                        unwatched, (unsigned) (ADOPTED_SWEEP_USEC / USEC_PER_MSEC));
}

void server_adopted_ended(struct server *s, uint32_t slot) {
        struct child *ch;

        if (slot >= s->children.capacity)
                return;
        ch = &s->children.child[slot];
        if (!ch->adopted || ch->pid == 0)
                return;
        if (ch->pidfd >= 0) {
                (void) epoll_ctl(s->epfd, EPOLL_CTL_DEL, ch->pidfd, NULL);
                ch->pidfd = safe_close(ch->pidfd);
        } else
                s->unwatched--;
        admission_release(&s->adm, &ch->hold, now_usec(CLOCK_MONOTONIC));
        if (s->draining)
                s->drained++; /* its end is its worker's to record */
        ch->adopted = false;
        server_unlist_session(s, ch);
        children_release(&s->children, ch);
        s->status_dirty = true;
        server_update_listening(s);
}

void server_list_open(struct server *s) {
        int r;

        /* Only where a hand-off can happen: a service with its listeners. */
        if (!(s->ls->n > 0 && s->ls->l[0].inherited && listen_started_by_systemd()))
                return;
        r = handoff_table_open(&s->listed, s->children.capacity);
        if (r < 0)
                log_errno(LOG_WARNING, r, MSGID_STARTUP, "cannot make the live list of sessions; a daemon "
                          "killed or crashed leaves the next one nothing to count against max_clients");
}

void server_list_store(struct server *s) {
        int r;

        /* The store keeps nothing stale for a later start. */
        if (s->stale_list)
                notify_store_remove(HANDOFF_FDNAME);
        s->stale_list = false;
        if (s->listed.fd < 0)
                return;
        r = notify_store_fd(s->listed.fd, HANDOFF_FDNAME);
        if (r < 0) {
                log_errno(LOG_WARNING, r, MSGID_STARTUP, "cannot store the live list of sessions in systemd's "
                          "file descriptor store; a daemon killed or crashed leaves the next one nothing to "
                          "count against max_clients");
                handoff_table_close(&s->listed);
        }
}

void server_list_session(struct server *s, const struct child *ch, uint64_t start_time) {
        struct handoff_entry e = { .pid = ch->pid, .start_time = start_time, .peer = ch->peer };

        if (s->listed.fd < 0)
                return;
        /* Our own child, visible in /proc; 0 (unknown) if not: the next
         * daemon then goes by the user (handoff_same_process()). */
        if (!start_time && handoff_start_time(ch->pid, &e.start_time) < 0)
                e.start_time = 0;
        handoff_table_set(&s->listed, (uint32_t) (ch - s->children.child), &e);
}

void server_unlist_session(struct server *s, const struct child *ch) {
        handoff_table_clear(&s->listed, (uint32_t) (ch - s->children.child));
}

/* The cgroup.procs file of this process's cgroup in the unified (v2)
 * hierarchy, when that is a service's own cgroup: 0 or -ENOENT. */
static int own_cgroup_procs(char *path, size_t size) {
        static const char *const roots[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
        char line[PATH_MAX];
        FILE *f = fopen("/proc/self/cgroup", "re");
        bool found = false;
        size_t len;

        if (!f)
                return -ENOENT;
        while (!found && fgets(line, sizeof(line), f))
                found = strncmp(line, "0::", 3) == 0;
        fclose(f);
        len = found ? strcspn(line, "\n") : 0;
        line[len] = 0;
        /* Only a unit's own cgroup holds nothing but its processes. */
        if (len < 3 + strlen("/x.service") || strcmp(line + len - strlen(".service"), ".service") != 0)
                return -ENOENT;
        for (size_t i = 0; i < ELEMENTSOF(roots); i++) {
                snprintf(path, size, "%s%s/cgroup.procs", roots[i], line + 3);
                if (access(path, R_OK) == 0)
                        return 0;
        }
        return -ENOENT;
}

void server_adopt_leftovers(struct server *s) {
        char path[PATH_MAX + 64];
        unsigned counted = 0, other = 0;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        FILE *f;
        int pid;

        /* As root, signal 0 would not tell our processes from others. */
        if (s->listed.fd < 0 || geteuid() == 0 || own_cgroup_procs(path, sizeof(path)) < 0)
                return;
        f = fopen(path, "re");
        if (!f)
                return;
        while (fscanf(f, "%d", &pid) == 1) {
                /* No start time (0: the user decides) and no client: counted
                 * under max_clients only. */
                struct handoff_entry e = { .pid = pid };
                if (pid == getpid())
                        continue;
                if (adopt_one(s, &e, now) >= 0)
                        counted++;
                else
                        other++;
        }
        fclose(f);
        s->adopted = counted;
        if (counted)
                log_msg(LOG_WARNING, MSGID_STARTUP, "no list of sessions from the previous daemon (systemd empties "
                        "its store when the unit stops); counting the %u process(es) of this user left in the "
                        "service's cgroup under max_clients until they end (their clients unknown: not under the "
                        "per-source limits); %u other process(es) there not counted", counted, other);
}
