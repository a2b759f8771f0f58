/* cidr: parsing, matching, source keys, formatting. */
#include <arpa/inet.h>

#include "cidr.h"
#include "test.h"

static struct in6_addr addr(const char *s) {
        union sockaddr_any a = { 0 };
        struct in6_addr out;

        if (inet_pton(AF_INET, s, &a.in.sin_addr) == 1)
                a.in.sin_family = AF_INET;
        else {
                ASSERT(inet_pton(AF_INET6, s, &a.in6.sin6_addr) == 1);
                a.in6.sin6_family = AF_INET6;
        }
        ASSERT(cidr_address_of(&a, &out));
        return out;
}

static bool contains(const struct cidr *p, const char *ip) {
        struct in6_addr a = addr(ip);

        return cidr_contains(p, &a);
}

static const char *source_of(const char *ip, unsigned v4, unsigned v6, char buf[static CIDR_STR_MAX]) {
        struct in6_addr a = addr(ip);
        struct cidr k = cidr_source(&a, v4, v6);

        return cidr_format(&k, buf);
}

static void test_parse_and_format(void) {
        struct cidr p;
        char buf[CIDR_STR_MAX];

        ASSERT_INT(cidr_parse("192.0.2.0/24", &p), ==, 0);
        ASSERT_INT(p.len, ==, 120);
        ASSERT(strcmp(cidr_format(&p, buf), "192.0.2.0/24") == 0);
        ASSERT_INT(cidr_parse("2001:db8::/32", &p), ==, 0);
        ASSERT(strcmp(cidr_format(&p, buf), "2001:db8::/32") == 0);
        ASSERT_INT(cidr_parse("198.51.100.7", &p), ==, 0);
        ASSERT(strcmp(cidr_format(&p, buf), "198.51.100.7") == 0);
        ASSERT_INT(cidr_parse("0.0.0.0/0", &p), ==, 0);
        ASSERT_INT(cidr_parse("::/0", &p), ==, 0);
        ASSERT_INT(p.len, ==, 0);

        const char *bad[] = { "192.0.2.1/24", "192.0.2.0/33", "2001:db8::1/32", "::/129", "example.org",
                              "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "/8", "", "10.0.0.0/0008", "1.2.3" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (cidr_parse(bad[i], &p) == 0)
                        fprintf(stderr, "accepted: %s\n", bad[i]);
                ASSERT_INT(cidr_parse(bad[i], &p), <, 0);
        }
}

static void test_contains(void) {
        struct cidr p;
        struct in6_addr mapped;

        ASSERT_INT(cidr_parse("10.0.0.0/8", &p), ==, 0);
        ASSERT(contains(&p, "10.255.1.2"));
        ASSERT(!contains(&p, "11.0.0.1"));
        /* A dual-stack socket's view of an IPv4 client is the same client. */
        ASSERT_INT(inet_pton(AF_INET6, "::ffff:10.1.1.1", &mapped), ==, 1);
        ASSERT(cidr_contains(&p, &mapped));
        ASSERT(!contains(&p, "::a00:1")); /* not IPv4 at all */
        ASSERT_INT(cidr_parse("2001:db8::/32", &p), ==, 0);
        ASSERT(contains(&p, "2001:db8:ffff::1"));
        ASSERT(!contains(&p, "2001:db9::1"));
        ASSERT_INT(cidr_parse("0.0.0.0/0", &p), ==, 0);
        ASSERT(contains(&p, "8.8.8.8"));
        ASSERT(!contains(&p, "::1"));
}

/* IPv4 and IPv6 are separate families: no IPv6 prefix, however short,
 * holds an IPv4 client (which is held as ::ffff:a.b.c.d), and no IPv4
 * prefix an IPv6 one. A prefix written in the mapped form is IPv4. */
static void test_families_never_mix(void) {
        const char *v6[] = { "::/0", "::/64", "::/80", "::/95", "::fffe:0:0/95", "0:0:0:0:0:ff00::/88" };
        struct cidr p;
        char buf[CIDR_STR_MAX];

        for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
                ASSERT_INT(cidr_parse(v6[i], &p), ==, 0);
                ASSERT(!contains(&p, "127.0.0.1"));
                ASSERT(!contains(&p, "0.0.0.0"));
                ASSERT(!contains(&p, "::ffff:192.0.2.1"));      /* IPv4, seen through a dual-stack socket */
        }
        ASSERT_INT(cidr_parse("::/0", &p), ==, 0);
        ASSERT(contains(&p, "::1"));
        ASSERT(contains(&p, "::"));
        ASSERT(contains(&p, "2001:db8::1"));
        ASSERT(contains(&p, "::a00:1"));        /* IPv4-compatible: IPv6, not IPv4 */
        /* The mapped form of a prefix is the IPv4 prefix it maps. */
        ASSERT_INT(cidr_parse("::ffff:0:0/96", &p), ==, 0);
        ASSERT(strcmp(cidr_format(&p, buf), "0.0.0.0/0") == 0);
        ASSERT(contains(&p, "127.0.0.1"));
        ASSERT(!contains(&p, "::1"));
        ASSERT_INT(cidr_parse("::ffff:192.0.2.0/120", &p), ==, 0);
        ASSERT(strcmp(cidr_format(&p, buf), "192.0.2.0/24") == 0);
        ASSERT(contains(&p, "192.0.2.9"));
        ASSERT(!contains(&p, "192.0.3.9"));
        ASSERT_INT(cidr_parse("0.0.0.0/0", &p), ==, 0);
        ASSERT(!contains(&p, "::"));
        ASSERT(!contains(&p, "2001:db8::1"));
}

static void test_source_keys(void) {
        struct in6_addr a = addr("203.0.113.77"), b = addr("203.0.113.200");
        struct cidr ka = cidr_source(&a, 24, 64), kb = cidr_source(&b, 24, 64);
        char buf[CIDR_STR_MAX];

        ASSERT(memcmp(&ka, &kb, sizeof(ka)) == 0);
        ASSERT(strcmp(cidr_format(&ka, buf), "203.0.113.0/24") == 0);
        ASSERT(strcmp(source_of("203.0.113.77", 32, 64, buf), "203.0.113.77") == 0);
        ASSERT(strcmp(source_of("2001:db8:1:2:3::9", 32, 64, buf), "2001:db8:1:2::/64") == 0);
        ASSERT(strcmp(source_of("2001:db8:1:2:3::9", 32, 0, buf), "::/0") == 0);
}

static void test_hash_ignores_padding(void) {
        struct cidr a, b;
        uint8_t key[16] = { 7 };

        memset(&a, 0x00, sizeof(a));
        memset(&b, 0xa5, sizeof(b)); /* garbage wherever the struct has padding */
        ASSERT_INT(cidr_parse("192.0.2.0/24", &a), ==, 0);
        ASSERT_INT(cidr_parse("192.0.2.0/24", &b), ==, 0);
        ASSERT(cidr_hash(&a, key) == cidr_hash(&b, key));
        ASSERT_INT(cidr_parse("192.0.2.0/25", &b), ==, 0);
        ASSERT(cidr_hash(&a, key) != cidr_hash(&b, key));
}

int main(void) {
        RUN(test_parse_and_format);
        RUN(test_contains);
        RUN(test_families_never_mix);
        RUN(test_source_keys);
        RUN(test_hash_ignores_padding);
        return 0;
}
