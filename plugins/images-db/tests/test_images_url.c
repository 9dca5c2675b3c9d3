/* images-db: key rules, signature edges and content sniffing (plugins/images-fs/shared/images_url.c).
 * The HMAC itself is checked against Python's hmac in test_images_db.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "images-fs/shared/images_url.h"

#define S "a-secret-of-enough-length"

static void test_keys(void **state) {
    (void)state;
    char k128[129], k129[130];
    memset(k128, 'a', 128);
    k128[128] = '\0';
    memset(k129, 'a', 129);
    k129[129] = '\0';
    assert_true(images_key_valid("job-1.webp"));
    assert_true(images_key_valid("A_b.C-9"));
    assert_true(images_key_valid(k128));
    assert_false(images_key_valid(k129));
    const char *bad[] = {NULL, "", ".", "..", ".hidden", "a..b", "a/b", "a\\b", "k ey", "é"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(images_key_valid(bad[i]));
}

static void test_expiry_edge_and_canonical_decimal(void **state) {
    (void)state;
    char sig[IMAGES_SIG_HEX + 1];
    images_sign(S, "GET", "k", 1000, sig);
    /* valid up to and including its second */
    assert_int_equal(images_verify(S, "GET", "k", "1000", sig, 1000), IMAGES_SIG_OK);
    assert_int_equal(images_verify(S, "GET", "k", "1000", sig, 1001), IMAGES_SIG_EXPIRED);
    assert_int_equal(images_verify(S, "GET", "k", "01000", sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "GET", "k", "+1000", sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "GET", "k", "", sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "GET", "k", NULL, sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "GET", "k", "1000", NULL, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "PUT", "k", "1000", sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S, "GET", "k2", "1000", sig, 10), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(S "x", "GET", "k", "1000", sig, 10), IMAGES_SIG_BAD);
    char upper[IMAGES_SIG_HEX + 1];
    for (int i = 0; i <= IMAGES_SIG_HEX; i++)
        upper[i] = (char)(sig[i] >= 'a' && sig[i] <= 'f' ? sig[i] - 32 : sig[i]);
    assert_int_equal(images_verify(S, "GET", "k", "1000", upper, 10), IMAGES_SIG_OK);
    sig[10] = sig[10] == '0' ? '1' : '0';
    assert_int_equal(images_verify(S, "GET", "k", "1000", sig, 10), IMAGES_SIG_BAD);
}

static void test_content_types(void **state) {
    (void)state;
    assert_string_equal(images_content_type("RIFF\x24\0\0\0WEBPVP8 ", 16), "image/webp");
    assert_string_equal(images_content_type("\x89PNG\r\n\x1a\n", 8), "image/png");
    assert_string_equal(images_content_type("\xff\xd8\xff\xe0", 4), "image/jpeg");
    assert_string_equal(images_content_type("GIF89a", 6), "image/gif");
    assert_string_equal(images_content_type("GIF87a", 6), "image/gif");
    assert_string_equal(images_content_type("RIFF", 4), "application/octet-stream");
    assert_string_equal(images_content_type("", 0), "application/octet-stream");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_expiry_edge_and_canonical_decimal),
        cmocka_unit_test(test_content_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
