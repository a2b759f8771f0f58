/* loadgen: hold mode (open C idle connections, hold them, measure the
 * server's memory, prove each still echoes) and the rounds that set up and
 * check connections, which the persistent timed modes use too. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "loadgen.h"

#define HOLD_SWEEP_NS (100 * 1000000ULL)

/* ---- memory of the server's process tree ---- */

struct proc_mem {
        unsigned procs;
        uint64_t pss_kb, uss_kb, rss_kb, pte_kb;
};

/* A list of (pid, parent) pairs read from /proc. */
struct proc_list {
        pid_t *pids, *ppids;
        size_t n, cap;
};

static pid_t read_ppid(pid_t pid) {
        char path[64], buf[512];
        FILE *f;
        char *p;
        int ppid = -1;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && sscanf(p + 1, " %*c %d", &ppid) != 1)
                ppid = -1;
        fclose(f);
        return ppid;
}

static void add_smaps(pid_t pid, struct proc_mem *m) {
        char path[64], line[256];
        FILE *f;
        unsigned long long v;

        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        m->procs++;
        while (fgets(line, sizeof(line), f)) {
                if (sscanf(line, "Pss: %llu", &v) == 1)
                        m->pss_kb += v;
                else if (sscanf(line, "Rss: %llu", &v) == 1)
                        m->rss_kb += v;
                else if (sscanf(line, "Private_Clean: %llu", &v) == 1 ||
                         sscanf(line, "Private_Dirty: %llu", &v) == 1 ||
                         sscanf(line, "Private_Hugetlb: %llu", &v) == 1)
                        m->uss_kb += v;
        }
        fclose(f);
        /* Page tables: kernel memory that PSS and USS do not show. */
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmPTE: %llu", &v) == 1)
                        m->pte_kb += v;
        fclose(f);
}

static size_t pid_limit(void) {
        FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
        unsigned long v = 4194304;
        if (f) {
                if (fscanf(f, "%lu", &v) != 1 || v < 1024 || v > 4194304)
                        v = 4194304;
                fclose(f);
        }
        return (size_t) v + 1;
}

static void proc_list_add(struct proc_list *l, pid_t pid, pid_t ppid) {
        if (l->n == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 4096;
                l->pids = realloc(l->pids, l->cap * sizeof(*l->pids));
                l->ppids = realloc(l->ppids, l->cap * sizeof(*l->ppids));
                if (!l->pids || !l->ppids)
                        die("out of memory");
        }
        l->pids[l->n] = pid;
        l->ppids[l->n] = ppid;
        l->n++;
}

/* Every process below npid with its parent. Returns false if /proc cannot
 * be read. */
static bool list_processes(struct proc_list *l, size_t npid) {
        DIR *d = opendir("/proc");
        struct dirent *e;

        if (!d)
                return false;
        while ((e = readdir(d))) {
                pid_t pid, ppid;
                if (!isdigit((unsigned char) e->d_name[0]))
                        continue;
                pid = (pid_t) atoi(e->d_name);
                ppid = read_ppid(pid);
                if (ppid < 0 || (size_t) pid >= npid || (size_t) ppid >= npid)
                        continue;
                proc_list_add(l, pid, ppid);
        }
        closedir(d);
        return true;
}

/* Sums PSS and USS over root and all its descendants. */
static struct proc_mem tree_memory(pid_t root) {
        struct proc_mem m = { 0 };
        struct proc_list l = { 0 };
        size_t npid = pid_limit();
        bool *in; /* indexed by pid */
        bool changed = true;

        if (root <= 0 || (size_t) root >= npid || !list_processes(&l, npid))
                return m;
        in = calloc(npid, sizeof(*in));
        if (!in)
                die("out of memory");
        in[root] = true;
        /* Descendants: one pass per generation until the set stops growing. */
        while (changed) {
                changed = false;
                for (size_t i = 0; i < l.n; i++) {
                        if (!in[l.pids[i]] && in[l.ppids[i]])
                                in[l.pids[i]] = changed = true;
                }
        }
        for (size_t i = 0; i < l.n; i++)
                if (in[l.pids[i]])
                        add_smaps(l.pids[i], &m);
        free(in);
        free(l.pids);
        free(l.ppids);
        return m;
}

/* ---- rounds ---- */

/* One round's progress over the connections, in index order. */
struct round {
        bool first;             /* connect (first round) or check an established one */
        unsigned next;          /* next connection to start */
        unsigned inflight;      /* being connected or echoing */
        unsigned ok;            /* echoed correctly */
};

/* Starts connections until opt.batch are in flight or all are started. */
static void round_launch(struct lg *g, struct round *r, uint64_t now) {
        while (r->next < g->opt.conc && r->inflight < g->opt.batch) {
                struct conn *c = &g->conns[r->next++];
                if (r->first) {
                        if (!start_connect(g, c, now)) {
                                c->state = S_DEAD;
                                continue;
                        }
                } else {
                        if (c->state != S_READY)
                                continue;
                        begin_msg(g, c, now);
                        if (!send_msg(g, c, now)) {
                                close_conn(c, S_DEAD);
                                continue;
                        }
                }
                r->inflight++;
        }
}

/* Fails a connection in flight. */
static void round_drop(struct round *r, struct conn *c) {
        close_conn(c, S_DEAD);
        r->inflight--;
}

