/* credential: reading $CREDENTIALS_DIRECTORY/NAME within bounds, with
 * errors that name the file and never its content. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "credential.h"
#include "test.h"

#define MIN 16
#define MAX 128

static char dir[] = "/tmp/test-credential-XXXXXX";
static const char *const made[] = { "target", "empty", "short", "short-nl", "max", "max-nl", "long", "long-nl",
                                    "secret", "text", "two-nl", "crlf", "binary" };

static void put(const char *name, const void *data, size_t len) {
        char path[256];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT(fd >= 0);
        ASSERT_INT(write(fd, data, len), ==, (ssize_t) len);
        close(fd);
}

static int rd(const char *name, unsigned char buf[static MAX + 1], char *err) {
        memset(buf, 0x5a, MAX + 1);
        err[0] = 0;
        return credential_read(name, buf, MIN, MAX, err, 512);
}

static bool all_zero(const unsigned char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static void test_names(void) {
        ASSERT(credential_name_valid("log-hash-key"));
        ASSERT(credential_name_valid("a.b_c-D9"));
        ASSERT(!credential_name_valid(""));
        ASSERT(!credential_name_valid("."));
        ASSERT(!credential_name_valid(".."));
        ASSERT(!credential_name_valid("a/b"));
        ASSERT(!credential_name_valid("a:b"));
        ASSERT(!credential_name_valid("a b"));
        ASSERT(credential_name_valid("012345678901234.012345678901234.012345678901234.012345678901234_"));
        ASSERT(!credential_name_valid("012345678901234.012345678901234.012345678901234.012345678901234_x"));
        ASSERT(!credential_name_valid("012345678901234.012345678901234.012345678901234.0123456789012345"));
        ASSERT(credential_name_valid("echo-mpserv.log-hash-key_2"));
        ASSERT(credential_name_valid("abcdefghijklmno"));
}

/* A key pasted as the name: 64 hex digits (what the package makes), or
 * base64 of 16 bytes and more. Such a name is never valid, so it is never
 * printed as one. */
static void test_keys_are_no_names(void) {
        const char *keys[] = {
                "5f0c2a7d9e1b4c3a8f6d2e0b7a9c1d3e5f0c2a7d9e1b4c3a8f6d2e0b7a9c1d3e",
                "0123456789abcdef", "q3JZpL0bXk9vA2mN8sT1uQ==", "q3JZpL0b+k9vA2mN8s/1uQ", "ABCDEFGHIJKLMNOP",
        };

        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                ASSERT(credential_name_looks_like_key(keys[i]));
                ASSERT(!credential_name_valid(keys[i]));
        }
        ASSERT(!credential_name_looks_like_key("log-hash-key"));
        ASSERT(!credential_name_looks_like_key("/etc/echo-mpserv/log-hash-key"));
        ASSERT(!credential_name_looks_like_key("abcdefghijklmno"));
}

static void test_no_directory(void) {
        unsigned char buf[MAX + 1];
        char err[512];

        unsetenv("CREDENTIALS_DIRECTORY");
        ASSERT_INT(rd("k", buf, err), ==, -ENXIO);
        ASSERT_STR_CONTAINS(err, "credential \"k\": $CREDENTIALS_DIRECTORY is not set");
        ASSERT(all_zero(buf, sizeof(buf)));
        setenv("CREDENTIALS_DIRECTORY", "relative/dir", 1);
        ASSERT_INT(rd("k", buf, err), ==, -ENXIO);
        setenv("CREDENTIALS_DIRECTORY", "/nonexistent-credentials", 1);
        ASSERT_INT(rd("k", buf, err), ==, -ENOENT);
        ASSERT_STR_CONTAINS(err, "credential /nonexistent-credentials/k: No such file or directory");
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
}

