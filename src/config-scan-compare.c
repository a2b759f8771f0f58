/* The scan's second half (config-scan.h): set against what libconfig read,
 * it names the settings one of them missed, and it turns libconfig's terse
 * parse errors into messages that name the key and the line. */
#include <string.h>

#include "config-scan.h"

static bool same_name(const char *a, size_t len, const char *b) {
        return strlen(b) == len && memcmp(a, b, len) == 0;
}

/* Both lists are in the order of the text, so one walk compares them. */
void config_scan_compare(const char *name, const struct config_scan *scan, const struct config_read *got,
                         size_t n, struct config_diag *diag) {
        size_t i = 0, j = 0;

        while (i < n || j < scan->n_seen) {
                const struct config_seen *t = j < scan->n_seen ? &scan->seen[j] : NULL;
                const struct config_read *g = i < n ? &got[i] : NULL;

                if (t && t->depth > 0) {
                        j++; /* inside a group, which no key takes: an error anyway */
                } else if (t && g && same_name(t->name, t->len, g->name) && t->line == g->line) {
                        i++;
                        j++;
                } else if (t && (!g || t->line <= g->line)) {
                        config_diag_add(diag, "%s:%u: '%.*s' is not read by the parser (is a comment or a "
                                        "string left open before it?)", name, t->line,
                                        (int) (t->len > 64 ? 64 : t->len), t->name);
                        j++;
                } else {
                        config_diag_add(diag, "%s:%u: '%.64s' is read as a setting where the text does not "
                                        "clearly start one; end each setting with ';'", name, g->line, g->name);
                        i++;
                }
        }
}

/* The setting on `line` whose name was set before at the same depth. */
static const struct config_seen *find_duplicate(const struct config_scan *scan, unsigned line,
                                                const struct config_seen **first) {
        for (size_t j = 0; j < scan->n_seen; j++) {
                const struct config_seen *t = &scan->seen[j];

                if (t->line != line)
                        continue;
                for (size_t k = 0; k < j; k++)
                        if (scan->seen[k].depth == t->depth && scan->seen[k].len == t->len &&
                            memcmp(scan->seen[k].name, t->name, t->len) == 0) {
                                *first = &scan->seen[k];
                                return t;
                        }
        }
        return NULL;
}

void config_scan_parse_error(const char *name, const struct config_scan *scan, unsigned line, const char *what,
                             struct config_diag *diag) {
        const struct config_seen *dup, *first = NULL;

        if (strcmp(what, "duplicate setting name") == 0 && (dup = find_duplicate(scan, line, &first))) {
                config_diag_add(diag, "%s:%u: duplicate setting '%.*s' (first set on line %u)", name, line,
                                (int) (dup->len > 64 ? 64 : dup->len), dup->name, first->line);
                return;
        }
        /* At the end of the text libconfig counts lines past the last one. */
        if (scan->last_line > 0 && line > scan->last_line) {
                config_diag_add(diag, "%s:%u: %s at the end of the file (is the last setting incomplete?)",
                                name, scan->last_line, what);
                return;
        }
        config_diag_add(diag, "%s:%u: %s", name, line, what);
}
