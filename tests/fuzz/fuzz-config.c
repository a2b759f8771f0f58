/* libFuzzer harness for the configuration module (src/config*.c, cidr.c).
 *
 * Every input is treated as the text of a configuration file and must leave
 * the module's contract intact (src/config.h):
 *   - config_parse() either returns 0 with no diagnostics and a struct in
 *     which every key holds a value its entry in config_keys[] allows, or
 *     returns a negative errno with at least one diagnostic and leaves *out
 *     untouched; the diagnostics stay NUL-terminated within their buffer;
 *   - a parsed configuration dumps to text that parses back to the same
 *     struct byte for byte, and that text dumps to itself, except a secret
 *     (log_hash_key), which a dump never shows and so loads back empty;
 *   - config_describe_changes() reports a change exactly when two structs
 *     differ, asks for a restart exactly when a key that is not reloadable
 *     differs, never writes past the buffer it is given, and says the same
 *     whatever the value of a secret key (only that it changed);
 *   - config_scan() reads only the bytes it is given and counts what it
 *     reports, and config_parse() reports at least as much;
 *   - no text is ignored: an accepted text followed by a line with an
 *     unknown key is refused, naming that key at its line (a comment or a
 *     string left open at the end of an accepted text would swallow it);
 *   - at a reload, config_keep_restart_keys() leaves only reloadable keys
 *     differing from the running configuration, and names exactly the
 *     restart-only keys that differed.
 * A violation calls abort(), which libFuzzer reports as a crash with the
 * input that caused it. Memory errors, leaks and undefined behaviour are
 * caught by ASan, LSan and UBSan.
 *
 * The range checks walk config_keys[] (config-keys.h, internal to the config
 * module), so a new key is covered as soon as it is in the table; a new kind
 * of key stops the harness until it is taught what that kind allows.
 *
 * Finding F1 (tests/fuzz/README.md), now fixed: config_parse() refused
 * @include only after handing the text to libconfig, which opened and read
 * the included file (a FIFO blocked it for ever). Every input on which
 * libconfig would act on an include directive must now be refused without
 * libconfig seeing it: the harness checks that, and a regression would show
 * as a hang (libFuzzer's -timeout) or a refused-input check failing. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "config-scan.h"
#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
        do {                                                                                 \
                if (!(cond)) {                                                               \
                        fprintf(stderr, "fuzz-config.c:%d: check failed: %s\n", __LINE__,   \
                                #cond);                                                      \
                        abort();                                                             \
                }                                                                            \
        } while (0)

/* The longest value config_format_value() writes: 64 IPv6 prefixes. */
#define VALUE_MAX (CONFIG_MAX_CIDRS * (CIDR_STR_MAX + 4) + 8)

/* libconfig 1.5's scanner (lib/scanner.l) starts an include on
 * ^[ \t]*@include[ \t]+\"  -- the same test, on every line. */
static bool has_include_directive(const char *text, size_t len) {
        for (size_t i = 0; i < len; i++) {
                size_t j = i, blanks;

                if (i > 0 && text[i - 1] != '\n')
                        continue;
                while (j < len && (text[j] == ' ' || text[j] == '\t'))
                        j++;
                if (len - j < 8 || memcmp(text + j, "@include", 8) != 0)
                        continue;
                j += 8;
                blanks = j;
                while (j < len && (text[j] == ' ' || text[j] == '\t'))
                        j++;
                if (j > blanks && j < len && text[j] == '"')
                        return true;
        }
        return false;
}

static void check_diag(const struct config_diag *d) {
        CHECK(d->len < sizeof(d->text));
        CHECK(d->text[d->len] == 0);
        /* Messages may quote the input, which config_parse() only takes
         * without NUL bytes, so the text is one C string of length len. */
        CHECK(strlen(d->text) == d->len);
        CHECK(d->count == 0 || d->len > 0);
}

