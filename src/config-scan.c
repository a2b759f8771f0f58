/* The scan of config-scan.h: a lexer just good enough to follow libconfig
 * 1.5's (lib/scanner.l). It skips strings and the three comment styles,
 * checks every number against what libconfig can store without wrapping,
 * lists every setting, and reports the text libconfig would read otherwise
 * than it is written: a block comment or a string that is never closed, a
 * \x00 escape, a control character in a string (a string spanning lines,
 * written or escaped), a carriage return that does not end a line, two strings
 * with no comma between them, a byte order mark, and @include. It also
 * names the key of a value that is a bare word or an address instead of a
 * quoted string, which libconfig only calls a syntax error. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config-keys.h"
#include "config-scan.h"

struct lexer {
        const char *name, *text;
        size_t len, i;
        unsigned line, depth;
        char prev;      /* last significant character, to tell a sign from a name */
        const char *pending;    /* the last name, until '=' or ':' makes it a setting */
        size_t pending_len;
        unsigned pending_line;
        struct config_scan *scan;
        struct config_diag *diag;
        bool bare_cr;   /* reported once */
        /* The setting whose value comes next (after its '=' or ':'), and
         * how deep in [ ] or ( ) its value is: to name it when a value is a
         * bare word that should have been a quoted string. */
        const char *setting;
        size_t setting_len;
        bool value_next;
        unsigned list;
        int err;
};

