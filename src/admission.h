/* Admission control: whether an accepted connection gets a worker.
 *
 * Decided before any fork, in this order: the deny and allow lists, a block
 * earned by going over the connection rate, the rate itself (a token bucket
 * per source; running dry blocks the source for block_ms), and the number of
 * sessions the source already has. Sources are counted by prefix
 * (prefix_v4, prefix_v6). One source over its limits is refused while
 * everyone else is served; nothing here ever refuses everyone. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "cidr.h"
#include "config.h"
#include "sources.h"
#include "util.h"

#define ADMISSION_SOURCES 65536
/* When the table is full, sweeping it for room costs a pass over every
 * entry: at most once a second, or a flood of new sources would make every
 * accept a full scan. In between, new sources go untracked. */
#define ADMISSION_SWEEP_INTERVAL_USEC USEC_PER_SEC

struct admission {
        struct sources sources;
        const struct config *cfg;       /* limits and lists; owned by the caller */
        uint64_t refused[_REFUSE_MAX];  /* since start */
        uint64_t untracked;             /* admitted with no room to track the source */
        uint64_t untracked_reported;
        uint64_t swept_usec;            /* last sweep made because the table was full */
        uint64_t full_sweeps;
};

int admission_init(struct admission *a, const struct config *cfg);
void admission_done(struct admission *a);

/* The source key of a peer under the current prefix lengths. */
bool admission_source_of(const struct admission *a, const union sockaddr_any *peer, struct cidr *key);

/* Decides for a new connection from peer. Returns -1 when admitted (the
 * source's session count is then already raised), or the refuse_reason. */
int admission_check(struct admission *a, const union sockaddr_any *peer, uint64_t now);

/* Counts a session that is already running (a recount after a reload). */
void admission_add_session(struct admission *a, const union sockaddr_any *peer, uint64_t now);

/* A session of peer's source ended (or an admitted client was dropped). */
void admission_release(struct admission *a, const union sockaddr_any *peer);

/* The configuration changed (a reload): when the prefix lengths changed,
 * sources are recounted from the peers of the live sessions via `recount`. */
int admission_reconfigure(struct admission *a, const struct config *old,
                          void (*recount)(struct admission *a, void *userdata), void *userdata);

/* Reports what was refused since the last report: calls fn for the
 * max_lines sources (at most 32) with the most refusals, largest first, and
 * once more with key NULL for the sum of all the others; then forgets the
 * per-source counts and drops idle sources. */
void admission_report(struct admission *a, uint64_t now, unsigned max_lines,
                      void (*fn)(const struct cidr *key, const uint32_t counts[_REFUSE_MAX],
                                 uint32_t sources, void *userdata),
                      void *userdata);

uint32_t admission_sources(const struct admission *a);
const char *refuse_reason_name(int reason);
