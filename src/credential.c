/* See credential.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "credential.h"
#include "util.h"

#define KEY_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/="

bool credential_name_looks_like_key(const char *s) {
        size_t run = 0;

        for (; *s; s++) {
                run = strchr(KEY_CHARS, *s) ? run + 1 : 0;
                if (run >= CREDENTIAL_NAME_RUN_MAX + 1)
                        return true;
        }
        return false;
}

bool credential_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > CREDENTIAL_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
            credential_name_looks_like_key(name))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int fail(int r, unsigned char *buf, size_t size, char *err, size_t errlen, const char *dir,
                const char *name, const char *why) {
        explicit_bzero(buf, size);
        snprintf(err, errlen, "credential %s/%s: %s", dir, name, why);
        return r;
}

int credential_read(const char *name, unsigned char *buf, size_t min, size_t max, char *err, size_t errlen) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        _cleanup_(closep) int dfd = -1, fd = -1;
        char why[96];
        struct stat st;
        size_t len;
        int r;

        explicit_bzero(buf, max + 1);
        if (!dir || dir[0] != '/') {
                snprintf(err, errlen, "credential \"%s\": $CREDENTIALS_DIRECTORY is not set (the service "
                         "manager sets it for LoadCredential=%s:FILE)", name, name);
                return -ENXIO;
        }
        if (!credential_name_valid(name))
                return fail(-EINVAL, buf, max + 1, err, errlen, dir, name, "not a valid credential name");
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) {
                r = negative_errno();
                return fail(r, buf, max + 1, err, errlen, dir, name, strerror(-r));
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return fail(-EINVAL, buf, max + 1, err, errlen, dir, name, "not a regular file");
        r = read_bounded(fd, buf, max + 1, &len);
        if (r < 0)
                return fail(r, buf, max + 1, err, errlen, dir, name, strerror(-r));
        if (len <= max + 1 && len > 0 && buf[len - 1] == '\n')
                len--;
        if (len < min || len > max) {
                if (len > max)
                        snprintf(why, sizeof(why), "more than %zu bytes (needs %zu to %zu)", max, min, max);
                else
                        snprintf(why, sizeof(why), "%zu bytes (needs %zu to %zu)", len, min, max);
                return fail(-EMSGSIZE, buf, max + 1, err, errlen, dir, name, why);
        }
        return (int) len;
}
