/* config: parsing, validation, literal range checks, dump round trip. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "test.h"

static int parse(const char *text, struct config *c, struct config_diag *d) {
        memset(d, 0, sizeof(*d));
        return config_parse("test.conf", text, strlen(text), c, d);
}

static void expect_error(const char *text, const char *message) {
        struct config c, before;
        struct config_diag d;

        memset(&c, 0x5a, sizeof(c));
        before = c;
        ASSERT_INT(parse(text, &c, &d), <, 0);
        ASSERT_STR_CONTAINS(d.text, message);
        /* A refused file leaves the output untouched. */
        ASSERT(memcmp(&c, &before, sizeof(c)) == 0);
}

static void test_empty_gives_defaults(void) {
        struct config c, def;
        struct config_diag d;

        config_defaults(&def);
        ASSERT_INT(parse("# nothing\n", &c, &d), ==, 0);
        ASSERT(memcmp(&c, &def, sizeof(c)) == 0);
        ASSERT_INT(def.port, ==, 7);
        ASSERT_INT(def.buffer_size, ==, 65536);
        ASSERT(strcmp(def.listen[0], "::") == 0);
}

static void test_all_keys(void) {
        struct config c;
        struct config_diag d;

        ASSERT_INT(parse("port = 7777;\n"
                         "listen = [ \"127.0.0.1\", \"::1\" ];\n"
                         "backlog = 64;\n"
                         "max_clients = 16384;\n"
                         "idle_timeout = 0.5;\n"
                         "write_timeout = 2;\n"
                         "max_session_time = 0;\n"
                         "max_session_bytes = 10000000000L;\n"
                         "buffer_size = 1024;\n"
                         "drain_timeout = 0.25;\n"
                         "log_level = \"debug\";\n", &c, &d), ==, 0);
        ASSERT_INT(c.port, ==, 7777);
        ASSERT_INT(c.n_listen, ==, 2);
        ASSERT(strcmp(c.listen[1], "::1") == 0);
        ASSERT_INT(c.backlog, ==, 64);
        ASSERT_INT(c.max_clients, ==, 16384);
        ASSERT_INT(c.idle_timeout_ms, ==, 500);
        ASSERT_INT(c.write_timeout_ms, ==, 2000);
        ASSERT_INT(c.max_session_time_ms, ==, 0);
        ASSERT(c.max_session_bytes == UINT64_C(10000000000));
        ASSERT_INT(c.buffer_size, ==, 1024);
        ASSERT_INT(c.drain_timeout_ms, ==, 250);
        ASSERT_INT(c.log_level, ==, LOG_DEBUG);

        ASSERT_INT(parse("listen = \"0.0.0.0\";", &c, &d), ==, 0);
        ASSERT_INT(c.n_listen, ==, 1);
}

static void test_unknown_and_types(void) {
        expect_error("port = 7;\nfoo = 1;\n", "test.conf:2: unknown key 'foo'");
        expect_error("group: { port = 7; };", "test.conf:1: unknown key 'group'");
        expect_error("port = \"7\";", "test.conf:1: port must be an integer, not a string");
        expect_error("max_clients = 1.5;", "max_clients must be an integer, not a number with a fraction");
        expect_error("idle_timeout = true;", "idle_timeout must be a number of seconds, not a boolean");
        expect_error("log_level = 3;", "log_level must be a string, not an integer");
        expect_error("listen = 5;", "listen must be an array of strings, not an integer");
        expect_error("listen = [ 1 ];", "listen entries must be strings");
}

static void test_ranges(void) {
        expect_error("port = 0;", "port = 0 is out of range (1..65535)");
        expect_error("port = 65536;", "port = 65536 is out of range");
        expect_error("port = -1;", "port = -1 is out of range");
        expect_error("max_clients = 0;", "max_clients = 0 is out of range (1..16384)");
        expect_error("max_clients = 16385;", "max_clients = 16385 is out of range");
        expect_error("buffer_size = 1023;", "buffer_size = 1023 is out of range (1024..1048576)");
        expect_error("backlog = 0;", "backlog = 0 is out of range");
        expect_error("idle_timeout = -1;", "idle_timeout = -1 s is out of range");
        expect_error("idle_timeout = 0.0001;", "idle_timeout = 0.0001 s is out of range");
        expect_error("drain_timeout = 301;", "drain_timeout = 301 s is out of range");
        expect_error("max_session_time = 2592001;", "is out of range");
        expect_error("max_session_bytes = 2000000000000000000L;", "max_session_bytes = 2000000000000000000 is out of range");
        expect_error("log_level = \"loud\";", "log_level = \"loud\" is not one of");
}

