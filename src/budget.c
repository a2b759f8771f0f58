/* See budget.h. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "budget.h"
#include "log.h"
#include "logaddr.h"
#include "session-log.h"

void budget_init(struct budget *b, const struct config *cfg, uint64_t now) {
        memset(b, 0, sizeof(*b));
        b->tokens = cfg->log_connection_burst;
        b->refilled_usec = now;
}

/* True when the bucket pays for one record now. */
static bool pay(struct budget *b, const struct config *cfg, uint64_t now) {
        double burst = cfg->log_connection_burst;

        if (cfg->log_connection_rate_milli == 0)
                return true;
        if (now > b->refilled_usec) {
                b->tokens += cfg->log_connection_rate_milli / 1000.0 * (double) (now - b->refilled_usec) /
                             (double) USEC_PER_SEC;
                b->refilled_usec = now;
        }
        if (b->tokens > burst) /* also after a reload lowered the burst */
                b->tokens = burst;
        if (b->tokens < 1.0)
                return false;
        b->tokens -= 1.0;
        return true;
}

static bool same_source(const struct cidr *a, const struct cidr *b) {
        return a->len == b->len && memcmp(&a->addr, &b->addr, sizeof(a->addr)) == 0;
}

static void count_source(struct budget *b, const struct cidr *key) {
        struct budget_source *least = NULL;

        for (uint32_t i = 0; i < b->n_sources; i++) {
                if (same_source(&b->sources[i].key, key)) {
                        b->sources[i].count++;
                        return;
                }
                if (!least || b->sources[i].count < least->count)
                        least = &b->sources[i];
        }
        if (b->n_sources < BUDGET_SOURCES) {
                b->sources[b->n_sources++] = (struct budget_source) { .key = *key, .count = 1 };
                return;
        }
        b->sources_overflow = true;
        least->key = *key;
        least->count++;
}

/* As the configuration file writes it: "100", "0.5". */
static const char *format_rate(uint32_t milli, char buf[static 16]) {
        if (milli % 1000 == 0)
                snprintf(buf, 16, "%" PRIu32, milli / 1000);
        else
                snprintf(buf, 16, "%" PRIu32 ".%03" PRIu32, milli / 1000, milli % 1000);
        return buf;
}

static void start_folding(struct budget *b, const struct config *cfg, uint64_t now) {
        char message[256], f[3][64], rate[16];
        const char *fields[] = { f[0], f[1], f[2] };

        b->folding = true;
        b->folding_usec = b->since_usec = now;
        b->folded = 0;
        b->summaries = 0;
        format_rate(cfg->log_connection_rate_milli, rate);
        snprintf(message, sizeof(message), "connection records over budget (%s a second, bursts of %" PRIu32
                 "): further connections are summarized every %" PRIu64 " s until the rate drops", rate,
                 cfg->log_connection_burst, BUDGET_INTERVAL_USEC / USEC_PER_SEC);
        snprintf(f[0], sizeof(f[0]), "LOG_CONNECTION_RATE=%s", rate);
        snprintf(f[1], sizeof(f[1]), "LOG_CONNECTION_BURST=%" PRIu32, cfg->log_connection_burst);
        snprintf(f[2], sizeof(f[2]), "RECORDED=%" PRIu64, b->recorded);
        log_struct(LOG_NOTICE, MSGID_BUDGET_SPENT, message, fields, ELEMENTSOF(fields));
}

void budget_connection(struct budget *b, const struct config *cfg, const struct session_end *e, int status,
                       uint64_t now) {
        struct in6_addr addr;

        if (!log_enabled(LOG_INFO))
                return;
        if (pay(b, cfg, now)) {
                session_log_record(e, status, now);
                b->recorded++;
                return;
        }
        if (!b->folding)
                start_folding(b, cfg, now);
        b->connections++;
        b->reasons[session_log_reason(e, status)]++;
        b->bytes_in += e->report.stats.bytes_in;
        b->bytes_out += e->report.stats.bytes_out;
        b->session_usec += session_log_duration(e, now);
        if (cidr_address_of(&e->child.peer, &addr)) {
                struct cidr key = cidr_source(&addr, cfg->source_prefix_v4, cfg->source_prefix_v6);
                count_source(b, &key);
        }
}

/* A summary stands for connection records, which are info: while info is
 * not logged (log_level lowered by a reload) it is held, counts and all,
 * never written where it is filtered out and counted as summarized. */
static bool held(const struct budget *b) {
        return b->connections > 0 && !log_enabled(LOG_INFO);
}

uint64_t budget_due(const struct budget *b) {
        return b->folding && !held(b) ? b->since_usec + BUDGET_INTERVAL_USEC : UINT64_MAX;
}

/* "CLOSED_client-closed=3" -> "CLOSED_CLIENT_CLOSED=3": journal field
 * names are upper case letters, digits and underscores. */
static void field_name_upper(char *field) {
        for (char *c = field; *c && *c != '='; c++)
                *c = *c == '-' ? '_' : (char) toupper((unsigned char) *c);
}

/* "client-closed 800, reset 12" */
static void format_reasons(const struct budget *b, char *buf, size_t size) {
        size_t used = 0;

        buf[0] = 0;
        for (enum close_reason i = 0; i < _CLOSE_REASON_MAX && used < size; i++)
                if (b->reasons[i])
                        used += (size_t) snprintf(buf + used, size - used, "%s%s %" PRIu64, used ? ", " : "",
                                                  close_reason_name(i), b->reasons[i]);
}