/* One problem at line `at` of the text being scanned, counted in the scan. */
__attribute__((format(printf, 3, 4)))
static void problem(struct lexer *lx, unsigned at, const char *fmt, ...) {
        char what[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        config_diag_add(lx->diag, "%s:%u: %s", lx->name, at, what);
        lx->scan->problems++;
}

static bool is_name_char(char c) {
        return isalnum((unsigned char) c) || c == '_' || c == '-' || c == '*';
}

static bool at(const struct lexer *lx, size_t i, char c) {
        return i < lx->len && lx->text[i] == c;
}

static void check_number(struct lexer *lx, const char *tok, size_t len) {
        char buf[128];
        size_t digits = len;
        bool is_long, hex, is_float;

        if (len >= sizeof(buf)) {
                problem(lx, lx->line, "number '%.20s...' is too long", tok);
                return;
        }
        while (digits > 0 && (tok[digits - 1] == 'L' || tok[digits - 1] == 'l'))
                digits--;
        is_long = digits < len;
        memcpy(buf, tok, digits);
        buf[digits] = 0;

        hex = strstr(buf, "0x") || strstr(buf, "0X");
        is_float = !hex && strpbrk(buf, ".eE");

        /* libconfig reads "." and "-." as 0 (which means "no limit" for
         * most keys): a number needs a digit. */
        if (!strpbrk(buf, "0123456789")) {
                problem(lx, lx->line, "'%.*s' is not a number", (int) len, tok);
                return;
        }
        if (hex && buf[0] == '-') {
                problem(lx, lx->line, "hexadecimal numbers cannot be negative: %.*s", (int) len, tok);
                return;
        }

        errno = 0;
        if (is_float) {
                double v = strtod(buf, NULL);
                if (errno == ERANGE || !isfinite(v))
                        problem(lx, lx->line, "number %.*s is out of range", (int) len, tok);
                return;
        }

        /* libconfig reads hex literals as bit patterns: 0xffffffff is -1.
         * Only values that keep their meaning are accepted. */
        bool overflow;
        if (hex) {
                const char *p = buf + (buf[0] == '+' || buf[0] == '-');
                uint64_t u = strtoull(p, NULL, 16);
                overflow = errno == ERANGE || u > (is_long ? (uint64_t) INT64_MAX : (uint64_t) INT32_MAX);
        } else {
                long long v = strtoll(buf, NULL, 10);
                overflow = errno == ERANGE || (!is_long && (v > INT32_MAX || v < INT32_MIN));
        }
        if (!overflow)
                return;
        if (is_long)
                problem(lx, lx->line, "integer %.*s does not fit in 64 bits", (int) len, tok);
        else
                problem(lx, lx->line, "integer %s does not fit in 32 bits; "
                        "write it with an L suffix (%sL) if it is meant to be that large", buf, buf);
}

/* "@include" anywhere, strings and comments included: whether libconfig
 * would take a given occurrence as a directive depends on its lexer's state
 * (a string left open on the line before hides it, for one), and guessing
 * that state wrong would let it open a file. No configuration of this daemon
 * needs those bytes, so any of them refuses the file. */
static void check_include(struct lexer *lx) {
        const char *p = memmem(lx->text, lx->len, "@include", 8);
        unsigned line = 1;

        if (!p)
                return;
        for (const char *q = lx->text; q < p; q++)
                line += *q == '\n';
        lx->scan->include = lx->scan->withhold = true;
        problem(lx, line, "@include is not supported; keep the whole configuration in one file");
}

static void check_bom(struct lexer *lx) {
        if (lx->len >= 3 && memcmp(lx->text, "\xef\xbb\xbf", 3) == 0) {
                lx->scan->withhold = true;
                problem(lx, 1, "the file starts with a byte order mark (bytes ef bb bf); save it without one");
        }
}

/* Outside strings (where it is just a byte of the value), a carriage
 * return must end a line with a line feed: libconfig counts lines by line
 * feeds only, and a '#' comment runs on past a lone one, so an editor would
 * show text on a line of its own that the parser takes for a comment. */
static void check_cr(struct lexer *lx, size_t i) {
        if (lx->text[i] != '\r' || at(lx, i + 1, '\n') || lx->bare_cr)
                return;
        lx->bare_cr = lx->scan->withhold = true;
        problem(lx, lx->line, "a carriage return that does not end a line (old Mac line endings?); "
                "the parser would not see a new line there");
}

static void add_seen(struct lexer *lx) {
        struct config_scan *s = lx->scan;

        if (s->n_seen == s->n_alloc) {
                size_t n = s->n_alloc ? s->n_alloc * 2 : 32;
                struct config_seen *p = realloc(s->seen, n * sizeof(*p));
                if (!p) {
                        lx->err = -ENOMEM;
                        return;
                }
                s->seen = p;
                s->n_alloc = n;
        }
        s->seen[s->n_seen++] = (struct config_seen) {
                .name = lx->pending, .len = lx->pending_len, .line = lx->pending_line, .depth = lx->depth,
        };
}

static void skip_block_comment(struct lexer *lx) {
        unsigned start = lx->line;
        size_t i;

        for (i = lx->i + 2; i < lx->len && !(lx->text[i] == '*' && at(lx, i + 1, '/')); i++) {
                check_cr(lx, i);
                lx->line += lx->text[i] == '\n';
        }
        if (i >= lx->len) {
                lx->scan->withhold = true;
                problem(lx, start, "a /* comment that is never closed; it would hide the rest of the file");
        }
        lx->i = i + 2;
}

static bool is_control(unsigned char c) {
        return c < 0x20 || c == 0x7f;
}

static int hex_digit(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
               c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The byte an escape at text[i] ('\\') stands for in libconfig 1.5, when it
 * is a control character: \n, \r, \t, \f, or \xHH below 0x20 or 0x7f.
 * -1 for every other escape. */
static int escaped_control(const struct lexer *lx, size_t i) {
        char e = i + 1 < lx->len ? lx->text[i + 1] : 0;
        int hi, lo;

        switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case 'f': return '\f';
        case 'x':
        case 'X':
                if (i + 3 >= lx->len || (hi = hex_digit(lx->text[i + 2])) < 0 || (lo = hex_digit(lx->text[i + 3])) < 0)
                        return -1;
                return is_control((unsigned char) (hi << 4 | lo)) ? hi << 4 | lo : -1;
        default:
                return -1;
        }
}

/* No value of the configuration holds a control character (below 0x20, or
 * 0x7f), written or escaped: a string that runs past the end of its line
 * would hide settings in it (a key spanning lines), and a tab, an escape
 * sequence or a carriage return in a value prints as something else than
 * it is. Reported once a string, at the line where it starts. */
static void skip_string(struct lexer *lx) {
        unsigned start = lx->line;
        bool nul = false, control = false;
        size_t i;

        for (i = lx->i + 1; i < lx->len && lx->text[i] != '"'; i++) {
                int c = (unsigned char) lx->text[i];

                if (c == '\\' && i + 1 < lx->len) {
                        c = escaped_control(lx, i);
                        /* libconfig drops a \x00 (a C string cannot hold it). */
                        if (c == 0) {
                                if (!nul)
                                        problem(lx, lx->line, "a string cannot hold a NUL byte (\\x00); "
                                                "the parser would drop it");
                                nul = true;
                        } else if (c > 0 && !control) {
                                control = true;
                                problem(lx, start, "a string cannot hold a control character (escaped "
                                        "as %.*s)", lx->text[i + 1] == 'x' || lx->text[i + 1] == 'X' ? 4 : 2,
                                        lx->text + i);
                        }
                        i++;
                } else if (is_control((unsigned char) c) && !control) {
                        control = true;
                        if (c == '\n')
                                problem(lx, start, "a string cannot run past the end of its line; close "
                                        "it with '\"' on the line where it starts");
                        else
                                problem(lx, start, "a string cannot hold a control character (byte 0x%02x)", c);
                }
                lx->line += lx->text[i] == '\n';
        }
        if (i >= lx->len) {
                lx->scan->withhold = true;
                problem(lx, start, "a string that is never closed; it would hide the rest of the file");
        }
        lx->i = i + 1;
}

static bool number_starts(const struct lexer *lx, char c) {
        size_t i = lx->i;

        if (isdigit((unsigned char) c))
                return true;
        if (c == '.')
                return (i + 1 < lx->len && isdigit((unsigned char) lx->text[i + 1])) || strchr("=:,[(", lx->prev);
        return (c == '-' || c == '+') && strchr("=:,[(", lx->prev) && i + 1 < lx->len &&
               (isdigit((unsigned char) lx->text[i + 1]) || lx->text[i + 1] == '.');
}

static void lex_number(struct lexer *lx) {
        const char *t = lx->text;
        size_t start = lx->i++;

        while (lx->i < lx->len && (isalnum((unsigned char) t[lx->i]) || t[lx->i] == '.' ||
                                   ((t[lx->i] == '-' || t[lx->i] == '+') &&
                                    (t[lx->i - 1] == 'e' || t[lx->i - 1] == 'E') &&
                                    !memchr(t + start, 'x', lx->i - start) &&
                                    !memchr(t + start, 'X', lx->i - start))))
                lx->i++;
        check_number(lx, t + start, lx->i - start);
}

/* A bare word where a value goes (log_level = info;): libconfig reads only
 * true and false there and calls anything else a syntax error. */
static void check_bare_word(struct lexer *lx, const char *word, size_t len) {
        int n = (int) (len > 64 ? 64 : len), k = (int) (lx->setting_len > 64 ? 64 : lx->setting_len);

        if ((len == 4 && strncasecmp(word, "true", 4) == 0) || (len == 5 && strncasecmp(word, "false", 5) == 0))
                return;
        lx->scan->withhold = true;
        if (lx->list)
                problem(lx, lx->line, "%.*s: list entry %.*s is not quoted; write it as \"%.*s\"", k,
                        lx->setting, n, word, n, word);
        else
                problem(lx, lx->line, "%.*s = %.*s: a string value must be in double quotes; write %.*s = "
                        "\"%.*s\";", k, lx->setting, n, word, k, lx->setting, n, word);
}

/* An address or prefix written unquoted as a list entry (deny = [ 192.0.2.1 ];,
 * listen = [ ::1 ];): libconfig reads a number, then a syntax error (or a
 * mismatched element type). Told by what no number or name holds: a ':', a
 * '/', or more than one '.'. Returns whether it was one (then skipped). */
static bool check_unquoted_address(struct lexer *lx) {
        const char *t = lx->text + lx->i;
        size_t len = 0, dots = 0;
        bool colon_or_slash = false;
        int n, k;

        if (!lx->setting || lx->list == 0 || !strchr("[(,", lx->prev) ||
            !(isxdigit((unsigned char) *t) || *t == ':')) /* not a comment's '/' */
                return false;
        while (lx->i + len < lx->len && (isxdigit((unsigned char) t[len]) || strchr(":./%", t[len]) != NULL) &&
               t[len] != '\0') {
                dots += t[len] == '.';
                colon_or_slash |= t[len] == ':' || t[len] == '/';
                len++;
        }
        if (len == 0 || (!colon_or_slash && dots < 2))
                return false;
        n = (int) (len > 64 ? 64 : len);
        k = (int) (lx->setting_len > 64 ? 64 : lx->setting_len);
        lx->scan->withhold = true;
        problem(lx, lx->line, "%.*s: list entry %.*s is not quoted; an address or prefix must be in double quotes: "
                "write it as \"%.*s\"", k, lx->setting, n, t, n, t);
        lx->i += len;
        lx->prev = '"';
        lx->value_next = false;
        lx->pending = NULL;
        lx->scan->last_line = lx->line;
        return true;
}

/* One token, or a run of blanks or a comment. */
static void lex_one(struct lexer *lx) {
        char c = lx->text[lx->i];
        bool significant = true;

        if (check_unquoted_address(lx))
                return;
        if (c == '\n') {
                lx->line++;
                lx->i++;
                significant = false;
        } else if (isspace((unsigned char) c)) {
                check_cr(lx, lx->i++);
                significant = false;
        } else if (c == '#' || (c == '/' && at(lx, lx->i + 1, '/'))) {
                while (lx->i < lx->len && lx->text[lx->i] != '\n')
                        check_cr(lx, lx->i++);
                significant = false;
        } else if (c == '/' && at(lx, lx->i + 1, '*')) {
                skip_block_comment(lx);
                significant = false;
        } else if (c == '"') {
                /* libconfig joins adjacent strings as C does: in a list that
                 * is a missing comma ("::" "1" would read as "::1"). */
                if (lx->prev == '"')
                        problem(lx, lx->line, "two strings with no comma between them would be read as one; "
                                "separate list entries with ','");
                skip_string(lx);
                lx->prev = '"';
                lx->value_next = false;
        } else if (c == '@') {
                while (lx->i < lx->len && lx->text[lx->i] != '\n')
                        lx->i++;
                lx->prev = '@';
        } else if (number_starts(lx, c)) {
                lex_number(lx);
                lx->prev = '0';
                lx->value_next = false;
        } else if (is_name_char(c)) {
                lx->pending = lx->text + lx->i;
                lx->pending_line = lx->line;
                while (lx->i < lx->len && is_name_char(lx->text[lx->i]))
                        lx->i++;
                lx->pending_len = (size_t) (lx->text + lx->i - lx->pending);
                if (lx->setting && (lx->value_next || (lx->list > 0 && strchr("[(,", lx->prev))))
                        check_bare_word(lx, lx->pending, lx->pending_len);
                lx->value_next = false;
                lx->prev = 'a';
                lx->scan->last_line = lx->line;
                return; /* keeps the name pending */
        } else {
                bool assign = (c == '=' || c == ':') && lx->pending;

                if (assign) {
                        add_seen(lx);
                        lx->setting = lx->pending;
                        lx->setting_len = lx->pending_len;
                        lx->list = 0;
                }
                lx->value_next = assign;
                if (c == '{')
                        lx->depth++;
                else if (c == '}' && lx->depth > 0)
                        lx->depth--;
                else if (c == '[' || c == '(')
                        lx->list++;
                else if ((c == ']' || c == ')') && lx->list > 0)
                        lx->list--;
                else if (c == ';')
                        lx->setting = NULL;
                lx->prev = c;
                lx->i++;
        }
        if (significant) {
                lx->pending = NULL;
                lx->scan->last_line = lx->line;
        }
}

int config_scan(const char *name, const char *text, size_t len, struct config_scan *scan,
                struct config_diag *diag) {
        struct lexer lx = {
                .name = name, .text = text, .len = len, .line = 1, .prev = '=', .scan = scan, .diag = diag,
        };

        check_include(&lx);
        check_bom(&lx);
        while (lx.i < len && lx.err == 0)
                lex_one(&lx);
        return lx.err;
}

void config_scan_done(struct config_scan *scan) {
        free(scan->seen);
        scan->seen = NULL;
        scan->n_seen = scan->n_alloc = 0;
}

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
