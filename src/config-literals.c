/* A lexer just good enough to find libconfig's numeric literals: it skips
 * strings and the three comment styles, treats names as opaque words, and
 * checks every number against what libconfig can store without wrapping.
 * It also refuses @include, which would read files past the size cap (and
 * a FIFO would block the daemon). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static bool is_name_char(char c) {
        return isalnum((unsigned char) c) || c == '_' || c == '-' || c == '*';
}

static void check_number(const char *name, unsigned line, const char *tok, size_t len,
                         struct config_diag *diag, unsigned *problems) {
        char buf[128];
        size_t digits = len;
        bool is_long, hex, is_float;

        if (len >= sizeof(buf)) {
                config_diag_add(diag, "%s:%u: number '%.20s...' is too long", name, line, tok);
                (*problems)++;
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
                config_diag_add(diag, "%s:%u: '%.*s' is not a number", name, line, (int) len, tok);
                (*problems)++;
                return;
        }
        if (hex && buf[0] == '-') {
                config_diag_add(diag, "%s:%u: hexadecimal numbers cannot be negative: %.*s", name, line,
                                (int) len, tok);
                (*problems)++;
                return;
        }

        errno = 0;
        if (is_float) {
                double v = strtod(buf, NULL);
                if (errno == ERANGE || !isfinite(v)) {
                        config_diag_add(diag, "%s:%u: number %.*s is out of range", name, line, (int) len, tok);
                        (*problems)++;
                }
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
                config_diag_add(diag, "%s:%u: integer %.*s does not fit in 64 bits", name, line, (int) len, tok);
        else
                config_diag_add(diag, "%s:%u: integer %s does not fit in 32 bits; "
                                "write it with an L suffix (%sL) if it is meant to be that large",
                                name, line, buf, buf);
        (*problems)++;
}

/* "@include" anywhere, strings and comments included: whether libconfig
 * would take a given occurrence as a directive depends on its lexer's state
 * (a string left open on the line before hides it, for one), and guessing
 * that state wrong would let it open a file. No configuration of this daemon
 * needs those bytes, so any of them refuses the file. */
static unsigned check_include(const char *name, const char *text, size_t len, struct config_diag *diag,
                              bool *include) {
        const char *at = memmem(text, len, "@include", 8);
        unsigned line = 1;

        if (!at)
                return 0;
        for (const char *p = text; p < at; p++)
                line += *p == '\n';
        *include = true;
        config_diag_add(diag, "%s:%u: @include is not supported; keep the whole configuration in one file",
                        name, line);
        return 1;
}

unsigned config_check_literals(const char *name, const char *text, size_t len, struct config_diag *diag,
                               bool *include) {
        unsigned line = 1, problems = check_include(name, text, len, diag, include);
        char prev = '=';  /* last significant character, to tell a sign from a name */
        size_t i = 0;

        while (i < len) {
                char c = text[i];

                if (c == '\n') {
                        line++;
                        i++;
                } else if (isspace((unsigned char) c)) {
                        i++;
                } else if (c == '#' || (c == '/' && i + 1 < len && text[i + 1] == '/')) {
                        while (i < len && text[i] != '\n')
                                i++;
                } else if (c == '/' && i + 1 < len && text[i + 1] == '*') {
                        for (i += 2; i < len && !(text[i] == '*' && i + 1 < len && text[i + 1] == '/'); i++)
                                if (text[i] == '\n')
                                        line++;
                        i += 2;
                } else if (c == '"') {
                        for (i++; i < len && text[i] != '"'; i++) {
                                if (text[i] == '\\' && i + 1 < len)
                                        i++;
                                if (text[i] == '\n')
                                        line++;
                        }
                        i++;
                        prev = '"';
                } else if (c == '@') {
                        while (i < len && text[i] != '\n')
                                i++;
                } else if (isdigit((unsigned char) c) ||
                           (c == '.' && ((i + 1 < len && isdigit((unsigned char) text[i + 1])) ||
                                         strchr("=:,[(", prev))) ||
                           ((c == '-' || c == '+') && strchr("=:,[(", prev) && i + 1 < len &&
                            (isdigit((unsigned char) text[i + 1]) || text[i + 1] == '.'))) {
                        size_t start = i++;
                        while (i < len && (isalnum((unsigned char) text[i]) || text[i] == '.' ||
                                           ((text[i] == '-' || text[i] == '+') &&
                                            (text[i - 1] == 'e' || text[i - 1] == 'E') &&
                                            !memchr(text + start, 'x', i - start) &&
                                            !memchr(text + start, 'X', i - start))))
                                i++;
                        check_number(name, line, text + start, i - start, diag, &problems);
                        prev = '0';
                } else if (is_name_char(c)) {
                        while (i < len && is_name_char(text[i]))
                                i++;
                        prev = 'a';
                } else {
                        prev = c;
                        i++;
                }
        }
        return problems;
}
