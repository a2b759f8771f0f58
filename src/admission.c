/* See admission.h. */
#include <errno.h>
#include <string.h>

#include "admission.h"
#include "util.h"

static const char *const reason_names[_REFUSE_MAX] = {
        [REFUSE_DENIED] = "denied",
        [REFUSE_RATE] = "rate limit",
        [REFUSE_PER_SOURCE] = "per-source limit",
};

const char *refuse_reason_name(int reason) {
        return reason >= 0 && reason < _REFUSE_MAX ? reason_names[reason] : "unknown";
}

int admission_init(struct admission *a, const struct config *cfg) {
        *a = (struct admission) { .cfg = cfg };
        return sources_init(&a->sources, cfg->source_table_size, ADMISSION_LIVE_MAX);
}

void admission_done(struct admission *a) {
        sources_done(&a->sources);
}

static bool source_of(const struct admission *a, const union sockaddr_any *peer, struct in6_addr *addr,
                      struct cidr *key) {
        if (!cidr_address_of(peer, addr))
                return false;
        *key = cidr_source(addr, a->cfg->source_prefix_v4, a->cfg->source_prefix_v6);
        return true;
}

static bool listed(const struct cidr *list, uint32_t n, const struct in6_addr *addr) {
        for (uint32_t i = 0; i < n; i++)
                if (cidr_contains(&list[i], addr))
                        return true;
        return false;
}

/* Counts a refusal for the report; returns false (not admitted) for
 * admission_check() to pass on. */
static bool count_refusal(struct admission *a, struct source *e, enum refuse_reason reason, uint64_t now,
                          enum refuse_reason *ret_reason) {
        a->refused[reason]++;
        if (e) {
                e->refused[reason] = sat_add_u32(e->refused[reason], 1);
                sources_seen(&a->sources, e, now);
        } else {
                a->sources.forgotten.refused[reason] = sat_add_u32(a->sources.forgotten.refused[reason], 1);
                /* no key to tell it from others */
                a->sources.forgotten.untracked = sat_add_u32(a->sources.forgotten.untracked, 1);
        }
        *ret_reason = reason;
        return false;
}

/* A denied source is tallied for the report in its entry when it has one,
 * else in a tally that may only take the place of another tally (or of
 * nothing): a flood of denied sources never displaces what the checks of
 * admitted sources rely on. Without room it is summed with the rest. */
static bool count_denied(struct admission *a, const struct cidr *key, uint64_t now,
                         enum refuse_reason *ret_reason) {
        struct source *e = sources_find(&a->sources, key);

        if (!e)
                e = sources_get(&a->sources, key, true, a->cfg->source_burst, now);
        return count_refusal(a, e, REFUSE_DENIED, now, ret_reason);
}

static void hold(struct admission *a, struct source *e, uint64_t now, struct admission_hold *h) {
        e->active++;
        sources_seen(&a->sources, e, now);
        *h = (struct admission_hold) { .source = e->key, .counted = true };
}

bool admission_exempt(const struct config *c, const union sockaddr_any *peer) {
        struct in6_addr addr;

        return cidr_address_of(peer, &addr) && listed(c->exempt, c->n_exempt, &addr);
}

bool admission_check(struct admission *a, const union sockaddr_any *peer, uint64_t now,
                     struct admission_hold *ret_hold, enum refuse_reason *ret_reason) {
        const struct config *c = a->cfg;
        double rate = c->source_rate_milli / 1000.0, burst = c->source_burst;
        struct in6_addr addr;
        struct source *e;
        struct cidr key;

        *ret_hold = (struct admission_hold) { .counted = false };
        if (!source_of(a, peer, &addr, &key))
                return true; /* not an IP peer (the listeners are TCP/IP): nothing to count */
        if (listed(c->deny, c->n_deny, &addr) || (c->n_allow > 0 && !listed(c->allow, c->n_allow, &addr)))
                return count_denied(a, &key, now, ret_reason);
        /* Exempt: neither limited nor counted, so it takes no place in the
         * table and never adds to a shared prefix's sessions. */
        if (listed(c->exempt, c->n_exempt, &addr))
                return true;
        e = sources_get(&a->sources, &key, false, burst, now);
        if (!e) /* only live sessions in the table: more than ADMISSION_LIVE_MAX, cannot be */
                return count_refusal(a, NULL, REFUSE_PER_SOURCE, now, ret_reason);
        e->checked = true;
        if (e->blocked_until > now)
                return count_refusal(a, e, REFUSE_RATE, now, ret_reason);
        if (rate > 0 && !source_take_token(e, rate, burst, now)) {
                e->blocked_until = now + usec_from_ms(c->source_block_ms);
                return count_refusal(a, e, REFUSE_RATE, now, ret_reason);
        }
        if (c->max_clients_per_source && e->active >= c->max_clients_per_source)
                return count_refusal(a, e, REFUSE_PER_SOURCE, now, ret_reason);
        hold(a, e, now, ret_hold);
        return true;
}

void admission_hold_session(struct admission *a, const union sockaddr_any *peer, uint64_t now,
                            struct admission_hold *h) {
        struct in6_addr addr;
        struct source *e;
        struct cidr key;

        *h = (struct admission_hold) { .counted = false };
        if (!source_of(a, peer, &addr, &key) || listed(a->cfg->exempt, a->cfg->n_exempt, &addr))
                return;
        e = sources_get(&a->sources, &key, false, a->cfg->source_burst, now);
        if (!e)
                return; /* cannot be: see admission_check() */
        e->checked = true;
        hold(a, e, now, h);
}