static void round_event(struct lg *g, struct round *r, struct conn *c, uint32_t ev, uint64_t now) {
        int e;

        if (c->state == S_READY) { /* an idle one spoke or closed */
                persistent_event(g, c, ev, now, (struct window) { 0, UINT64_MAX });
                return;
        }
        if (c->state == S_CONNECTING) {
                if (!connect_done(g, c)) {
                        round_drop(r, c);
                        return;
                }
                begin_msg(g, c, now);
                if (!send_msg(g, c, now))
                        round_drop(r, c);
                return;
        }
        if (c->state != S_ECHO)
                return;
        e = echo_progress(g, c, now);
        if (e < 0) {
                round_drop(r, c);
        } else if (e > 0) {
                c->state = S_READY;
                watch(g, c, EPOLLIN);
                r->inflight--;
                r->ok++;
        }
}

/* Fails the started connections without progress for the timeout. */
static void round_sweep(struct lg *g, struct round *r, uint64_t now) {
        uint64_t tmo = sec_to_ns(g->opt.timeout);

        for (unsigned i = 0; i < r->next; i++) {
                struct conn *c = &g->conns[i];
                if ((c->state == S_CONNECTING || c->state == S_ECHO) && now - c->t_progress > tmo) {
                        g->st.err_timeout++;
                        round_drop(r, c);
                }
        }
}

/* Runs one round over all live connections: connect (first round) and one
 * verified echo each, at most opt.batch in flight. Returns the number of
 * connections that echoed correctly. */
unsigned hold_round(struct lg *g, bool first, uint64_t *elapsed_ns) {
        struct epoll_event evs[MAX_EVENTS];
        uint64_t t0 = now_ns(), limit = t0 + sec_to_ns(HOLD_PHASE_LIMIT_SEC), last_sweep = t0;
        struct round r = { .first = first };

        while (!lg_interrupted) {
                uint64_t now = now_ns();
                int n;

                round_launch(g, &r, now);
                if (r.inflight == 0 && r.next >= g->opt.conc)
                        break;
                if (now >= limit)
                        break;
                n = epoll_wait(g->epfd, evs, MAX_EVENTS, 50);
                now = now_ns();
                for (int i = 0; i < n; i++)
                        round_event(g, &r, evs[i].data.ptr, evs[i].events, now);
                if (now - last_sweep >= HOLD_SWEEP_NS) {
                        last_sweep = now;
                        round_sweep(g, &r, now);
                }
        }
        if (now_ns() >= limit)
                fprintf(stderr, "loadgen: hold phase stopped at its %.0f s limit\n", HOLD_PHASE_LIMIT_SEC);
        *elapsed_ns = now_ns() - t0;
        return r.ok;
}

/* ---- hold ---- */

/* Holds the connections for opt.duration: nothing should happen; anything
 * that does is an error. Returns how many are still held. */
static unsigned hold_idle(struct lg *g) {
        struct epoll_event evs[MAX_EVENTS];
        uint64_t t_end = now_ns() + sec_to_ns(g->opt.duration);
        unsigned held_n = 0;

        while (!lg_interrupted && now_ns() < t_end) {
                int n = epoll_wait(g->epfd, evs, MAX_EVENTS, 50);
                for (int i = 0; i < n; i++)
                        persistent_event(g, evs[i].data.ptr, evs[i].events, now_ns(),
                                         (struct window) { 0, UINT64_MAX });
        }
        for (unsigned i = 0; i < g->opt.conc; i++)
                held_n += g->conns[i].state == S_READY;
        return held_n;
}

void run_hold(struct lg *g) {
        const struct opts *o = &g->opt;
        struct proc_mem base = tree_memory(o->pid), held;
        uint64_t est_ns, check_ns;
        unsigned established, alive, held_n;
        double per;

        established = hold_round(g, true, &est_ns);
        held_n = hold_idle(g);
        held = tree_memory(o->pid);
        alive = hold_round(g, false, &check_ns);
        per = held_n ? 1.0 / held_n : -1.0; /* memory per connection actually held */

        printf("mode=hold addr=%s port=%d conc=%u established=%u establish_s=%.3f establish_per_s=%.0f "
               "hold_s=%.1f held=%u alive_end=%u check_s=%.3f procs=%u pss_kb=%" PRIu64 " uss_kb=%" PRIu64
               " rss_kb=%" PRIu64 " base_procs=%u base_pss_kb=%" PRIu64 " base_uss_kb=%" PRIu64
               " pss_kb_per_conn=%.2f uss_kb_per_conn=%.2f pss_kb_per_conn_incr=%.2f uss_kb_per_conn_incr=%.2f"
               " pte_kb=%" PRIu64 " pte_kb_per_conn=%.2f",
               o->addr_str, o->port, o->conc, established, (double) est_ns / 1e9,
               est_ns ? established / ((double) est_ns / 1e9) : 0.0, o->duration, held_n, alive,
               (double) check_ns / 1e9,
               held.procs, held.pss_kb, held.uss_kb, held.rss_kb, base.procs, base.pss_kb, base.uss_kb,
               (double) held.pss_kb * per, (double) held.uss_kb * per,
               ((double) held.pss_kb - (double) base.pss_kb) * per,
               ((double) held.uss_kb - (double) base.uss_kb) * per,
               held.pte_kb, (double) held.pte_kb * per);
}