/* libconfig 1.5 would read these as other numbers; they must be refused. */
static void test_literals_never_wrap(void) {
        expect_error("max_session_bytes = 4294967297;", "test.conf:1: integer 4294967297 does not fit in 32 bits");
        expect_error("port =\n  2147483648;", "test.conf:2: integer 2147483648 does not fit in 32 bits");
        expect_error("max_clients = -2147483649;", "integer -2147483649 does not fit in 32 bits");
        expect_error("max_clients = 0xffffffff;", "integer 0xffffffff does not fit in 32 bits");
        expect_error("max_session_bytes = 99999999999999999999L;", "does not fit in 64 bits");
        expect_error("max_session_bytes = 0x8000000000000000L;", "does not fit in 64 bits");
        expect_error("idle_timeout = 1e999;", "number 1e999 is out of range");

        struct config c;
        struct config_diag d;
        ASSERT_INT(parse("max_session_bytes = 4294967297L; # 4294967297 in a comment\n"
                         "// 99999999999999999999\n/* 0xffffffffff */ log_level = \"info\"; # \"9999999999\"\n",
                         &c, &d), ==, 0);
        ASSERT(c.max_session_bytes == UINT64_C(4294967297));
        ASSERT_INT(parse("max_clients = 0x10; idle_timeout = 1.5e1;", &c, &d), ==, 0);
        ASSERT_INT(c.max_clients, ==, 16);
        ASSERT_INT(c.idle_timeout_ms, ==, 15000);
}

static void test_listen(void) {
        expect_error("listen = [ \"localhost\" ];", "\"localhost\" is not a numeric IPv4 or IPv6 address");
        expect_error("listen = [ \"127.0.0.1\", \"127.0.0.1\" ];", "\"127.0.0.1\" is given twice");
        expect_error("listen = [ ];", "listen must name at least one address");
        /* One address however written. */
        expect_error("listen = [ \"::\", \"0:0:0:0:0:0:0:0\" ];", "\"0:0:0:0:0:0:0:0\" is given twice");
        expect_error("listen = [ \"::1\", \"0::1\" ];", "\"0::1\" is given twice");
        expect_error("listen = [ \"1.1.1.1\", \"1.1.1.2\", \"1.1.1.3\", \"1.1.1.4\", \"1.1.1.5\", \"1.1.1.6\","
                     " \"1.1.1.7\", \"1.1.1.8\", \"1.1.1.9\", \"1.1.1.10\", \"1.1.1.11\", \"1.1.1.12\","
                     " \"1.1.1.13\", \"1.1.1.14\", \"1.1.1.15\", \"1.1.1.16\", \"1.1.1.17\" ];",
                     "more than 16 addresses");
}

/* config_listen_dual_stack(): the unspecified IPv6 address, parsed, not
 * compared as text, is dual-stack unless an IPv4 address is listed. */
static void test_listen_dual_stack_rule(void) {
        const char *spellings[] = { "\"::\"", "\"0::0\"", "\"::0\"", "\"0:0:0:0:0:0:0:0\"" };
        struct config c;
        struct config_diag d;
        char text[128];

        for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
                snprintf(text, sizeof(text), "listen = [ %s ];", spellings[i]);
                ASSERT_INT(parse(text, &c, &d), ==, 0);
                ASSERT(config_listen_dual_stack(&c, 0));
                ASSERT(!config_listen_any_ipv4(&c));
                snprintf(text, sizeof(text), "listen = [ %s, \"127.0.0.1\" ];", spellings[i]);
                ASSERT_INT(parse(text, &c, &d), ==, 0);
                ASSERT(!config_listen_dual_stack(&c, 0));
                ASSERT(config_listen_any_ipv4(&c));
        }
        ASSERT_INT(parse("listen = [ \"::1\" ];", &c, &d), ==, 0);
        ASSERT(!config_listen_dual_stack(&c, 0));
        ASSERT_INT(parse("listen = [ \"::ffff:127.0.0.1\" ];", &c, &d), ==, 0);
        ASSERT(!config_listen_dual_stack(&c, 0));
        ASSERT(!config_listen_is_ipv4("::ffff:127.0.0.1"));
        ASSERT(config_listen_is_ipv4("0.0.0.0"));
}

/* No string value holds a control character, written or escaped: a string
 * that runs past its line would hide settings (here in a key), so it is
 * refused at the line where it starts, whatever key it belongs to. */
static void test_control_characters_in_strings(void) {
        const char *keys[] = { "log_level = ", "log_addresses = ", "log_hash_key_credential = ", "listen = ",
                               "allow = ", "deny = ", "log_hash_key = ", "listen = [ \"::1\", " };
        const char *values[] = { "\"abcdefghijklmnop\nmax_clients_per_source = 4;\n\"",
                                 "\"a\tbcdefghijklmnop\"", "\"abcdefghijklmnop\x7f\"", "\"\x1b[2Jabcdefghijklmnop\"",
                                 "\"abcdefghijklmnop\\n\"", "\"abcdefghijklmnop\\t\"",
                                 "\"abcdefghijklmnop\\x1b\"", "\"abcdefghijklmnop\\x7F\"",
                                 "\"abcdefghijklmnop\\r\"" };
        const char *messages[] = { "a string cannot run past the end of its line",
                                   "a string cannot hold a control character (byte 0x09)",
                                   "a string cannot hold a control character (byte 0x7f)",
                                   "a string cannot hold a control character (byte 0x1b)",
                                   "a string cannot hold a control character (escaped as \\n)",
                                   "a string cannot hold a control character (escaped as \\t)",
                                   "a string cannot hold a control character (escaped as \\x1b)",
                                   "a string cannot hold a control character (escaped as \\x7F)",
                                   "a string cannot hold a control character (escaped as \\r)" };
        struct config c;
        struct config_diag d;
        char text[256], want[160];

        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
                        snprintf(text, sizeof(text), "port = 8;\n%s%s%s;\n", keys[k], values[v],
                                 strchr(keys[k], '[') ? " ]" : "");
                        snprintf(want, sizeof(want), "test.conf:2: %s", messages[v]);
                        expect_error(text, want);
                }
        /* Printable bytes, escaped or not, and UTF-8 are values as before. */
        ASSERT_INT(parse("log_hash_key = \"caf\xc3\xa9 \\x41\\x7e0123456789\";", &c, &d), ==, 0);
        ASSERT(strcmp(c.log_hash_key, "caf\xc3\xa9 A~0123456789") == 0);
}

