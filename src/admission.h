/* Admission control: whether an accepted connection gets a worker.
 *
 * Decided before any fork, in this order: the deny and allow lists (judged
 * before any per-source state exists: a denied source gets at most a tally
 * that yields its place to anything else), a block earned by going over the
 * connection rate, the rate itself (a token bucket per source; running dry
 * blocks the source for block_ms), and the number of sessions the source
 * already has. Addresses in the exempt list skip the last three checks and
 * are not counted at all. Sources are counted by prefix (prefix_v4, prefix_v6). One
 * source over its limits is refused while everyone else is served; nothing
 * here ever refuses everyone, and nothing is admitted unchecked: the source
 * table always has room (see sources.h for what a full table forgets). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "admission-types.h"
#include "cidr.h"
#include "config.h"
#include "sources.h"
#include "util.h"

/* Sessions that can be live at once: every worker slot and the client
 * waiting for a fork retry. Their sources always fit in the table. */
#define ADMISSION_LIVE_MAX (CONFIG_MAX_CLIENTS_LIMIT + 1)

struct admission {
        struct sources sources;
        const struct config *cfg;       /* limits and lists; owned by the caller */
        uint64_t refused[_REFUSE_MAX];  /* since start */
};

int admission_init(struct admission *a, const struct config *cfg);
void admission_done(struct admission *a);

/* Decides for a new connection from peer. Returns true when it is admitted,
 * with what was counted in *ret_hold (the session must give it back through
 * admission_release()); false when it is refused, with the reason in
 * *ret_reason (*ret_hold is then not counted). */
bool admission_check(struct admission *a, const union sockaddr_any *peer, uint64_t now,
                     struct admission_hold *ret_hold, enum refuse_reason *ret_reason);

/* Counts a session that is already running (a recount after a reload). */
void admission_hold_session(struct admission *a, const union sockaddr_any *peer, uint64_t now,
                            struct admission_hold *hold);

/* A session ended (or an admitted client was dropped): gives back what
 * *hold counted, once; *hold is then not counted. */
void admission_release(struct admission *a, struct admission_hold *hold, uint64_t now);

/* The configuration changed (a reload): when the prefix lengths, the
 * table size or the exempt list changed, the table starts afresh and the live sessions are
 * recounted via `recount`, which must set the hold of every one of them. */
int admission_reconfigure(struct admission *a, const struct config *old,
                          void (*recount)(struct admission *a, void *userdata), void *userdata);

/* Reports what was refused since the last report: calls fn for the
 * max_lines sources (at most 32) with the most refusals, largest first
 * (sources 1), and once more with key NULL for the sum of all the others,
 * including sources forgotten meanwhile: `sources` is how many distinct
 * sources other than those named those were at most (never more than
 * there were), `rest` (REPORT_REST_* bits) what else the sum holds:
 * refusals of sources that had no entry (a denied source when the table
 * had no room for its tally), and refusals of a source named above that
 * were counted under an earlier entry of it, forgotten since (the tally
 * cannot tell how many were its, so they stay in the sum). Then forgets
 * the per-source counts and drops sources with nothing left to remember. */
enum {
        REPORT_REST_UNTRACKED = 1u << 0,
        REPORT_REST_NAMED = 1u << 1,
};
void admission_report(struct admission *a, uint64_t now, unsigned max_lines,
                      void (*fn)(const struct cidr *key, const uint32_t counts[_REFUSE_MAX],
                                 uint32_t sources, unsigned rest, void *userdata),
                      void *userdata);
/* Only the last step of admission_report(): drops sources with nothing
 * left to remember; their refusal counts are kept for the next report
 * (sources with refusals to report are never dropped). */
void admission_sweep(struct admission *a, uint64_t now);

/* Whether c exempts a client from peer from the per-source limits
 * (source_limits_exempt). */
bool admission_exempt(const struct config *c, const union sockaddr_any *peer);

uint32_t admission_sources(const struct admission *a);
/* Sources forgotten to make room, since start. */
uint64_t admission_forgotten(const struct admission *a);
const char *refuse_reason_name(int reason);