static bool all_zero(const void *p, size_t n) {
        const unsigned char *b = p;

        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

/* A NUL-terminated string in a fixed array, with only zeros after it (so
 * equal configurations are equal byte for byte). Returns its length. */
static size_t check_fixed_string(const char *s, size_t size) {
        size_t n = strnlen(s, size);

        CHECK(n < size);
        CHECK(all_zero(s + n, size - n));
        return n;
}

static void check_listen(const struct config *c, const struct key *k) {
        CHECK(c->n_listen >= k->min && c->n_listen <= k->max && c->n_listen <= CONFIG_MAX_LISTEN);
        for (uint32_t i = 0; i < CONFIG_MAX_LISTEN; i++) {
                const char *a = c->listen[i];
                size_t n = check_fixed_string(a, CONFIG_ADDR_MAX);
                unsigned char bin[sizeof(struct in6_addr)];

                if (i >= c->n_listen) {
                        CHECK(n == 0);
                        continue;
                }
                CHECK(inet_pton(AF_INET, a, bin) == 1 || inet_pton(AF_INET6, a, bin) == 1);
                for (uint32_t j = 0; j < i; j++)
                        CHECK(strcmp(c->listen[j], a) != 0);
        }
}

static void check_cidrs(const struct config *c, const struct key *k) {
        const struct cidr *list = config_cfield(c, k);
        uint32_t n = *(const uint32_t *) ((const char *) c + k->count_offset);
        size_t tail = offsetof(struct cidr, len) + sizeof(list[0].len);

        CHECK(n >= k->min && n <= k->max && n <= CONFIG_MAX_CIDRS);
        for (uint32_t i = 0; i < CONFIG_MAX_CIDRS; i++) {
                const struct cidr *p = &list[i];

                /* Padding after len included: byte-for-byte equality. */
                if (!all_zero((const char *) p + tail, sizeof(*p) - tail)) {
                        fprintf(stderr, "fuzz-config.c: %s[%u]: the %zu byte(s) after len are not zero "
                                "(struct padding copied from an uninitialized struct cidr?)\n",
                                k->name, i, sizeof(*p) - tail);
                        abort();
                }
                if (i >= n) {
                        CHECK(all_zero(p, sizeof(*p)));
                        continue;
                }
                CHECK(p->len <= 128);
                for (unsigned bit = p->len; bit < 128; bit++)
                        CHECK(!(p->addr.s6_addr[bit / 8] & (0x80 >> (bit % 8))));
        }
}

static void check_range(const struct key *k, uint64_t v, bool zero_means_no_limit) {
        if ((zero_means_no_limit && v == 0) || (v >= k->min && v <= k->max))
                return;
        fprintf(stderr, "fuzz-config.c: %s holds %" PRIu64 ", outside %" PRIu64 "..%" PRIu64
                " (its entry in config_keys[])\n", k->name, v, k->min, k->max);
        abort();
}

static void check_key(const struct config *c, const struct key *k) {
        const void *p = config_cfield(c, k);
        size_t n;

        switch (k->kind) {
        case KIND_U16:
                check_range(k, *(const uint16_t *) p, false);
                return;
        case KIND_U32:
                check_range(k, *(const uint32_t *) p, false);
                return;
        case KIND_U64:
                check_range(k, *(const uint64_t *) p, false);
                return;
        case KIND_DURATION: case KIND_RATE:
                check_range(k, *(const uint32_t *) p, true);
                return;
        case KIND_LOG_LEVEL:
                CHECK(config_log_level_from_name(config_log_level_name(c->log_level)) == c->log_level);
                return;
        case KIND_ADDR_MODE:
                CHECK(config_log_addresses_from_name(config_log_addresses_name(c->log_addresses)) ==
                      c->log_addresses);
                return;
        case KIND_ADDRESSES:
                check_listen(c, k);
                return;
        case KIND_CIDRS:
                check_cidrs(c, k);
                return;
        case KIND_CREDENTIAL:
                n = check_fixed_string(p, k->max + 1);
                CHECK(n == 0 || credential_name_valid(p));
                return;
        case KIND_SECRET:
                n = check_fixed_string(p, k->max + 1);
                CHECK(n == 0 || (n >= k->min && n <= k->max));
                CHECK(!memchr(p, '"', n) && !memchr(p, '\\', n));
                return;
        }
        fprintf(stderr, "fuzz-config.c: key %s has kind %d, which this harness does not know; "
                "teach check_key() what it allows\n", k->name, (int) k->kind);
        abort();
}

static void check_valid(const struct config *c) {
        for (size_t i = 0; i < config_n_keys; i++)
                check_key(c, &config_keys[i]);
}

static char *dump(const struct config *c, size_t *len) {
        char *buf = NULL;
        FILE *f = open_memstream(&buf, len);

        CHECK(f);
        CHECK(config_dump(c, f) == 0);
        CHECK(fclose(f) == 0);
        CHECK(buf && strlen(buf) == *len);
        return buf;
}

static void check_round_trip(const struct config *c) {
        struct config again, expect = *c;
        struct config_diag d = { 0 };
        size_t len, len2;
        char *text = dump(c, &len), *text2;
        int r;

        if (c->log_hash_key[0]) {
                CHECK(!strstr(text, c->log_hash_key));
                memset(expect.log_hash_key, 0, sizeof(expect.log_hash_key));
                free(text);
                text = dump(&expect, &len);
        }
        memset(&again, 0x5a, sizeof(again));
        r = config_parse("dump", text, len, &again, &d);
        check_diag(&d);
        if (r != 0 || memcmp(&expect, &again, sizeof(again)) != 0) {
                fprintf(stderr, "round trip failed (config_parse: %d):\n--- dump\n%s--- diagnostics\n%s",
                        r, text, d.text);
                abort();
        }
        text2 = dump(&again, &len2);
        CHECK(len == len2 && memcmp(text, text2, len) == 0);
        free(text2);
        free(text);
}

static bool key_differs(const struct config *a, const struct config *b, const struct key *k) {
        static char va[VALUE_MAX], vb[VALUE_MAX];

        CHECK(config_format_value(a, k, va, sizeof(va)) < (int) sizeof(va));
        CHECK(config_format_value(b, k, vb, sizeof(vb)) < (int) sizeof(vb));
        return strcmp(va, vb) != 0;
}

/* Describes into the first size bytes of buf and checks that the SENTINEL
 * bytes after them are untouched. */
#define SENTINEL 64
static void describe(const struct config *old, const struct config *new, char *buf, size_t size,
                     unsigned *n, bool *restart) {
        memset(buf, 0x7e, size + SENTINEL);
        *restart = true;
        *n = config_describe_changes(old, new, buf, size, restart);
        for (size_t k = size; k < size + SENTINEL; k++)
                CHECK(buf[k] == 0x7e);
        if (size > 0)
                CHECK(memchr(buf, 0, size) != NULL);
}

/* Small sizes exercise the truncation paths of the description. */
static void check_describe(const struct config *old, const struct config *new) {
        static const size_t sizes[] = { 0, 1, 7, 40, 200, 4096 };
        static char buf[4096 + SENTINEL], other[4096 + SENTINEL];
        bool restart = false, expect_restart = false;
        unsigned n, expect = 0;

        for (size_t i = 0; i < config_n_keys; i++)
                if (key_differs(old, new, &config_keys[i])) {
                        expect++;
                        expect_restart |= !config_keys[i].reloadable;
                }
        CHECK((expect == 0) == (memcmp(old, new, sizeof(*old)) == 0));

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                describe(old, new, buf, sizes[i], &n, &restart);
                CHECK(n == expect);
                CHECK(restart == expect_restart);
        }

        /* The secret never reaches the description: with another value for
         * it (still different from the old one) the text is the same. */
        if (strcmp(old->log_hash_key, new->log_hash_key) != 0 && new->log_hash_key[0]) {
                struct config alt = *new;
                unsigned n2;

                memset(alt.log_hash_key, 0, sizeof(alt.log_hash_key));
                memset(alt.log_hash_key, 'Q', CONFIG_HASH_KEY_MAX);
                if (strcmp(alt.log_hash_key, old->log_hash_key) == 0)
                        alt.log_hash_key[0] = 'R';
                describe(old, new, buf, 4096, &n, &restart);
                describe(old, &alt, other, 4096, &n2, &restart);
                CHECK(n == n2);
                CHECK(strcmp(buf, other) == 0);
        }
}