static void test_admission_keys(void) {
        struct config c;
        struct config_diag d;
        char buf[64];

        ASSERT_INT(parse("max_clients_per_source = 4; source_prefix_ipv4 = 24; source_prefix_ipv6 = 48;"
                         "source_rate = 2.5; source_burst = 5; source_block_time = 0.5;"
                         "allow = [ \"10.0.0.0/8\", \"2001:db8::/32\" ]; deny = \"10.1.2.3\";"
                         "log_addresses = \"hash\"; log_hash_key = \"0123456789abcdef\";", &c, &d), ==, 0);
        ASSERT_INT(c.max_clients_per_source, ==, 4);
        ASSERT_INT(c.source_prefix_v4, ==, 24);
        ASSERT_INT(c.source_prefix_v6, ==, 48);
        ASSERT_INT(c.source_rate_milli, ==, 2500);
        ASSERT_INT(c.source_burst, ==, 5);
        ASSERT_INT(c.source_block_ms, ==, 500);
        ASSERT_INT(c.n_allow, ==, 2);
        ASSERT(strcmp(cidr_format(&c.allow[1], buf), "2001:db8::/32") == 0);
        ASSERT_INT(c.n_deny, ==, 1);
        ASSERT(strcmp(cidr_format(&c.deny[0], buf), "10.1.2.3") == 0);
        ASSERT_INT(c.log_addresses, ==, LOG_ADDRESSES_HASH);
        ASSERT(strcmp(c.log_hash_key, "0123456789abcdef") == 0);

        ASSERT_INT(parse("allow = [];", &c, &d), ==, 0);
        ASSERT_INT(c.n_allow, ==, 0);

        expect_error("source_prefix_ipv4 = 33;", "source_prefix_ipv4 = 33 is out of range (0..32)");
        expect_error("source_prefix_ipv6 = 129;", "source_prefix_ipv6 = 129 is out of range (0..128)");
        expect_error("source_rate = -1;", "source_rate = -1 is out of range");
        expect_error("source_rate = \"fast\";", "source_rate must be a number, not a string");
        expect_error("source_burst = 0;", "source_burst = 0 is out of range (1..1000000)");
        expect_error("source_table_size = 63;", "source_table_size = 63 is out of range (64..262144)");
        expect_error("source_table_size = 262145;", "source_table_size = 262145 is out of range");
        expect_error("source_table_size = 0;", "source_table_size = 0 is out of range");
        expect_error("allow = [ \"10.0.0.1/8\" ];", "allow: \"10.0.0.1/8\" is not an address or prefix");
        expect_error("deny = [ \"example.org\" ];", "deny: \"example.org\" is not an address or prefix");
        expect_error("deny = [ \"10.0.0.0/33\" ];", "deny: \"10.0.0.0/33\"");
        expect_error("log_addresses = \"none\";", "log_addresses = \"none\" is not one of full, prefix, hash");
        expect_error("log_hash_key = \"short\";", "log_hash_key must be empty or 16 to 128 characters");
}

