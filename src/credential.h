/* Credentials that the service manager passes (systemd.exec(5),
 * LoadCredential=): files in $CREDENTIALS_DIRECTORY, readable only by the
 * service, so a secret never has to sit in the world-readable
 * configuration file of a DynamicUser= service. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define CREDENTIAL_NAME_MAX 64
/* Letters and digits in a row in a name, at most: a key is a long run of
 * them (64 hex digits as the package makes it, base64 with '+', '/' and
 * '='), a name is made of words. */
#define CREDENTIAL_NAME_RUN_MAX 15

/* True when `name` is usable as a credential name: 1 to CREDENTIAL_NAME_MAX
 * characters out of letters, digits, '.', '_' and '-', not "." or "..",
 * and no key (credential_name_looks_like_key()). A valid name can be
 * printed: it cannot be a key pasted in its place. */
bool credential_name_valid(const char *name);

/* True when s has more than CREDENTIAL_NAME_RUN_MAX letters, digits, '+',
 * '/' or '=' in a row: it may be a key (hex or base64), and is never
 * printed. */
bool credential_name_looks_like_key(const char *s);

/* Reads $CREDENTIALS_DIRECTORY/name into buf (which holds max + 1 bytes),
 * without one trailing newline (what `echo KEY >file` adds); every other
 * byte, NUL included, is data. Returns the length, min to max, or a
 * negative errno with a one-line reason in err that names the file and
 * never shows its content: -ENXIO when $CREDENTIALS_DIRECTORY is not set
 * (or not absolute), -EINVAL for a bad name or something other than a
 * regular file, -EMSGSIZE when the data is shorter than min or longer
 * than max, or what open(2) or read(2) failed with (-ENOENT: missing).
 * On failure buf holds zeros; on success the caller wipes it after use. */
int credential_read(const char *name, unsigned char *buf, size_t min, size_t max, char *err, size_t errlen);
