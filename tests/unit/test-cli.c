/* cli: a table of command lines and what they must mean. */
#include <syslog.h>

#include "cli.h"
#include "config.h"
#include "test.h"

struct row {
        const char *argv[6];
        int ret;
        enum cli_action action;
        const char *error;
};

static const struct row rows[] = {
        { { "x" }, 0, CLI_RUN, NULL },
        { { "x", "--check-config" }, 0, CLI_CHECK_CONFIG, NULL },
        { { "x", "--dump-config", "-c", "/tmp/a.conf" }, 0, CLI_DUMP_CONFIG, NULL },
        { { "x", "-h" }, 0, CLI_HELP, NULL },
        { { "x", "--version" }, 0, CLI_VERSION, NULL },
        { { "x", "-p", "0" }, -1, 0, "invalid port '0'" },
        { { "x", "-p", "65536" }, -1, 0, "invalid port '65536'" },
        { { "x", "--port=12ab" }, -1, 0, "invalid port '12ab'" },
        { { "x", "-p", "-5" }, -1, 0, "invalid port '-5'" },
        { { "x", "-p" }, -1, 0, "option '-p' needs an argument" },
        { { "x", "--config" }, -1, 0, "option '--config' needs an argument" },
        { { "x", "--config=" }, -1, 0, "--config needs a file name" },
        { { "x", "--log-level=loud" }, -1, 0, "invalid log level 'loud'" },
        { { "x", "--bogus" }, -1, 0, "unknown option '--bogus'" },
        { { "x", "-z" }, -1, 0, "unknown option '-z'" },
        { { "x", "extra" }, -1, 0, "unexpected argument 'extra'" },
        { { "x", "--check-config", "--dump-config" }, -1, 0, "exclude each other" },
};

static void test_table(void) {
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char err[256] = "";
                struct cli cli;
                int argc = 0;

                while (rows[i].argv[argc])
                        argc++;
                int r = cli_parse(argc, (char *const *) rows[i].argv, &cli, err, sizeof(err));
                if (rows[i].ret == 0) {
                        ASSERT_INT(r, ==, 0);
                        ASSERT_INT(cli.action, ==, rows[i].action);
                } else {
                        ASSERT_INT(r, <, 0);
                        ASSERT_STR_CONTAINS(err, rows[i].error);
                }
        }
}

static void test_values(void) {
        const char *argv[] = { "x", "-c", "/tmp/e.conf", "--port", "7777", "--log-level", "debug" };
        char err[256];
        struct cli cli;

        ASSERT_INT(cli_parse(7, (char *const *) argv, &cli, err, sizeof(err)), ==, 0);
        ASSERT(strcmp(cli.config_path, "/tmp/e.conf") == 0 && cli.config_path_given);
        ASSERT_INT(cli.port, ==, 7777);
        ASSERT_INT(cli.log_level, ==, LOG_DEBUG);

        ASSERT_INT(cli_parse(1, (char *const *) argv, &cli, err, sizeof(err)), ==, 0);
        ASSERT(strcmp(cli.config_path, CONFIG_DEFAULT_PATH) == 0 && !cli.config_path_given);
        ASSERT_INT(cli.port, ==, -1);
        ASSERT_INT(cli.log_level, ==, -1);
}

int main(void) {
        RUN(test_table);
        RUN(test_values);
        return 0;
}
