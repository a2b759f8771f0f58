/* config-wait: when a daemon that cannot start on its configuration (the
 * file, or the hash key credential it names) waits, and what it tells the
 * service manager until a reload loads it all or a stop ends it. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config-wait.h"
#include "credential.h"
#include "log.h"
#include "test.h"
#include "util.h"

static int notes;
static char dir[] = "/tmp/test-config-wait-XXXXXX";
static char path[64], key_path[80];

static const char *receive(void) {
        static char buf[1024];
        ssize_t n = recv(notes, buf, sizeof(buf) - 1, MSG_DONTWAIT);

        ASSERT(n > 0);
        buf[n] = 0;
        return buf;
}

static void write_to(const char *file, const char *text) {
        FILE *f = fopen(file, "w");

        ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

static void write_file(const char *text) {
        write_to(path, text);
}

/* What the daemon's start-up load does (main.c), in short: the file, then
 * the credential it names; *loaded changes only when both load. */
static struct config loaded;
static int attempts;

static int load(_unused_ void *userdata, struct config_diag *diag, enum config_wait_cause *cause) {
        unsigned char key[CONFIG_HASH_KEY_MAX + 1];
        struct config c;
        bool no_file;
        char err[256];
        int r;

        attempts++;
        *cause = CONFIG_WAIT_FILE;
        r = config_load_file(path, true, &c, &no_file, diag);
        if (r < 0)
                return r;
        *cause = CONFIG_WAIT_CREDENTIAL;
        if (c.log_hash_key_credential[0]) {
                r = credential_read(c.log_hash_key_credential, key, CONFIG_HASH_KEY_MIN, CONFIG_HASH_KEY_MAX, err,
                                    sizeof(err));
                if (r < 0) {
                        config_diag_add(diag, "log_hash_key_credential: %s", err);
                        return r;
                }
        }
        loaded = c;
        return 0;
}

/* fd 3 as systemd passes it; LISTEN_PID and SYSTEMD_EXEC_PID name us. */
static void pass_socket(bool listening) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), pair[2];
        char pid[24];

        ASSERT(fd >= 0);
        if (listening) {
                ASSERT(listen(fd, 4) == 0);
        } else {
                close(fd);
                ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
                fd = pair[0];
                close(pair[1]);
        }
        if (fd != 3) {
                ASSERT(dup2(fd, 3) == 3);
                close(fd);
        }
        snprintf(pid, sizeof(pid), "%ld", (long) getpid());
        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("SYSTEMD_EXEC_PID", pid, 1);
        setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef", 1);
}

/* A client connected to the passed listener (fd 3), not accepted. */
static int queue_client(void) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        ASSERT(fd >= 0);
        ASSERT(getsockname(3, (struct sockaddr *) &a, &len) == 0);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT(connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0);
        return fd;
}

static void test_applies(void) {
        int client;

        pass_socket(true);
        ASSERT(!config_wait_applies());         /* no client waiting: a restart, exits 78 */
        client = queue_client();
        ASSERT(config_wait_applies());
        unsetenv("INVOCATION_ID");      /* standalone: exits 78 */
        ASSERT(!config_wait_applies());
        pass_socket(false);             /* Accept=yes: one connected socket */
        ASSERT(!config_wait_applies());
        pass_socket(true);
        unsetenv("LISTEN_FDS");         /* started by systemd, nothing passed */
        ASSERT(!config_wait_applies());
        close(client);
}

static void test_waits_until_a_reload_loads(void) {
        /* Pending before the wait (blocked, as in the daemon), read lowest
         * first: a reload of a still broken file keeps it waiting and says
         * so, then SIGTERM ends the wait. */
        write_file("log_level = info;\n");
        raise(SIGHUP);
        raise(SIGTERM);
        ASSERT_INT(config_wait(path, load, NULL, CONFIG_WAIT_FILE, "c.conf:1: first problem\nc.conf:2: second\n"),
                   ==, -ECANCELED);
        ASSERT_STR_CONTAINS(receive(), "READY=1\nSTATUS=Not serving, the configuration does not load: c.conf:1: "
                            "first problem (and more: echo-mpserv --check-config); fix the file, then run: "
                            "systemctl reload echo-mpserv");
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT_STR_CONTAINS(receive(), "log_level = info: a string value must be in double quotes");

        /* A reload that loads ends the wait with that configuration. */
        write_file("max_clients = 7;\n");
        raise(SIGHUP);
        ASSERT_INT(config_wait(path, load, NULL, CONFIG_WAIT_FILE, "c.conf:1: a problem\n"), ==, 0);
        ASSERT_INT(loaded.max_clients, ==, 7);
        ASSERT(strstr(receive(), "STATUS=Not serving, the configuration does not load: c.conf:1: a problem; fix"));
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT(recv(notes, (char[8]) { 0 }, 8, MSG_DONTWAIT) < 0); /* READY=1 is the server's, once it serves */
}

