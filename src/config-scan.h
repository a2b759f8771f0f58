/* Inside the config module only: a pass over the text of a configuration
 * file before (and after) libconfig reads it.
 *
 * libconfig 1.5 reads some text otherwise than it is written, without a
 * word: it wraps integer literals that do not fit (4294967297 reads as 1),
 * reads 1e999 as inf, drops a \x00 escape from a string, and ends the file
 * at a block comment or a string that is never closed, so that every
 * setting after it is silently ignored. The scan reports each of those as
 * "FILE:LINE: message", and lists every setting it sees (a name followed by
 * '=' or ':'), so that config_parse() can check that libconfig returned
 * exactly those: no text of the file may go unread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct config_seen {
        const char *name;       /* points into the text; not NUL-terminated */
        size_t len;
        unsigned line;
        unsigned depth;         /* 0 at the top level, +1 inside each { } */
};

struct config_scan {
        unsigned problems;      /* diagnostics this scan added */
        /* The text must not reach libconfig: it holds an @include (libconfig
         * would open the named file, past the size cap, and a FIFO would
         * block), or libconfig would read it otherwise than it is written
         * (its reading would only add confusing messages). */
        bool withhold;
        bool include;           /* an @include was found (withhold is set too) */
        unsigned last_line;     /* where the last token that is not a comment ends */
        struct config_seen *seen;
        size_t n_seen, n_alloc;
};

/* Scans text[0..len); never reads past len. Returns 0, or -ENOMEM (scan
 * then holds what was found so far). */
int config_scan(const char *name, const char *text, size_t len, struct config_scan *scan,
                struct config_diag *diag);
void config_scan_done(struct config_scan *scan);

/* A top-level setting as libconfig returned it. */
struct config_read {
        const char *name;
        unsigned line;
};

/* After libconfig read the text: every top-level setting the scan saw must
 * be one libconfig returned (got[], in its order, which is the text's), at
 * the same line, and the other way round. A setting only the scan saw is
 * text libconfig skipped; one only libconfig returned was read from text
 * the scan took for part of something else ("port = 7backlog = 5"). Either
 * is reported: the file does not clearly say what it means. */
void config_scan_compare(const char *name, const struct config_scan *scan, const struct config_read *got,
                         size_t n, struct config_diag *diag);

/* Reports libconfig's parse error (its line and text), made more precise
 * where the scan knows more: it names the key of a duplicate setting, and
 * puts an error past the end of the text on the last line that has one. */
void config_scan_parse_error(const char *name, const struct config_scan *scan, unsigned line, const char *what,
                             struct config_diag *diag);