static void test_hash_key_credential(void) {
        struct config c;
        struct config_diag d;

        ASSERT_INT(parse("log_addresses = \"hash\"; log_hash_key_credential = \"log-hash-key\";", &c, &d), ==, 0);
        ASSERT(strcmp(c.log_hash_key_credential, "log-hash-key") == 0);
        ASSERT(c.log_hash_key[0] == 0);
        ASSERT_INT(parse("log_hash_key_credential = \"echo-mpserv.key_2\";", &c, &d), ==, 0);
        ASSERT_INT(parse("log_hash_key_credential = \"\";", &c, &d), ==, 0);
        ASSERT(c.log_hash_key_credential[0] == 0);
        ASSERT_INT(parse("log_hash_key_credential = \"012345678901234.012345678901234.012345678901234.012345678901234\";",
                         &c, &d), ==, 0);
        /* A key pasted as the name is refused and never echoed. */
        const char *keys[] = { "5f0c2a7d9e1b4c3a8f6d2e0b7a9c1d3e5f0c2a7d9e1b4c3a8f6d2e0b7a9c1d3e",
                               "q3JZpL0b+k9vA2mN8s/1uQ==", "0123456789012345678901234567890123456789012345678901234567890123" };
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                char text[160];

                snprintf(text, sizeof(text), "log_hash_key_credential = \"%s\";", keys[i]);
                ASSERT_INT(parse(text, &c, &d), <, 0);
                ASSERT_STR_CONTAINS(d.text, "test.conf:1: log_hash_key_credential looks like a key, not a "
                                    "credential name (more than 15 letters and digits in a row); the value is "
                                    "not shown");
                ASSERT(strstr(d.text, keys[i]) == NULL);
                ASSERT(strstr(d.text, "q3JZ") == NULL);
        }

        /* A name, not a path: it is looked up in $CREDENTIALS_DIRECTORY. */
        expect_error("log_hash_key_credential = \"/etc/echo-mpserv/log-hash-key\";",
                     "test.conf:1: log_hash_key_credential = \"/etc/echo-mpserv/log-hash-key\" is not a credential name");
        expect_error("log_hash_key_credential = \"..\";", "is not a credential name");
        expect_error("log_hash_key_credential = \"a b\";", "is not a credential name");
        expect_error("log_hash_key_credential = \"012345678901234.012345678901234.012345678901234.012345678901234-x\";",
                     "is not a credential name (1 to 64 letters");
        expect_error("log_hash_key_credential = 5;", "log_hash_key_credential must be a string, not an integer");
        /* One place for the key, never both. */
        expect_error("log_hash_key_credential = \"log-hash-key\";\nlog_hash_key = \"0123456789abcdef\";",
                     "test.conf:2: log_hash_key and log_hash_key_credential exclude each other");
}

static void test_syntax_and_text(void) {
        static const char nul[] = "port = 7;\nmax_clients\0 = 5;\n";
        struct config c;
        struct config_diag d = { 0 };

        expect_error("port = 7;\nmax_clients = ;", "test.conf:2: syntax error");
        expect_error("port = 7;\nport = 8;", "test.conf:2: duplicate setting 'port' (first set on line 1)");
        expect_error("@include \"/etc/passwd\"\n", "test.conf:1: @include is not supported");
        ASSERT_INT(config_parse("test.conf", nul, sizeof(nul) - 1, &c, &d), <, 0);
        ASSERT_STR_CONTAINS(d.text, "test.conf:2: contains a NUL byte");
}

/* libconfig 1.5 reads some text otherwise than it is written, or not at
 * all: each such file is refused, naming the line. */