void admission_release(struct admission *a, struct admission_hold *h, uint64_t now) {
        struct source *e;

        if (!h->counted)
                return;
        h->counted = false;
        /* An entry with live sessions is never forgotten, so it is there. */
        e = sources_find(&a->sources, &h->source);
        if (e && e->active > 0) {
                e->active--;
                sources_seen(&a->sources, e, now);
        }
}

static bool same_list(const struct cidr *x, uint32_t nx, const struct cidr *y, uint32_t ny) {
        if (nx != ny)
                return false;
        for (uint32_t i = 0; i < nx; i++)
                if (x[i].len != y[i].len || memcmp(&x[i].addr, &y[i].addr, sizeof(x[i].addr)) != 0)
                        return false;
        return true;
}

int admission_reconfigure(struct admission *a, const struct config *old,
                          void (*recount)(struct admission *a, void *userdata), void *userdata) {
        int r;

        /* A change of the exempt list changes which live sessions count. */
        if (old->source_prefix_v4 == a->cfg->source_prefix_v4 &&
            old->source_prefix_v6 == a->cfg->source_prefix_v6 &&
            old->source_table_size == a->cfg->source_table_size &&
            same_list(old->exempt, old->n_exempt, a->cfg->exempt, a->cfg->n_exempt))
                return 0;
        r = sources_reset(&a->sources, a->cfg->source_table_size, ADMISSION_LIVE_MAX);
        if (r < 0)
                return r;
        recount(a, userdata);
        return 0;
}

#define REPORT_TOP_MAX 32

struct report {
        unsigned max_lines, n_top;
        struct { struct cidr key; uint32_t hash, counts[_REFUSE_MAX]; uint64_t sum; } top[REPORT_TOP_MAX];
        struct source_tally *rest;      /* the forgotten ones' tally, which the rest joins */
        uint32_t rest_entries;          /* entries in the rest that no forgotten one may be */
};

/* An entry in the table is one source, distinct from every other entry;
 * it may be a source forgotten earlier, which its bit may tell: counted
 * only when the bit is clear, it is never counted twice. */
static void add_rest(struct report *r, const uint32_t counts[_REFUSE_MAX], uint32_t hash) {
        for (int i = 0; i < _REFUSE_MAX; i++)
                r->rest->refused[i] = sat_add_u32(r->rest->refused[i], counts[i]);
        r->rest_entries += !source_tally_has(r->rest, hash);
}

/* Keeps the max_lines sources with the most refusals, largest first, in
 * r->top; everything else goes into r->rest. */
static void report_one(struct source *e, void *userdata) {
        struct report *r = userdata;
        uint64_t sum = 0;
        unsigned i;

        for (int k = 0; k < _REFUSE_MAX; k++)
                sum += e->refused[k];
        if (sum == 0)
                return;
        for (i = r->n_top; i > 0 && r->top[i - 1].sum < sum; i--)
                ;
        if (i >= r->max_lines) {
                add_rest(r, e->refused, e->hash);
        } else {
                if (r->n_top == r->max_lines) {
                        r->n_top--;
                        add_rest(r, r->top[r->n_top].counts, r->top[r->n_top].hash);
                }
                memmove(&r->top[i + 1], &r->top[i], (r->n_top - i) * sizeof(r->top[0]));
                r->top[i].key = e->key;
                r->top[i].hash = e->hash;
                r->top[i].sum = sum;
                memcpy(r->top[i].counts, e->refused, sizeof(e->refused));
                r->n_top++;
        }
        memset(e->refused, 0, sizeof(e->refused));
}

void admission_report(struct admission *a, uint64_t now, unsigned max_lines,
                      void (*fn)(const struct cidr *key, const uint32_t counts[_REFUSE_MAX],
                                 uint32_t sources, unsigned rest_of, void *userdata),
                      void *userdata) {
        /* What forgotten sources had to report goes with the rest. */
        struct report r = { .max_lines = max_lines < REPORT_TOP_MAX ? max_lines : REPORT_TOP_MAX,
                            .rest = &a->sources.forgotten };
        struct source_tally rest;
        unsigned rest_of = 0;
        uint64_t sum = 0;

        sources_foreach(&a->sources, report_one, &r);
        for (unsigned i = 0; i < r.n_top; i++) {
                fn(&r.top[i].key, r.top[i].counts, 1, 0, userdata);
                /* Named: not one of the others, even if an entry of it was
                 * forgotten before; then its refusals under that entry are
                 * in the sum (a source sharing its bit goes uncounted: the
                 * figure may fall short, never over). */
                if (source_tally_has(r.rest, r.top[i].hash))
                        rest_of |= REPORT_REST_NAMED;
                source_tally_mark(r.rest, r.top[i].hash, false);
        }
        rest = *r.rest;
        *r.rest = (struct source_tally) { 0 };
        for (int i = 0; i < _REFUSE_MAX; i++)
                sum += rest.refused[i];
        if (rest.untracked)
                rest_of |= REPORT_REST_UNTRACKED;
        if (sum)
                fn(NULL, rest.refused, source_tally_sources(&rest) + r.rest_entries, rest_of, userdata);
        admission_sweep(a, now);
}

void admission_sweep(struct admission *a, uint64_t now) {
        sources_sweep(&a->sources, a->cfg->source_rate_milli / 1000.0, a->cfg->source_burst, now);
}

uint32_t admission_sources(const struct admission *a) {
        return a->sources.count;
}

uint64_t admission_forgotten(const struct admission *a) {
        return a->sources.forgotten_total;
}
