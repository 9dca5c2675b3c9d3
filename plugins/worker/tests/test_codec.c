/* worker: images (WebP out, WebP/PNG in), base64 and the file checks of
 * http_client.c (sha256, sidecars). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <png.h>

#include "http_client.h"
#include "image_codec.h"

static void fill(hn_image *img, int w, int h, int ch) {
    img->width = w;
    img->height = h;
    img->channels = ch;
    img->pixels = malloc((size_t)w * h * ch);
    assert_non_null(img->pixels);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++)
                img->pixels[((size_t)y * w + x) * ch + c] =
                    (unsigned char)(c == 3 ? 255 : (x + y + c * 40) % 256); /* smooth */
}

static void test_webp_roundtrip(void **state) {
    (void)state;
    hn_image img;
    fill(&img, 96, 64, 3);
    unsigned char *webp = NULL;
    size_t len = 0;
    char err[256];
    assert_int_equal(wk_webp_encode(&img, 95.0f, &webp, &len, err, sizeof err), 0);
    assert_true(len > 12);
    assert_memory_equal(webp, "RIFF", 4);
    assert_memory_equal(webp + 8, "WEBP", 4);
    hn_image back;
    assert_int_equal(wk_image_decode(webp, len, &back, err, sizeof err), 0);
    assert_int_equal(back.width, 96);
    assert_int_equal(back.height, 64);
    assert_int_equal(back.channels, 3);
    /* lossy at q95: close to the original */
    double sum = 0;
    size_t n = (size_t)96 * 64 * 3;
    for (size_t i = 0; i < n; i++)
        sum += abs((int)back.pixels[i] - (int)img.pixels[i]);
    assert_true(sum / (double)n < 4.0);
    /* the same image twice gives the same bytes (results are checkable) */
    unsigned char *again = NULL;
    size_t len2 = 0;
    assert_int_equal(wk_webp_encode(&img, 95.0f, &again, &len2, err, sizeof err), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(webp, again, len);
    free(again);
    free(webp);
    wk_image_free(&back);
    wk_image_free(&img);

    hn_image bad = {0, 0, 3, NULL};
    assert_int_equal(wk_webp_encode(&bad, 95.0f, &webp, &len, err, sizeof err), -1);
}

static void test_png_decode(void **state) {
    (void)state;
    hn_image img;
    fill(&img, 20, 10, 4);
    png_image p;
    memset(&p, 0, sizeof p);
    p.version = PNG_IMAGE_VERSION;
    p.width = 20;
    p.height = 10;
    p.format = PNG_FORMAT_RGBA;
    png_alloc_size_t size = 0;
    assert_true(png_image_write_to_memory(&p, NULL, &size, 0, img.pixels, 0, NULL));
    void *mem = malloc(size);
    assert_true(png_image_write_to_memory(&p, mem, &size, 0, img.pixels, 0, NULL));
    hn_image back;
    char err[256];
    assert_int_equal(wk_image_decode(mem, size, &back, err, sizeof err), 0);
    assert_int_equal(back.channels, 4);
    assert_int_equal(back.width, 20);
    assert_memory_equal(back.pixels, img.pixels, (size_t)20 * 10 * 4); /* lossless */
    wk_image_free(&back);
    /* a cut PNG and junk are refused, not crashed on */
    assert_int_equal(wk_image_decode(mem, size / 2, &back, err, sizeof err), -1);
    assert_int_equal(wk_image_decode("hello world!", 12, &back, err, sizeof err), -1);
    free(mem);
    wk_image_free(&img);
}

static void test_base64(void **state) {
    (void)state;
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n < sizeof data; n += 7) {
        char *t = wk_b64_encode(data, n);
        assert_non_null(t);
        assert_int_equal(strlen(t), (n + 2) / 3 * 4);
        size_t back_len = 0;
        unsigned char *back = wk_b64_decode(t, &back_len);
        assert_non_null(back);
        assert_int_equal(back_len, n);
        assert_memory_equal(back, data, n);
        free(back);
        free(t);
    }
    size_t len = 0;
    unsigned char *d = wk_b64_decode("aGVs\nbG8", &len); /* newline, no padding */
    assert_non_null(d);
    assert_int_equal(len, 5);
    assert_memory_equal(d, "hello", 5);
    free(d);
    assert_null(wk_b64_decode("aGVs*G8=", &len));
    assert_null(wk_b64_decode("aG==VsbG8", &len)); /* data after padding */
}

static void test_sha256_and_sidecar(void **state) {
    (void)state;
    char dir[] = "/tmp/wk_test_shaXXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[256];
    snprintf(file, sizeof file, "%s/model.ckpt", dir);
    FILE *f = fopen(file, "wb");
    fputs("abc", f);
    fclose(f);
    char hex[65], err[512];
    assert_int_equal(wk_sha256_file(file, hex, err, sizeof err), 0);
    /* FIPS 180-2 test vector for "abc" */
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char side[300];
    wk_sidecar_path(file, side, sizeof side);
    char want[300];
    snprintf(want, sizeof want, "%s/model.sha256", dir);
    assert_string_equal(side, want);
    assert_false(wk_sidecar_matches(file, hex));
    /* verify: a wrong hash is a mismatch and writes no sidecar */
    assert_int_equal(wk_verify_file(file, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                                    err, sizeof err),
                     0);
    assert_false(access(side, F_OK) == 0);
    /* the right one (upper case accepted) writes it, and later checks trust it */
    assert_int_equal(wk_verify_file(file, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
                                    err, sizeof err),
                     1);
    assert_true(wk_sidecar_matches(file, hex));
    assert_int_equal(wk_verify_file(file, hex, err, sizeof err), 1);
    unlink(side);
    unlink(file);
    assert_int_equal(wk_sha256_file(file, hex, err, sizeof err), -1);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webp_roundtrip),
        cmocka_unit_test(test_png_decode),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_sha256_and_sidecar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