static void test_no_text_ignored(void) {
        static const struct {
                const char *text, *message;
        } rows[] = {
                /* A comment or string left open would hide every setting after it. */
                { "port = 7;\n/* keep this loopback-only *\nlisten = [ \"127.0.0.1\" ];\n"
                  "deny = [ \"0.0.0.0/0\", \"::/0\" ];\n", "test.conf:2: a /* comment that is never closed" },
                { "port = 8;\n/* trailing", "test.conf:2: a /* comment that is never closed" },
                { "port = /* 8;\nbacklog = 5;\n", "test.conf:1: a /* comment that is never closed" },
                { "port = 7;\n\"abc\nlisten = 5;\n", "test.conf:2: a string that is never closed" },
                { "port = 7;\nlog_level = \"info;\nport = 8;\n", "test.conf:2: a string that is never closed" },
                /* libconfig ends a line at a line feed only. */
                { "port = 7; # note\rdeny = \"0.0.0.0/0\";\n", "test.conf:1: a carriage return that does not end a line" },
                { "port = 7;\nbacklog = 5;\rmax_clients = 3;\r", "test.conf:2: a carriage return" },
                { "port = 9;\r\nfoo = 1;\r\n", "test.conf:2: unknown key 'foo'" },
                { "\xef\xbb\xbfport = 7;\n", "test.conf:1: the file starts with a byte order mark" },
                /* libconfig drops a \x00 from a string. */
                { "log_hash_key = \"\\x00123456789abcdefgh\";\n", "test.conf:1: a string cannot hold a NUL byte" },
                { "port = 8;\nlog_hash_key = \"0123456789abcdef\\X00\";\n", "test.conf:2: a string cannot hold" },
                /* libconfig joins adjacent strings: "::" "1" would be one address. */
                { "listen = [ \"::\" \"1\" ];\n", "test.conf:1: two strings with no comma between them" },
                { "deny = [ \"10.0.0.0/8\"\n  /* and */ \"192.168.0.0/16\" ];\n",
                  "test.conf:2: two strings with no comma between them" },
                /* A setting libconfig read where the text does not clearly start one. */
                { "port = 7backlog = 5;\n", "test.conf:1: 'backlog' is read as a setting where the text does not" },
                /* Stray text is a syntax error where it stands. */
                { "port = 7;;\n", "test.conf:1: syntax error" },
                { "port = 7; */ backlog = 5;\n", "test.conf:1: syntax error" },
                { "/* a /* b */ port = 8; */\n", "test.conf:1: syntax error" },
                { "port = 7;\n42\n", "test.conf:2: syntax error" },
                { "p\xc3\xa9rt = 7;\n", "test.conf:1: syntax error" },
                { "port = 7;\nbacklog = 5;\ngarbage\n", "test.conf:3: syntax error at the end of the file" },
                { "port = 7;\nbacklog =\n\n\n", "test.conf:2: syntax error at the end of the file" },
                { "port = 7;\nport = 8;\n", "test.conf:2: duplicate setting 'port' (first set on line 1)" },
                { "backlog = 5; port = 7;\nmax_clients = 3; port = 8;\n",
                  "test.conf:2: duplicate setting 'port' (first set on line 1)" },
                /* A bare word where a string goes names the key. */
                { "port = 7;\nlog_level = info;\n",
                  "test.conf:2: log_level = info: a string value must be in double quotes; write log_level = \"info\";" },
                { "listen = [ \"::1\",\n  localhost ];\n", "test.conf:2: listen: list entry localhost is not quoted" },
                /* So does an address or prefix written unquoted. */
                { "deny = [ \"192.0.2.1\", 198.51.100.0/24 ];\n",
                  "test.conf:1: deny: list entry 198.51.100.0/24 is not quoted; an address or prefix must be in double quotes" },
                { "source_limits_exempt = [ ::1 ];\n", "test.conf:1: source_limits_exempt: list entry ::1 is not quoted" },
                /* Lines are counted through comments and strings. */
                { "/* a\nb\n*/\nlog_level = \"x\ny\";\nfoo = 1;\n", "test.conf:6: unknown key 'foo'" },
        };
        struct config c;
        struct config_diag d;

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                fprintf(stderr, "   row %zu\n", i);
                expect_error(rows[i].text, rows[i].message);
        }

        /* What only looks like a comment, or a line end, is read as written. */
        ASSERT_INT(parse("log_hash_key = \"/* not a comment */ 01\";\nport = 8;\n", &c, &d), ==, 0);
        ASSERT(strcmp(c.log_hash_key, "/* not a comment */ 01") == 0);
        ASSERT_INT(c.port, ==, 8);
        ASSERT_INT(parse("log_hash_key = \"// nor this 0123456\";\nport = 8;\n", &c, &d), ==, 0);
        ASSERT_INT(c.port, ==, 8);
        ASSERT_INT(parse("port = 9; // no continuation \\\nbacklog = 5;\r\n", &c, &d), ==, 0);
        ASSERT_INT(c.port, ==, 9);
        ASSERT_INT(c.backlog, ==, 5);
        ASSERT_INT(parse("port /* a\n\n */ = 8;\f\n# caf\xc3\xa9\n", &c, &d), ==, 0);
        ASSERT_INT(c.port, ==, 8);
        /* Inside a string a carriage return is a control character. */
        expect_error("log_hash_key = \"0123456789abcdef\r\";\n",
                     "test.conf:1: a string cannot hold a control character (byte 0x0d)");

        /* A very long line neither hides the next one nor shifts its number. */
        char *long_line = malloc(60100);
        ASSERT(long_line);
        memset(long_line, ' ', 60000);
        snprintf(long_line + 60000, 100, "port = 8;\nfoo = 1;\n");
        expect_error(long_line, "test.conf:2: unknown key 'foo'");
        memcpy(long_line, "log_level = \"", 13);
        memset(long_line + 13, 'a', 59000);
        snprintf(long_line + 59013, 100, "\";\nfoo = 1;\n");
        expect_error(long_line, "test.conf:1: log_level = \"aaaa");
        expect_error(long_line, "...\" is not one of");
        expect_error(long_line, "test.conf:2: unknown key 'foo'");
        free(long_line);
}

/* Found by tests/fuzz/fuzz-config.c; each stays fixed. */
static void test_fuzz_findings(void) {
        struct config c, d1, d2;
        struct config_diag d;

        /* F1: an @include is refused and never followed (a FIFO would block). */
        ASSERT(mkfifo("/tmp/test-config-fifo", 0600) == 0 || errno == EEXIST);
        expect_error("@include \"/tmp/test-config-fifo\"\n", "@include is not supported");
        /* ... wherever it stands: a string left open hides it from libconfig
         * only as long as nobody gets the lexer's state wrong. */
        expect_error("x = \"a\n@include \"/tmp/test-config-fifo\"\n\";\n", "test.conf:2: @include is not supported");
        expect_error("# @include \"/tmp/test-config-fifo\"\n", "test.conf:1: @include is not supported");
        unlink("/tmp/test-config-fifo");
        /* F2: rounded values are compared, not the text. */
        expect_error("drain_timeout = 300.0005;", "drain_timeout = 300.0005 s is out of range");
        ASSERT_INT(parse("drain_timeout = 299.9995;", &c, &d), ==, 0);
        ASSERT_INT(c.drain_timeout_ms, ==, 300000);
        expect_error("idle_timeout = 0.0004;", "is out of range");
        /* F3: no stray padding bytes: the same file loads to the same bytes. */
        memset(&d1, 0x11, sizeof(d1));
        memset(&d2, 0x22, sizeof(d2));
        ASSERT_INT(parse("deny = \"10.1.2.3\"; allow = [ \"::1\", \"10.0.0.0/8\" ];", &d1, &d), ==, 0);
        ASSERT_INT(parse("deny = \"10.1.2.3\"; allow = [ \"::1\", \"10.0.0.0/8\" ];", &d2, &d), ==, 0);
        ASSERT(memcmp(&d1, &d2, sizeof(d1)) == 0);
        /* F4: a quoted value cannot forge a second diagnostic line. */
        ASSERT_INT(parse("log_level = \"x\\nfuzz.conf:1: forged\";", &c, &d), <, 0);
        ASSERT(strstr(d.text, "\nfuzz.conf") == NULL);
        ASSERT_STR_CONTAINS(d.text, "test.conf:1: a string cannot hold a control character (escaped as \\n)");
        ASSERT_STR_CONTAINS(d.text, "\\x0afuzz.conf:1: forged");
        /* F5: a number needs a digit; negative hex is named as such. */
        expect_error("idle_timeout = .;", "'.' is not a number");
        expect_error("idle_timeout = -.;", "'-.' is not a number");
        expect_error("backlog = -0x10;", "hexadecimal numbers cannot be negative");
        /* libconfig 1.5: a comment on a last line without a newline. */
        ASSERT_INT(parse("port = 7;\n# last", &c, &d), ==, 0);
}