/* Nothing after an accepted text can go unread: a line with an unknown
 * key appended to it must be reported, at its own line. */
static void check_tail_is_read(const char *text, size_t size) {
        static const char tail[] = "\nfuzz_tail_key = 1;\n";
        struct config c;
        struct config_diag d = { 0 };
        char *both = malloc(size + sizeof(tail)), expect[64];
        unsigned line = 2;

        CHECK(both);
        memcpy(both, text, size);
        memcpy(both + size, tail, sizeof(tail));
        for (size_t i = 0; i < size; i++)
                line += text[i] == '\n';
        snprintf(expect, sizeof(expect), "fuzz.conf:%u: unknown key 'fuzz_tail_key'", line);
        if (config_parse("fuzz.conf", both, size + sizeof(tail) - 1, &c, &d) == 0 || !strstr(d.text, expect)) {
                fprintf(stderr, "an accepted text hides what follows it; expected \"%s\", got:\n%s", expect,
                        d.text);
                abort();
        }
        free(both);
}

/* Whether a key waits for the restart, as echo-mpserv.conf(5) says: a key
 * the table marks restart-only, and log_addresses when the file switches to
 * "hash" while the key's source changes (it waits for its key). */
static bool waits(const struct key *k, const struct config *running, const struct config *file) {
        if (!k->reloadable)
                return true;
        return k->kind == KIND_ADDR_MODE && file->log_addresses == LOG_ADDRESSES_HASH &&
               running->log_addresses != LOG_ADDRESSES_HASH &&
               (strcmp(file->log_hash_key_credential, running->log_hash_key_credential) != 0 ||
                strcmp(file->log_hash_key, running->log_hash_key) != 0);
}