/* "127.0.0.1 790, 127.0.0.2 22": the busiest first. */
static void format_sources(struct budget *b, char *buf, size_t size) {
        size_t used = 0;

        buf[0] = 0;
        for (unsigned k = 0; k < BUDGET_TOP_SOURCES && k < b->n_sources && used < size; k++) {
                char who[LOGADDR_MAX];
                uint32_t best = k;

                for (uint32_t i = k + 1; i < b->n_sources; i++)
                        if (b->sources[i].count > b->sources[best].count)
                                best = i;
                struct budget_source t = b->sources[k];
                b->sources[k] = b->sources[best];
                b->sources[best] = t;
                used += (size_t) snprintf(buf + used, size - used, "%s%s %s%" PRIu64, used ? ", " : "",
                                          logaddr_source(&b->sources[k].key, who),
                                          b->sources_overflow ? "~" : "", b->sources[k].count);
        }
}

static void write_summary(struct budget *b, uint64_t now, uint64_t served, int priority) {
        char reasons[256], sources[BUDGET_TOP_SOURCES * (LOGADDR_MAX + 24)], n_sources[32];
        char message[1024], f[9 + _CLOSE_REASON_MAX][96], top[sizeof(sources) + 16];
        const char *fields[ELEMENTSOF(f) + 1];
        uint64_t span = now - b->since_usec;
        size_t n = 0;

        b->summarized += b->connections;
        b->folded += b->connections;
        b->summaries++;
        format_reasons(b, reasons, sizeof(reasons));
        format_sources(b, sources, sizeof(sources));
        if (b->sources_overflow)
                snprintf(n_sources, sizeof(n_sources), "more than %d", BUDGET_SOURCES);
        else
                snprintf(n_sources, sizeof(n_sources), "%" PRIu32, b->n_sources);
        snprintf(message, sizeof(message), "summary of %" PRIu64 " connection(s) closed in the last %" PRIu64
                 ".%01" PRIu64 " s without a record each (over the record budget): %s; %" PRIu64 " bytes in, %"
                 PRIu64 " bytes out, %" PRIu64 ".%03" PRIu64 " s in sessions; %s source(s): %s; %" PRIu64
                 " recorded and %" PRIu64 " summarized of %" PRIu64 " served",
                 b->connections, span / USEC_PER_SEC, span % USEC_PER_SEC / (USEC_PER_SEC / 10), reasons,
                 b->bytes_in, b->bytes_out, b->session_usec / USEC_PER_SEC,
                 b->session_usec % USEC_PER_SEC / USEC_PER_MSEC, n_sources, sources, b->recorded, b->summarized,
                 served);
        snprintf(f[n++], sizeof(f[0]), "CONNECTIONS=%" PRIu64, b->connections);
        for (enum close_reason i = 0; i < _CLOSE_REASON_MAX; i++) {
                if (!b->reasons[i])
                        continue;
                snprintf(f[n], sizeof(f[0]), "CLOSED_%s=%" PRIu64, close_reason_name(i), b->reasons[i]);
                field_name_upper(f[n++]);
        }
        snprintf(f[n++], sizeof(f[0]), "BYTES_RECEIVED=%" PRIu64, b->bytes_in);
        snprintf(f[n++], sizeof(f[0]), "BYTES_SENT=%" PRIu64, b->bytes_out);
        snprintf(f[n++], sizeof(f[0]), "SESSIONS_USEC=%" PRIu64, b->session_usec);
        snprintf(f[n++], sizeof(f[0]), "INTERVAL_USEC=%" PRIu64, span);
        snprintf(f[n++], sizeof(f[0]), "SOURCES=%s", n_sources);
        snprintf(f[n++], sizeof(f[0]), "RECORDED=%" PRIu64, b->recorded);
        snprintf(f[n++], sizeof(f[0]), "SUMMARIZED=%" PRIu64, b->summarized);
        snprintf(f[n++], sizeof(f[0]), "SERVED=%" PRIu64, served);
        for (size_t i = 0; i < n; i++)
                fields[i] = f[i];
        /* The list of sources may be longer than a slot of f. */
        snprintf(top, sizeof(top), "TOP_SOURCES=%s", sources);
        fields[n++] = top;
        log_struct(priority, MSGID_BUDGET_SUMMARY, message, fields, n);

        b->connections = b->bytes_in = b->bytes_out = b->session_usec = 0;
        memset(b->reasons, 0, sizeof(b->reasons));
        b->n_sources = 0;
        b->sources_overflow = false;
}

static void stop_folding(struct budget *b, uint64_t now, bool final) {
        char message[256], f[2][64];
        const char *fields[] = { f[0], f[1] };
        uint64_t span = now - b->folding_usec;

        snprintf(message, sizeof(message), "connection records %s: %" PRIu64 " connection(s) went into %u "
                 "summary record(s) in the last %" PRIu64 " s", final ? "end with the daemon" : "within budget again",
                 b->folded, b->summaries, span / USEC_PER_SEC);
        snprintf(f[0], sizeof(f[0]), "CONNECTIONS=%" PRIu64, b->folded);
        snprintf(f[1], sizeof(f[1]), "SUMMARIES=%u", b->summaries);
        log_struct(LOG_NOTICE, MSGID_BUDGET_RESTORED, message, fields, ELEMENTSOF(fields));
        b->folding = false;
}

void budget_flush(struct budget *b, uint64_t now, uint64_t served, bool final) {
        if (held(b) && !final)
                return;
        if (b->connections > 0)
                /* A summary held to the end goes out with the daemon's
                 * last records, at notice. */
                write_summary(b, now, served, log_enabled(LOG_INFO) ? LOG_INFO : LOG_NOTICE);
        else if (b->folding)
                stop_folding(b, now, final);
        if (final && b->folding)
                stop_folding(b, now, final);
        b->since_usec = now;
}