/* The keys that need a restart keep their running values at a reload, and
 * which of them the file would change is said by name. */
static void test_keep_restart_keys(void) {
        struct config running, next, expect;
        char pending[128], tiny[5];

        config_defaults(&running);
        next = running;
        next.max_clients = 10;
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 0);
        ASSERT(strcmp(pending, "") == 0);
        ASSERT_INT(next.max_clients, ==, 10);

        expect = next;
        next.port = 9;
        next.backlog = 5;
        next.n_listen = 2;
        snprintf(next.listen[1], sizeof(next.listen[1]), "::1");
        snprintf(next.log_hash_key, sizeof(next.log_hash_key), "0123456789abcdefX");
        snprintf(next.log_hash_key_credential, sizeof(next.log_hash_key_credential), "log-hash-key");
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 5);
        ASSERT(strcmp(pending, "port, listen, backlog, log_hash_key_credential, log_hash_key") == 0);
        ASSERT(memcmp(&next, &expect, sizeof(next)) == 0);

        next.port = 10;
        memset(tiny, 'x', sizeof(tiny));
        ASSERT_INT(config_keep_restart_keys(&next, &running, tiny, 3), ==, 1);
        ASSERT(strcmp(tiny, "po") == 0 && tiny[3] == 'x');
        ASSERT_INT(next.port, ==, 7);
}

/* A switch to "hash" while the key's source changes waits for the restart
 * that brings the key: until then it would hash with a key no later run
 * has. Without a change of key source it applies at once. */
static void test_hash_switch_waits_for_its_key(void) {
        struct config running, next;
        char pending[128], changes[512];
        bool restart;

        config_defaults(&running);
        next = running;
        next.log_addresses = LOG_ADDRESSES_HASH;
        snprintf(next.log_hash_key_credential, sizeof(next.log_hash_key_credential), "log-hash-key");
        ASSERT_INT(config_describe_changes(&running, &next, changes, sizeof(changes), &restart), ==, 2);
        ASSERT(restart);
        ASSERT_STR_CONTAINS(changes, "log_addresses \"full\" -> \"hash\" (pending), "
                                     "log_hash_key_credential \"\" -> \"log-hash-key\" (pending)");
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 2);
        ASSERT(strcmp(pending, "log_addresses, log_hash_key_credential") == 0);
        ASSERT_INT(next.log_addresses, ==, LOG_ADDRESSES_FULL);

        /* The key in the file (deprecated) alike. */
        next = running;
        next.log_addresses = LOG_ADDRESSES_HASH;
        snprintf(next.log_hash_key, sizeof(next.log_hash_key), "0123456789abcdefX");
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 2);
        ASSERT_INT(next.log_addresses, ==, LOG_ADDRESSES_FULL);

        /* The same key source as running: "hash" applies at the reload. */
        snprintf(running.log_hash_key_credential, sizeof(running.log_hash_key_credential), "log-hash-key");
        next = running;
        next.log_addresses = LOG_ADDRESSES_HASH;
        ASSERT_INT(config_describe_changes(&running, &next, changes, sizeof(changes), &restart), ==, 1);
        ASSERT(!restart);
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 0);
        ASSERT_INT(next.log_addresses, ==, LOG_ADDRESSES_HASH);

        /* Away from "hash" applies at once, whatever the key does. */
        running.log_addresses = LOG_ADDRESSES_HASH;
        next = running;
        next.log_addresses = LOG_ADDRESSES_PREFIX;
        next.log_hash_key_credential[0] = 0;
        ASSERT_INT(config_keep_restart_keys(&next, &running, pending, sizeof(pending)), ==, 1);
        ASSERT(strcmp(pending, "log_hash_key_credential") == 0);
        ASSERT_INT(next.log_addresses, ==, LOG_ADDRESSES_PREFIX);
}