/* A reload keeps the running values of the keys that wait for a restart. */
static void check_keep_restart_keys(const struct config *running, const struct config *file) {
        struct config next = *file;
        char pending[512], expect[512] = "";
        size_t used = 0;
        unsigned n, differ = 0;

        for (size_t i = 0; i < config_n_keys; i++)
                if (waits(&config_keys[i], running, file) && key_differs(running, file, &config_keys[i]))
                        used += (size_t) snprintf(expect + used, sizeof(expect) - used, "%s%s",
                                                  differ++ ? ", " : "", config_keys[i].name);
        n = config_keep_restart_keys(&next, running, pending, sizeof(pending));
        CHECK(n == differ);
        CHECK(strcmp(pending, expect) == 0);
        for (size_t i = 0; i < config_n_keys; i++) {
                const struct key *k = &config_keys[i];
                CHECK(key_differs(&next, waits(k, running, file) ? running : file, k) == false);
        }
        check_valid(&next);
}

/* Parses one text and checks everything above on the result. */
static void check_text(const char *data, size_t size) {
        struct config parsed, untouched, defaults;
        struct config_diag d = { 0 }, lit = { 0 };
        struct config_scan scan = { 0 };
        char *text;
        int r;

        /* The scan takes (text, len) and must not read past len: data is a
         * heap block of exactly size bytes, so ASan sees any over-read. */
        CHECK(config_scan("fuzz.conf", data, size, &scan, &lit) == 0);
        CHECK(scan.problems == lit.count);
        CHECK(!scan.include || scan.withhold);
        check_diag(&lit);
        config_scan_done(&scan);

        /* config_parse() hands the text to libconfig's config_read_string(),
         * which reads up to a NUL, so it needs text[len] == 0 (config_load()
         * provides it); the length it is given is the real one. */
        text = malloc(size + 1);
        CHECK(text);
        memcpy(text, data, size);
        text[size] = 0;

        memset(&parsed, 0xa5, sizeof(parsed));
        untouched = parsed;
        r = config_parse("fuzz.conf", text, size, &parsed, &d);
        check_diag(&d);
        /* Whatever libconfig could take as an include is refused before
         * libconfig sees it (our scan refuses "@include" anywhere). */
        if (has_include_directive(text, size) || memmem(text, size, "@include", 8))
                CHECK(r < 0 && scan.include);
        if (r < 0) {
                CHECK(d.count > 0);
                CHECK(memcmp(&parsed, &untouched, sizeof(parsed)) == 0);
                /* Without a NUL, config_parse() runs the same scan. */
                CHECK(memchr(text, 0, size) || d.count >= scan.problems);
                free(text);
                return;
        }
        CHECK(r == 0);
        CHECK(d.count == 0 && d.len == 0);
        CHECK(scan.problems == 0);
        check_valid(&parsed);
        check_round_trip(&parsed);
        check_tail_is_read(text, size);

        config_defaults(&defaults);
        check_valid(&defaults);
        check_describe(&defaults, &parsed);
        check_describe(&parsed, &defaults);
        check_describe(&parsed, &parsed);
        check_keep_restart_keys(&defaults, &parsed);
        check_keep_restart_keys(&parsed, &defaults);
        free(text);
}