static void test_missing_and_odd_files(void) {
        unsigned char buf[MAX + 1];
        char err[512], path[256];

        ASSERT_INT(rd("missing", buf, err), ==, -ENOENT);
        ASSERT_STR_CONTAINS(err, "/missing: No such file or directory");
        ASSERT_INT(rd("../x", buf, err), ==, -EINVAL);
        ASSERT_STR_CONTAINS(err, "not a valid credential name");
        snprintf(path, sizeof(path), "%s/sub", dir);
        ASSERT_INT(mkdir(path, 0700), ==, 0);
        ASSERT_INT(rd("sub", buf, err), ==, -EINVAL);
        ASSERT_STR_CONTAINS(err, "/sub: not a regular file");
        rmdir(path);
        /* A FIFO would block a plain open(); it is refused instead. */
        snprintf(path, sizeof(path), "%s/fifo", dir);
        ASSERT_INT(mkfifo(path, 0600), ==, 0);
        ASSERT_INT(rd("fifo", buf, err), ==, -EINVAL);
        unlink(path);
        /* A symlink is not followed: the credential is the file itself. */
        snprintf(path, sizeof(path), "%s/link", dir);
        put("target", "0123456789abcdef", 16);
        ASSERT_INT(symlink("target", path), ==, 0);
        ASSERT_INT(rd("link", buf, err), ==, -ELOOP);
        unlink(path);
}

static void test_sizes(void) {
        static const char secret[] = "SECRET-never-in-a-message";
        unsigned char buf[MAX + 1], big[MAX + 2];
        char err[512];

        put("empty", "", 0);
        ASSERT_INT(rd("empty", buf, err), ==, -EMSGSIZE);
        ASSERT_STR_CONTAINS(err, "/empty: 0 bytes (needs 16 to 128)");
        put("short", "SECRET-15-bytes", 15);
        ASSERT_INT(rd("short", buf, err), ==, -EMSGSIZE);
        ASSERT_STR_CONTAINS(err, "/short: 15 bytes (needs 16 to 128)");
        ASSERT(!strstr(err, "SECRET") && all_zero(buf, sizeof(buf)));
        put("short-nl", "SECRET-15-bytes\n", 16);  /* the newline is not key */
        ASSERT_INT(rd("short-nl", buf, err), ==, -EMSGSIZE);

        memset(big, 'k', sizeof(big));
        put("max", big, MAX);
        ASSERT_INT(rd("max", buf, err), ==, MAX);
        ASSERT(memcmp(buf, big, MAX) == 0);
        big[MAX] = '\n';
        put("max-nl", big, MAX + 1);
        ASSERT_INT(rd("max-nl", buf, err), ==, MAX);
        big[MAX] = 'k';
        put("long", big, MAX + 1);
        ASSERT_INT(rd("long", buf, err), ==, -EMSGSIZE);
        ASSERT_STR_CONTAINS(err, "/long: more than 128 bytes (needs 16 to 128)");
        ASSERT(all_zero(buf, sizeof(buf)));
        big[MAX + 1] = '\n';
        put("long-nl", big, MAX + 2);
        ASSERT_INT(rd("long-nl", buf, err), ==, -EMSGSIZE);

        put("secret", secret, strlen(secret));
        ASSERT_INT(rd("secret", buf, err), ==, (int) strlen(secret));
        ASSERT(memcmp(buf, secret, strlen(secret)) == 0);
}

static void test_newline_and_binary(void) {
        static const unsigned char binary[20] = { 0, 1, 2, '\n', 0, 0xff, 0x80, 'a', 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0 };
        unsigned char buf[MAX + 1];
        char err[512];

        put("text", "0123456789abcdef0123\n", 21);
        ASSERT_INT(rd("text", buf, err), ==, 20);
        ASSERT(memcmp(buf, "0123456789abcdef0123", 20) == 0);
        /* Only one newline goes: the rest is data. */
        put("two-nl", "0123456789abcdef0123\n\n", 22);
        ASSERT_INT(rd("two-nl", buf, err), ==, 21);
        put("crlf", "0123456789abcdef0123\r\n", 22);
        ASSERT_INT(rd("crlf", buf, err), ==, 21);
        /* Binary keys, NUL bytes included, are taken whole. */
        put("binary", binary, sizeof(binary));
        ASSERT_INT(rd("binary", buf, err), ==, (int) sizeof(binary));
        ASSERT(memcmp(buf, binary, sizeof(binary)) == 0);
}

int main(void) {
        ASSERT(mkdtemp(dir));
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
        RUN(test_names);
        RUN(test_keys_are_no_names);
        RUN(test_no_directory);
        RUN(test_missing_and_odd_files);
        RUN(test_sizes);
        RUN(test_newline_and_binary);
        for (size_t i = 0; i < sizeof(made) / sizeof(made[0]); i++) {
                char path[256];
                snprintf(path, sizeof(path), "%s/%s", dir, made[i]);
                unlink(path);
        }
        ASSERT_INT(rmdir(dir), ==, 0);
        return 0;
}