static void test_all_errors_reported(void) {
        struct config c;
        struct config_diag d;

        ASSERT_INT(parse("port = 0;\nbogus = 1;\nmax_session_bytes = 4294967297;\n", &c, &d), <, 0);
        ASSERT_INT(d.count, ==, 3);
        ASSERT_STR_CONTAINS(d.text, "test.conf:1: port");
        ASSERT_STR_CONTAINS(d.text, "test.conf:2: unknown key 'bogus'");
        ASSERT_STR_CONTAINS(d.text, "test.conf:3: integer 4294967297");
}

/* More problems than the text holds: whole lines, then how many more. */
static void test_many_errors_counted(void) {
        struct config c;
        struct config_diag d;
        char *text = malloc(300 * 20), *last;
        size_t used = 0;
        unsigned lines = 0;

        ASSERT(text);
        for (int i = 0; i < 300; i++)
                used += (size_t) sprintf(text + used, "unknown_%03d = 1;\n", i);
        ASSERT_INT(parse(text, &c, &d), <, 0);
        ASSERT_INT(d.count, ==, 300);
        ASSERT_INT(strlen(d.text), ==, d.len);
        for (const char *p = d.text; (p = strchr(p, '\n')); p++)
                lines++;
        ASSERT_STR_CONTAINS(d.text, "test.conf:1: unknown key 'unknown_000'\n");
        last = strstr(d.text, "(and ");
        ASSERT(last && last > d.text && last[-1] == '\n');
        /* Every line before the count is whole. */
        for (char *p = d.text; p < last; p = strchr(p, '\n') + 1)
                ASSERT(strncmp(p, "test.conf:", 10) == 0 && strstr(p, "' \n") == NULL);
        char expect[64];
        snprintf(expect, sizeof(expect), "(and %u more problem(s) not shown)\n", 300 - (lines - 1));
        ASSERT(strcmp(last, expect) == 0);
        free(text);
}

static char *write_temp(const char *content, size_t len) {
        static char path[64];
        int fd;

        snprintf(path, sizeof(path), "/tmp/test-config-XXXXXX");
        fd = mkstemp(path);
        ASSERT(fd >= 0);
        ASSERT(write(fd, content, len) == (ssize_t) len);
        close(fd);
        return path;
}

static void test_files(void) {
        struct config c;
        struct config_diag d = { 0 };
        char *big, *path;

        ASSERT_INT(config_load("/nonexistent/echo-mpserv.conf", &c, &d), ==, -ENOENT);
        ASSERT_STR_CONTAINS(d.text, "/nonexistent/echo-mpserv.conf: No such file or directory");

        memset(&d, 0, sizeof(d));
        ASSERT_INT(config_load("/tmp", &c, &d), <, 0);
        ASSERT_STR_CONTAINS(d.text, "/tmp: not a regular file");

        big = malloc(CONFIG_MAX_FILE_SIZE + 2);
        ASSERT(big);
        memset(big, '#', CONFIG_MAX_FILE_SIZE + 1);
        path = write_temp(big, CONFIG_MAX_FILE_SIZE + 1);
        memset(&d, 0, sizeof(d));
        ASSERT_INT(config_load(path, &c, &d), ==, -EFBIG);
        ASSERT_STR_CONTAINS(d.text, "is more than the 65536-byte limit; not parsed");
        unlink(path);
        free(big);

        path = write_temp("port = 8;\n", 10);
        memset(&d, 0, sizeof(d));
        ASSERT_INT(config_load(path, &c, &d), ==, 0);
        ASSERT_INT(c.port, ==, 8);
        unlink(path);
}

/* config_load_file(): only nothing at the default path means the defaults;
 * a dangling symbolic link there, or a missing file named with -c, is an
 * error. */
static void test_load_file_missing(void) {
        char dir[] = "/tmp/test-config-XXXXXX", path[64], link_path[64];
        struct config c, def;
        struct config_diag d = { 0 };
        bool no_file = true;

        config_defaults(&def);
        ASSERT(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/echo-mpserv.conf", dir);
        memset(&c, 0x5a, sizeof(c));
        ASSERT_INT(config_load_file(path, false, &c, &no_file, &d), ==, 0);
        ASSERT(no_file);
        ASSERT(memcmp(&c, &def, sizeof(c)) == 0);
        ASSERT_INT(d.count, ==, 0);
        ASSERT_INT(d.len, ==, 0);

        ASSERT_INT(config_load_file(path, true, &c, &no_file, &d), ==, -ENOENT);
        ASSERT(!no_file);
        ASSERT_STR_CONTAINS(d.text, ": No such file or directory");

        snprintf(link_path, sizeof(link_path), "%s/echo-mpserv.conf.new", dir);
        ASSERT_INT(symlink(link_path, path), ==, 0);
        memset(&d, 0, sizeof(d));
        ASSERT_INT(config_load_file(path, false, &c, &no_file, &d), ==, -ENOENT);
        ASSERT(!no_file);
        ASSERT_STR_CONTAINS(d.text, "echo-mpserv.conf: a symbolic link to a file that does not exist");

        ASSERT_INT(unlink(path), ==, 0);
        ASSERT_INT(rmdir(dir), ==, 0);
}

static char *dump(const struct config *c) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        ASSERT(f);
        ASSERT_INT(config_dump(c, f), ==, 0);
        fclose(f);
        return buf;
}

