/* logaddr: the three ways an address is shown, and a hash key that is set
 * once, stays across reconfiguration, and is never the all-zero key. */
#include <arpa/inet.h>

#include "config.h"
#include "logaddr.h"
#include "test.h"

static union sockaddr_any v4(const char *a) {
        union sockaddr_any s = { .in = { .sin_family = AF_INET, .sin_port = htons(4242) } };

        ASSERT(inet_pton(AF_INET, a, &s.in.sin_addr) == 1);
        return s;
}

static void show(const struct config *c, const char *addr, char out[static LOGADDR_MAX]) {
        union sockaddr_any s = v4(addr);

        ASSERT_INT(logaddr_configure(c), ==, 0);
        logaddr_client(&s, out);
}

static void test_modes(void) {
        struct config c;
        char a[LOGADDR_MAX];

        config_defaults(&c);
        show(&c, "192.0.2.77", a);
        ASSERT(strcmp(a, "192.0.2.77") == 0 && logaddr_full());
        c.log_addresses = LOG_ADDRESSES_PREFIX;
        c.source_prefix_v4 = 24;
        show(&c, "192.0.2.77", a);
        ASSERT(strcmp(a, "192.0.2.0/24") == 0 && !logaddr_full());
        c.log_addresses = LOG_ADDRESSES_HASH;
        show(&c, "192.0.2.77", a);
        ASSERT(strncmp(a, "hash:", 5) == 0 && strlen(a) == 21 && !strstr(a, "192.0.2"));
}

static void test_key(void) {
        static const char text[] = "0123456789abcdef0123";
        static const unsigned char binary[16] = { 0, 1, 2, 3, 0, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 1 };
        struct config c;
        char a[LOGADDR_MAX], b[LOGADDR_MAX], other[LOGADDR_MAX], first[LOGADDR_MAX];

        config_defaults(&c);
        c.log_addresses = LOG_ADDRESSES_HASH;
        /* Set from material: the same bytes give the same hash, in any process. */
        ASSERT_INT(logaddr_set_key(text, strlen(text)), ==, 0);
        show(&c, "192.0.2.77", a);
        show(&c, "192.0.2.78", other);
        ASSERT(strcmp(a, other) != 0);
        ASSERT_INT(logaddr_set_key(text, strlen(text)), ==, 0);
        show(&c, "192.0.2.77", b);
        ASSERT(strcmp(a, b) == 0);
        memcpy(first, a, sizeof(first));
        /* Known answer, as log_hash_key gave it before credentials came: a
         * key moved from the file into a credential keeps every hash. */
        show(&c, "127.0.0.1", b);
        ASSERT(strcmp(b, "hash:7809ba00b7e24772") == 0);

        /* Reconfiguring (a reload) keeps the key. */
        c.source_prefix_v4 = 16;
        show(&c, "192.0.2.77", b);
        ASSERT(strcmp(first, b) == 0);

        /* Another key, another hash; NUL bytes are part of a key. */
        ASSERT_INT(logaddr_set_key(binary, sizeof(binary)), ==, 0);
        show(&c, "192.0.2.77", b);
        ASSERT(strcmp(first, b) != 0);
        ASSERT_INT(logaddr_set_key(binary, 4), ==, 0);
        show(&c, "192.0.2.77", other);
        ASSERT(strcmp(other, b) != 0);

        /* No material: random, so two starts do not agree. */
        ASSERT_INT(logaddr_set_key(NULL, 0), ==, 0);
        show(&c, "192.0.2.77", a);
        ASSERT_INT(logaddr_set_key(NULL, 0), ==, 0);
        show(&c, "192.0.2.77", b);
        ASSERT(strcmp(a, b) != 0 && strcmp(a, first) != 0);
}

int main(void) {
        RUN(test_modes);
        RUN(test_key);
        return 0;
}