/* Inputs that start with 0xff (never valid configuration text) also drive a
 * second, structured mode aimed at the edges of numeric keys, where random
 * text mutations rarely land (libFuzzer does not trace floating-point
 * comparisons). Bytes after 0xff: key index, anchor (0, the key's minimum
 * or maximum from config_keys[], or 8 raw bytes), a signed 16-bit offset,
 * the number of decimals the offset is counted in (durations and rates:
 * 0..6) and a form (plain, L suffix, hex, fraction, exponent). The value is
 * written exactly, with integer arithmetic, as "key = value;", and so are
 * its 5 neighbours on each side at that precision. */
static void check_numeric_value(const uint8_t *p, size_t n, int step) {
        const struct key *k;
        int64_t base, units;
        uint64_t raw = 0, mag, scale = 1;
        unsigned decimals, form;
        char text[256], digits[64];
        int len;

        if (n < 6)
                return;
        k = &config_keys[p[0] % config_n_keys];
        for (size_t i = 0; i < 8; i++)
                raw = raw << 8 | (6 + i < n ? p[6 + i] : 0);
        /* Anywhere in -2^60..2^60: wide enough, and no overflow below. */
        raw = raw % (UINT64_C(1) << 61);
        decimals = p[4] % 7;
        form = p[5];

        switch (k->kind) {
        case KIND_U16: case KIND_U32: case KIND_U64:
                /* Whole numbers. */
                base = (int64_t[]) { 0, (int64_t) k->min, (int64_t) k->max,
                                     (int64_t) raw - (INT64_C(1) << 60) }[p[1] % 4];
                units = base + (int16_t) (p[2] | p[3] << 8) + step;
                mag = units < 0 ? (uint64_t) -units : (uint64_t) units;
                switch (form % 5) {
                case 0: len = snprintf(digits, sizeof(digits), "%" PRIu64, mag); break;
                case 1: len = snprintf(digits, sizeof(digits), "%" PRIu64 "L", mag); break;
                case 2: len = snprintf(digits, sizeof(digits), "0x%" PRIx64, mag); break;
                case 3: len = snprintf(digits, sizeof(digits), "0x%" PRIx64 "L", mag); break;
                default: len = snprintf(digits, sizeof(digits), "%" PRIu64 ".0", mag); break;
                }
                break;
        case KIND_DURATION: case KIND_RATE:
                /* Millionths; the table's bounds are in thousandths. */
                base = (int64_t[]) { 0, (int64_t) k->min * 1000, (int64_t) k->max * 1000,
                                     (int64_t) raw - (INT64_C(1) << 60) }[p[1] % 4];
                for (unsigned i = decimals; i < 6; i++)
                        scale *= 10;
                units = base + ((int16_t) (p[2] | p[3] << 8) + step) * (int64_t) scale;
                mag = units < 0 ? (uint64_t) -units : (uint64_t) units;
                if (form % 3 == 0 && mag % 1000000 == 0)
                        len = snprintf(digits, sizeof(digits), "%" PRIu64 "%s", mag / 1000000,
                                       form & 8 ? "L" : "");
                else if (form % 3 == 2)
                        len = snprintf(digits, sizeof(digits), "%" PRIu64 "e-6", mag);
                else {
                        len = snprintf(digits, sizeof(digits), "%" PRIu64 ".%06" PRIu64,
                                       mag / 1000000, mag % 1000000);
                        while (form & 4 && digits[len - 1] == '0' && digits[len - 2] != '.')
                                digits[--len] = 0;
                }
                break;
        default:
                return;
        }
        CHECK(len > 0 && (size_t) len < sizeof(digits));
        len = snprintf(text, sizeof(text), "%s = %s%s;\n", k->name, units < 0 ? "-" : "", digits);
        CHECK(len > 0 && (size_t) len < sizeof(text));
        check_text(text, (size_t) len);
}

static void check_numeric_edge(const uint8_t *p, size_t n) {
        for (int step = -5; step <= 5; step++)
                check_numeric_value(p, n, step);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* config_load() never passes more than this to config_parse(). */
        if (size > CONFIG_MAX_FILE_SIZE)
                return -1;
        check_text((const char *) data, size);
        if (size > 0 && data[0] == 0xff)
                check_numeric_edge(data + 1, size - 1);
        return 0;
}