static void test_dump_round_trip(void) {
        struct config a, b;
        struct config_diag d;
        char *text, *again;

        ASSERT_INT(parse("port = 1234; listen = [ \"127.0.0.1\", \"::\" ]; idle_timeout = 0.123;"
                         "max_session_bytes = 5000000000L; log_level = \"warning\"; drain_timeout = 0;"
                         "source_rate = 0.25; allow = [ \"192.0.2.0/24\", \"::1\" ]; log_addresses = \"prefix\";"
                         "log_hash_key = \"a secret of sixteen+\";",
                         &a, &d), ==, 0);
        text = dump(&a);
        ASSERT_STR_CONTAINS(text, "max_session_bytes = 5000000000L;");
        ASSERT_STR_CONTAINS(text, "idle_timeout = 0.123;");
        ASSERT_STR_CONTAINS(text, "listen = [ \"127.0.0.1\", \"::\" ];");
        ASSERT_STR_CONTAINS(text, "allow = [ \"192.0.2.0/24\", \"::1\" ];");
        ASSERT_STR_CONTAINS(text, "deny = [];");
        ASSERT_STR_CONTAINS(text, "source_rate = 0.250;");
        /* The secret is never printed, so it does not come back. */
        ASSERT(!strstr(text, "a secret of sixteen+"));
        ASSERT_STR_CONTAINS(text, "# log_hash_key is set in the file and not shown\nlog_hash_key = \"\";");
        ASSERT_INT(parse(text, &b, &d), ==, 0);
        memset(a.log_hash_key, 0, sizeof(a.log_hash_key));
        ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
        again = dump(&b);
        ASSERT(strcmp(text, again) != 0 && !strstr(again, "not shown"));
        free(text);
        free(again);

        ASSERT_INT(parse("log_hash_key_credential = \"log-hash-key\";", &a, &d), ==, 0);
        text = dump(&a);
        ASSERT_STR_CONTAINS(text, "\nlog_hash_key_credential = \"log-hash-key\";\nlog_hash_key = \"\";\n");
        ASSERT_INT(parse(text, &b, &d), ==, 0);
        ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
        free(text);

        config_defaults(&a);
        text = dump(&a);
        ASSERT_INT(parse(text, &b, &d), ==, 0);
        ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
        free(text);
}

static void test_describe_changes(void) {
        struct config a, b;
        char buf[512];
        bool restart;

        config_defaults(&a);
        b = a;
        ASSERT_INT(config_describe_changes(&a, &b, buf, sizeof(buf), &restart), ==, 0);
        ASSERT(!restart);
        b.max_clients = 10;
        b.idle_timeout_ms = 1500;
        ASSERT_INT(config_describe_changes(&a, &b, buf, sizeof(buf), &restart), ==, 2);
        ASSERT(!restart);
        ASSERT_STR_CONTAINS(buf, "max_clients 256 -> 10");
        ASSERT_STR_CONTAINS(buf, "idle_timeout 300 -> 1.500");
        b.port = 9;
        ASSERT_INT(config_describe_changes(&a, &b, buf, sizeof(buf), &restart), ==, 3);
        ASSERT(restart);
        ASSERT_STR_CONTAINS(buf, "port 7 -> 9 (pending)");
        snprintf(b.log_hash_key, sizeof(b.log_hash_key), "never-in-the-log-0123");
        ASSERT_INT(config_describe_changes(&a, &b, buf, sizeof(buf), &restart), ==, 4);
        ASSERT_STR_CONTAINS(buf, "log_hash_key changed (pending)");
        ASSERT(!strstr(buf, "never-in-the-log"));
        snprintf(b.log_hash_key_credential, sizeof(b.log_hash_key_credential), "log-hash-key");
        ASSERT_INT(config_describe_changes(&a, &b, buf, sizeof(buf), &restart), ==, 5);
        ASSERT_STR_CONTAINS(buf, "log_hash_key_credential \"\" -> \"log-hash-key\" (pending)");
}

int main(void) {
        RUN(test_empty_gives_defaults);
        RUN(test_all_keys);
        RUN(test_unknown_and_types);
        RUN(test_ranges);
        RUN(test_literals_never_wrap);
        RUN(test_listen);
        RUN(test_listen_dual_stack_rule);
        RUN(test_control_characters_in_strings);
        RUN(test_admission_keys);
        RUN(test_hash_key_credential);
        RUN(test_syntax_and_text);
        RUN(test_no_text_ignored);
        RUN(test_fuzz_findings);
        RUN(test_all_errors_reported);
        RUN(test_many_errors_counted);
        RUN(test_files);
        RUN(test_load_file_missing);
        RUN(test_dump_round_trip);
        RUN(test_describe_changes);
        RUN(test_keep_restart_keys);
        RUN(test_hash_switch_waits_for_its_key);
        return 0;
}
