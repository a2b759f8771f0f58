#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "logaddr.h"
#include "report.h"
#include "util.h"

static uint64_t total(const uint64_t *refused) {
        uint64_t n = 0;

        for (int i = 0; i < _REFUSE_MAX; i++)
                n += refused[i];
        return n;
}

void report_status(const struct report_state *st, char *buf, size_t size) {
        if (st->draining) {
                snprintf(buf, size, "Draining: %u session(s) left; %" PRIu64 " served", st->active, st->served);
                return;
        }
        snprintf(buf, size, "%u active (cap %u%s), %" PRIu64 " served, %" PRIu64 " refused "
                 "(denied %" PRIu64 ", rate %" PRIu64 ", per-source %" PRIu64 ")%s%s",
                 st->active, st->max_clients, st->at_cap ? ", AT CAP" : "", st->served, total(st->refused),
                 st->refused[REFUSE_DENIED], st->refused[REFUSE_RATE], st->refused[REFUSE_PER_SOURCE],
                 st->fork_failing ? "; fork failing, retrying" :
                 st->accept_paused ? "; accept paused (out of resources)" : "",
                 st->restart_pending && st->restart_pending[0] ? "; restart pending" : "");
}

void report_summary(const struct report_state *st) {
        char message[512], f[9][160];
        const char *fields[ELEMENTSOF(f)];
        char status[256];
        size_t n = 0;

        report_status(st, status, sizeof(status));
        snprintf(message, sizeof(message), "summary: %s; %" PRIu32 " source(s) tracked (source_table_size %"
                 PRIu32 "), %" PRIu64 " forgotten to make room; up %" PRIu64 " s", status, st->sources,
                 st->source_table_size, st->forgotten, st->uptime_usec / USEC_PER_SEC);
        snprintf(f[n++], sizeof(f[0]), "ACTIVE=%u", st->active);
        snprintf(f[n++], sizeof(f[0]), "SERVED=%" PRIu64, st->served);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_DENIED=%" PRIu64, st->refused[REFUSE_DENIED]);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_RATE=%" PRIu64, st->refused[REFUSE_RATE]);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_PER_SOURCE=%" PRIu64, st->refused[REFUSE_PER_SOURCE]);
        snprintf(f[n++], sizeof(f[0]), "SOURCES=%" PRIu32, st->sources);
        snprintf(f[n++], sizeof(f[0]), "SOURCES_FORGOTTEN=%" PRIu64, st->forgotten);
        snprintf(f[n++], sizeof(f[0]), "UPTIME_USEC=%" PRIu64, st->uptime_usec);
        if (st->restart_pending && st->restart_pending[0])
                snprintf(f[n++], sizeof(f[0]), "RESTART_PENDING=%s", st->restart_pending);
        for (size_t i = 0; i < n; i++)
                fields[i] = f[i];
        log_struct(LOG_NOTICE, MSGID_SUMMARY, message, fields, n);
}

/* Who the sum of the unnamed refusals came from: each part it holds. */
static void rest_sources(uint32_t sources, unsigned rest, char *who, size_t size) {
        size_t used = 0;

        who[0] = 0;
        if (sources)
                used += (size_t) snprintf(who, size, "%" PRIu32 " other source(s)", sources);
        if ((rest & REPORT_REST_NAMED) && used < size)
                used += (size_t) snprintf(who + used, size - used, "%ssources named above (before they were "
                                          "forgotten)", used ? " and " : "");
        if (((rest & REPORT_REST_UNTRACKED) || !used) && used < size)
                snprintf(who + used, size - used, "%ssources not tracked", used ? " and " : "");
}

static void one_source(const struct cidr *key, const uint32_t counts[_REFUSE_MAX], uint32_t sources,
                       unsigned rest, void *userdata) {
        char who[LOGADDR_MAX + 96], reasons[160] = "", message[384], f[5][128];
        const char *fields[ELEMENTSOF(f)];
        uint64_t sum = 0;
        size_t used = 0, n = 0;
        const uint64_t *span_usec = userdata;

        for (int i = 0; i < _REFUSE_MAX; i++) {
                sum += counts[i];
                if (counts[i] && used < sizeof(reasons))
                        used += (size_t) snprintf(reasons + used, sizeof(reasons) - used, "%s%s %" PRIu32,
                                                  used ? ", " : "", refuse_reason_name(i), counts[i]);
        }
        if (key)
                logaddr_source(key, who);
        else
                rest_sources(sources, rest, who, sizeof(who));
        snprintf(message, sizeof(message), "refused %" PRIu64 " connection(s) from %s in the last %" PRIu64
                 " s: %s", sum, who, *span_usec / USEC_PER_SEC, reasons);
        snprintf(f[n++], sizeof(f[0]), "SOURCE=%s", who);
        snprintf(f[n++], sizeof(f[0]), "REFUSED=%" PRIu64, sum);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_DENIED=%" PRIu32, counts[REFUSE_DENIED]);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_RATE=%" PRIu32, counts[REFUSE_RATE]);
        snprintf(f[n++], sizeof(f[0]), "REFUSED_PER_SOURCE=%" PRIu32, counts[REFUSE_PER_SOURCE]);
        for (size_t i = 0; i < n; i++)
                fields[i] = f[i];
        log_struct(LOG_WARNING, MSGID_REFUSED, message, fields, n);
}

void report_refusals(struct report_refusals *r, struct admission *a, uint64_t now) {
        uint64_t span = REPORT_INTERVAL_USEC;

        /* Filtered out (log_level): the counts are held for the first
         * report written, which then covers the time since, never reset as
         * if it had been written. They saturate (sat_add_u32()). */
        if (!log_enabled(LOG_WARNING)) {
                if (!r->held_since_usec)
                        r->held_since_usec = now;
                admission_sweep(a, now);
                return;
        }
        if (r->held_since_usec) {
                span += now - r->held_since_usec;
                r->held_since_usec = 0;
        }
        admission_report(a, now, REPORT_MAX_LINES, one_source, &span);
        if (admission_forgotten(a) > r->forgotten_reported) {
                log_msg(LOG_WARNING, MSGID_REFUSED, "source table full (source_table_size %" PRIu32 "): "
                        "forgot the %" PRIu64 " least recently seen source(s) without sessions in the last %"
                        PRIu64 " s", a->sources.capacity, admission_forgotten(a) - r->forgotten_reported,
                        span / USEC_PER_SEC);
                r->forgotten_reported = admission_forgotten(a);
        }
}
