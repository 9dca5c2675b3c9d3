/* test_latent_image.c - image/latent/mask conversions against the torch and
 * ComfyUI formulas they mirror. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/latent_image.h"

static void test_nearest_exact(void **state)
{
    (void)state;
    /* x2: every source pixel duplicated */
    const float in[4] = {1, 2, 3, 4}; /* [1,1,2,2] */
    float out[16];
    sd_resize_nearest_exact(in, 1, 1, 2, 2, 4, 4, out);
    const float want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    assert_memory_equal(out, want, sizeof want);
    /* 3 -> 5 columns: src = floor((dst + 0.5) * 0.6) = 0, 0, 1, 2, 2 */
    const float row[3] = {10, 20, 30};
    float o5[5];
    sd_resize_nearest_exact(row, 1, 1, 1, 3, 1, 5, o5);
    const float w5[5] = {10, 10, 20, 30, 30};
    assert_memory_equal(o5, w5, sizeof w5);
}

static void test_bilinear(void **state)
{
    (void)state;
    /* /8 without antialiasing: the mean of source pixels 8i+3 and 8i+4 */
    float ramp[64], out[8];
    for (int i = 0; i < 64; i++)
        ramp[i] = (float)i;
    sd_resize_bilinear(ramp, 1, 1, 1, 64, 1, 8, out);
    for (int i = 0; i < 8; i++)
        assert_true(fabsf(out[i] - (8.0f * i + 3.5f)) < 1e-5f);
    /* x2 up: edges clamp, inner pixels mix 3:1 */
    const float two[2] = {0, 4};
    float up[4];
    sd_resize_bilinear(two, 1, 1, 1, 2, 1, 4, up);
    const float want[4] = {0, 1, 3, 4};
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(up[i] - want[i]) < 1e-6f);
}

static void test_mask_grow(void **state)
{
    (void)state;
    /* one repaint pixel at (5,5), k = 6, padding 3: rows/cols 3..8 */
    float in[144] = {0}, out[144];
    in[5 * 12 + 5] = 0.9f; /* rounds to 1 */
    in[0] = 0.4f;          /* rounds to 0: no growth */
    sd_mask_grow(in, 12, 12, 6, out);
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 12; x++) {
            float want = (y >= 3 && y <= 8 && x >= 3 && x <= 8) ? 1.0f : 0.0f;
            if (out[y * 12 + x] != want)
                fail_msg("grown mask (%d,%d) = %g, want %g", y, x, (double)out[y * 12 + x],
                         (double)want);
        }
    /* 0.5 rounds half to even (torch.round): to 0 */
    float half[4] = {0.5f, 0, 0, 0}, o[4];
    sd_mask_grow(half, 2, 2, 2, o);
    for (int i = 0; i < 4; i++)
        assert_true(o[i] == 0.0f);
}

static void test_pixels(void **state)
{
    (void)state;
    /* [3,1,4]: -1, 0 (the x.5 boundary: 127.5), 1, 2 (clamped) */
    const float x[12] = {-1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, NAN};
    unsigned char even[12], trunc[12];
    sd_tensor_to_rgb(x, 1, 4, SD_ROUND_HALF_EVEN, even);
    sd_tensor_to_rgb(x, 1, 4, SD_ROUND_TRUNCATE, trunc);
    const unsigned char want_even[12] = {0, 0, 0, 128, 128, 128, 255, 255, 255, 255, 255, 0};
    const unsigned char want_trunc[12] = {0, 0, 0, 127, 127, 127, 255, 255, 255, 255, 255, 0};
    assert_memory_equal(even, want_even, 12);
    assert_memory_equal(trunc, want_trunc, 12);

    unsigned char px[8] = {0, 255, 51, 9, 255, 0, 102, 9}; /* 2 RGBA pixels */
    sd_image img = {2, 1, 4, px};
    float t[6];
    sd_image_to_tensor(&img, t);
    /* planar: R of both, then G, then B; alpha ignored */
    const float want[6] = {-1, 1, 1, -1, 51 / 255.0f * 2 - 1, 102 / 255.0f * 2 - 1};
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(t[i] - want[i]) < 1e-6f);

    unsigned char m[2] = {0, 255};
    sd_image mask = {2, 1, 1, m};
    float mf[2];
    sd_mask_to_float(&mask, mf);
    assert_true(mf[0] == 0.0f && mf[1] == 1.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nearest_exact),
        cmocka_unit_test(test_bilinear),
        cmocka_unit_test(test_mask_grow),
        cmocka_unit_test(test_pixels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