/* The credential is part of the start-up: a bad one waits like a bad file
 * and says to restart the service (systemd passes credentials at start);
 * a wait for a file that ends in a good file naming a bad credential goes
 * on waiting, saying so; a good credential ends it. */
static void test_waits_for_the_credential(void) {
        struct config_diag diag = { 0 };
        enum config_wait_cause cause = CONFIG_WAIT_FILE;

        loaded.max_clients = 0;
        write_to(key_path, "missing");                  /* the unit's placeholder */
        write_file("log_hash_key_credential = \"log-hash-key\";\n");
        ASSERT_INT(load(NULL, &diag, &cause), ==, -EMSGSIZE);
        ASSERT_INT(cause, ==, CONFIG_WAIT_CREDENTIAL);
        raise(SIGTERM);
        ASSERT_INT(config_wait(path, load, NULL, cause, diag.text), ==, -ECANCELED);
        const char *note = receive();
        ASSERT_STR_CONTAINS(note, "READY=1\nSTATUS=Not serving, the hash key credential does not load: "
                            "log_hash_key_credential: credential /tmp/test-config-wait-");
        ASSERT_STR_CONTAINS(note, "/log-hash-key: 7 bytes (needs 16 to 128); fix the file LoadCredential= "
                            "names, then run: systemctl restart echo-mpserv");

        /* Waiting for a file, a reload finds it good but the credential bad. */
        write_file("max_clients = 8;\nlog_hash_key_credential = \"log-hash-key\";\n");
        raise(SIGHUP);
        raise(SIGTERM);
        attempts = 0;
        ASSERT_INT(config_wait(path, load, NULL, CONFIG_WAIT_FILE, "c.conf:1: a problem\n"), ==, -ECANCELED);
        ASSERT_INT(attempts, ==, 1);
        ASSERT_STR_CONTAINS(receive(), "STATUS=Not serving, the configuration does not load: c.conf:1: a problem;");
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT_STR_CONTAINS(receive(), "STATUS=Not serving, the hash key credential does not load: ");
        ASSERT_INT(loaded.max_clients, ==, 0);          /* nothing of a failed attempt is kept */

        /* With the key in place the same reload serves. */
        write_to(key_path, "a-key-of-sixteen-bytes-or-more\n");
        raise(SIGHUP);
        ASSERT_INT(config_wait(path, load, NULL, cause, diag.text), ==, 0);
        ASSERT_INT(loaded.max_clients, ==, 8);
        ASSERT_STR_CONTAINS(receive(), "STATUS=Not serving, the hash key credential does not load: ");
        ASSERT_STR_CONTAINS(receive(), "RELOADING=1");
        ASSERT(recv(notes, (char[8]) { 0 }, 8, MSG_DONTWAIT) < 0);
        unlink(key_path);
}

int main(void) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        sigset_t mask;

        ASSERT(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/c.conf", dir);
        snprintf(key_path, sizeof(key_path), "%s/log-hash-key", dir);
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
        snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", dir);
        notes = socket(AF_UNIX, SOCK_DGRAM, 0);
        ASSERT(notes >= 0 && bind(notes, (struct sockaddr *) &a, sizeof(a)) == 0);
        setenv("NOTIFY_SOCKET", a.sun_path, 1);
        /* Out of the way of fd 3, where the passed socket goes. */
        ASSERT(dup2(notes, 50) == 50 && close(notes) == 0);
        notes = 50;
        sigemptyset(&mask);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        ASSERT(sigprocmask(SIG_BLOCK, &mask, NULL) == 0);
        log_setup();

        RUN(test_applies);
        RUN(test_waits_until_a_reload_loads);
        RUN(test_waits_for_the_credential);
        unlink(a.sun_path);
        unlink(path);
        rmdir(dir);
        return 0;
}
