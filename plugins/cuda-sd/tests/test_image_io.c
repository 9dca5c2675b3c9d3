/* test_image_io.c - PNG/WebP decode and encode, conversions, resize. */
#include "golden.h"

#include <unistd.h>

#include "engine/image_io.h"

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        fail_msg("cannot read %s", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A deterministic test picture with structure in every channel. */
static void fill_pattern(sd_image *img)
{
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++)
            for (int c = 0; c < img->channels; c++)
                img->pixels[((size_t)y * img->width + x) * img->channels + c] =
                    (unsigned char)((x * 7 + y * 13 + c * 61 + ((x ^ y) & 8) * 9) & 255);
}

/* The golden pipeline PNGs decode to exactly their image_uint8 tensors. */
static void test_decode_golden_pngs(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(json_object_get(index, "pipelines"), i, e) {
        char rel[256], path[1024], err[256];
        snprintf(rel, sizeof rel, "samplers/%s",
                 json_string_value(json_object_get(e, "png")));
        golden_path(path, sizeof path, rel);
        sd_image img;
        if (sd_image_load(path, 0, &img, err, sizeof err) != 0)
            fail_msg("%s", err);
        snprintf(rel, sizeof rel, "samplers/%s",
                 json_string_value(json_object_get(e, "file")));
        sd_model_file *f = golden_open(rel);
        const sd_tensor_info *t = golden_tensor(f, "image_uint8");
        assert_int_equal(t->dtype, SD_DTYPE_U8);
        assert_int_equal(img.height, t->shape[0]);
        assert_int_equal(img.width, t->shape[1]);
        assert_int_equal(img.channels, 3);
        assert_memory_equal(img.pixels, t->data, t->nbytes);
        sd_image_free(&img);
        sd_model_file_close(f);
        n++;
    }
    assert_true(n > 0);
    json_decref(index);
}

static void test_png_roundtrip(void **state)
{
    (void)state;
    for (int ch = 1; ch <= 4; ch++) {
        if (ch == 2)
            continue;
        sd_image img, back;
        assert_int_equal(sd_image_alloc(&img, 37, 23, ch), 0);
        fill_pattern(&img);
        unsigned char *png;
        size_t len;
        char err[256];
        assert_int_equal(sd_image_encode_png(&img, &png, &len, err, sizeof err), 0);
        assert_int_equal(sd_image_sniff(png, len), SD_IMAGE_PNG);
        assert_int_equal(sd_image_decode(png, len, ch, &back, err, sizeof err), 0);
        assert_int_equal(back.width, 37);
        assert_int_equal(back.height, 23);
        assert_memory_equal(back.pixels, img.pixels, 37 * 23 * (size_t)ch);
        sd_image_free(&back);
        /* as stored: RGBA stays 4 channels, the rest come back as RGB */
        assert_int_equal(sd_image_decode(png, len, 0, &back, err, sizeof err), 0);
        assert_int_equal(back.channels, ch == 4 ? 4 : 3);
        sd_image_free(&back);
        free(png);
        sd_image_free(&img);
    }
}

static void test_webp_roundtrip(void **state)
{
    (void)state;
    char err[256];
    for (int ch = 3; ch <= 4; ch++) {
        sd_image img, back;
        assert_int_equal(sd_image_alloc(&img, 64, 48, ch), 0);
        fill_pattern(&img);
        unsigned char *webp;
        size_t len;
        /* lossless: exact */
        assert_int_equal(sd_image_encode_webp(&img, -1.0f, &webp, &len, err, sizeof err), 0);
        assert_int_equal(sd_image_sniff(webp, len), SD_IMAGE_WEBP);
        assert_int_equal(sd_image_decode(webp, len, ch, &back, err, sizeof err), 0);
        assert_memory_equal(back.pixels, img.pixels, 64 * 48 * (size_t)ch);
        sd_image_free(&back);
        free(webp);
        sd_image_free(&img);
    }
    /* lossy at the worker's quality 95 on a smooth picture: close, with
     * the alpha channel kept */
    sd_image img, back;
    assert_int_equal(sd_image_alloc(&img, 96, 80, 4), 0);
    for (int y = 0; y < 80; y++)
        for (int x = 0; x < 96; x++) {
            unsigned char *p = img.pixels + ((size_t)y * 96 + x) * 4;
            p[0] = (unsigned char)(x * 2 + 40);
            p[1] = (unsigned char)(y * 3);
            p[2] = (unsigned char)(128 + 100 * sin(x * 0.1) * cos(y * 0.07));
            p[3] = (unsigned char)(255 - y);
        }
    unsigned char *webp;
    size_t len;
    assert_int_equal(sd_image_encode_webp(&img, 95.0f, &webp, &len, err, sizeof err), 0);
    assert_int_equal(sd_image_decode(webp, len, 0, &back, err, sizeof err), 0);
    assert_int_equal(back.channels, 4);
    double se = 0;
    size_t n = (size_t)img.width * img.height * 4;
    for (size_t k = 0; k < n; k++) {
        double d = (double)img.pixels[k] - back.pixels[k];
        se += d * d;
    }
    double psnr = 10.0 * log10(255.0 * 255.0 / (se / (double)n + 1e-12));
    if (!(psnr > 35.0))
        fail_msg("WebP q95 PSNR %.1f dB", psnr);
    sd_image_free(&back);
    free(webp);
    sd_image_free(&img);
}

static void test_channel_conversion(void **state)
{
    (void)state;
    sd_image rgba, out;
    char err[256];
    assert_int_equal(sd_image_alloc(&rgba, 2, 1, 4), 0);
    const unsigned char px[8] = {255, 0, 0, 10, 12, 200, 99, 255};
    memcpy(rgba.pixels, px, 8);
    assert_int_equal(sd_image_convert(&rgba, 1, &out, err, sizeof err), 0);
    /* PIL convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 */
    assert_int_equal(out.pixels[0], 76);
    assert_int_equal(out.pixels[1], (12 * 19595 + 200 * 38470 + 99 * 7471 + 0x8000) >> 16);
    sd_image_free(&out);
    assert_int_equal(sd_image_convert(&rgba, 3, &out, err, sizeof err), 0);
    const unsigned char rgb[6] = {255, 0, 0, 12, 200, 99};
    assert_memory_equal(out.pixels, rgb, 6);
    sd_image gray;
    assert_int_equal(sd_image_convert(&out, 4, &gray, err, sizeof err), 0);
    assert_int_equal(gray.pixels[3], 255); /* opaque alpha added */
    sd_image_free(&gray);
    sd_image_free(&out);
    sd_image_free(&rgba);
}

static void test_bad_input_is_an_error(void **state)
{
    (void)state;
    char err[256];
    sd_image img;
    const unsigned char junk[64] = {1, 2, 3};
    assert_int_equal(sd_image_decode(junk, sizeof junk, 0, &img, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a PNG or WebP"));
    assert_null(img.pixels);

    /* every truncation of a valid PNG that loses image data (all but the
     * 12-byte IEND trailer), and of a WebP, fails cleanly */
    sd_image src;
    assert_int_equal(sd_image_alloc(&src, 40, 30, 3), 0);
    fill_pattern(&src);
    unsigned char *png, *webp;
    size_t plen, wlen;
    assert_int_equal(sd_image_encode_png(&src, &png, &plen, err, sizeof err), 0);
    assert_int_equal(sd_image_encode_webp(&src, 80.0f, &webp, &wlen, err, sizeof err), 0);
    for (size_t cut = 0; cut < plen - 12; cut += 7) {
        if (sd_image_decode(png, cut, 0, &img, err, sizeof err) == 0)
            fail_msg("PNG cut at %zu of %zu decoded", cut, plen);
    }
    for (size_t cut = 0; cut < wlen; cut += 5) {
        if (sd_image_decode(webp, cut, 0, &img, err, sizeof err) == 0)
            fail_msg("WebP cut at %zu of %zu decoded", cut, wlen);
    }
    /* a corrupted IDAT byte is caught by the CRC/zlib checks */
    png[plen / 2] ^= 0x55;
    assert_int_equal(sd_image_decode(png, plen, 0, &img, err, sizeof err), -1);
    free(png);
    free(webp);
    sd_image_free(&src);

    assert_int_equal(sd_image_load("/nonexistent/x.png", 0, &img, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.png"));
    assert_int_equal(sd_image_alloc(&img, SD_IMAGE_MAX_SIDE + 1, 1, 3), -1);
    assert_int_equal(sd_image_alloc(&img, 4, 4, 2), -1);
}

static void test_save_and_load_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_image_io.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char png_path[256], webp_path[256], bad_path[256], err[256];
    snprintf(png_path, sizeof png_path, "%s/a.png", dir);
    snprintf(webp_path, sizeof webp_path, "%s/a.WEBP", dir);
    snprintf(bad_path, sizeof bad_path, "%s/a.bmp", dir);
    sd_image img, back;
    assert_int_equal(sd_image_alloc(&img, 16, 16, 4), 0);
    fill_pattern(&img);
    assert_int_equal(sd_image_save(png_path, &img, 95.0f, err, sizeof err), 0);
    assert_int_equal(sd_image_save(webp_path, &img, -1.0f, err, sizeof err), 0);
    assert_int_equal(sd_image_save(bad_path, &img, 95.0f, err, sizeof err), -1);
    assert_int_equal(sd_image_load(png_path, 4, &back, err, sizeof err), 0);
    assert_memory_equal(back.pixels, img.pixels, 16 * 16 * 4);
    sd_image_free(&back);
    size_t len;
    unsigned char *bytes = read_all(webp_path, &len);
    assert_int_equal(sd_image_sniff(bytes, len), SD_IMAGE_WEBP);
    free(bytes);
    assert_int_equal(sd_image_load(webp_path, 4, &back, err, sizeof err), 0);
    assert_memory_equal(back.pixels, img.pixels, 16 * 16 * 4);
    sd_image_free(&back);
    sd_image_free(&img);
    unlink(png_path);
    unlink(webp_path);
    rmdir(dir);
}

static void test_lanczos_resize(void **state)
{
    (void)state;
    char err[256];
    sd_image flat, out;
    assert_int_equal(sd_image_alloc(&flat, 30, 20, 3), 0);
    memset(flat.pixels, 77, 30 * 20 * 3);
    /* a constant image stays constant (weights are normalised) */
    assert_int_equal(sd_image_resize_lanczos(&flat, 64, 7, &out, err, sizeof err), 0);
    for (size_t k = 0; k < 64 * 7 * 3; k++)
        assert_int_equal(out.pixels[k], 77);
    sd_image_free(&out);
    sd_image_free(&flat);

    /* a horizontal ramp resized keeps its values at the mapped positions */
    sd_image ramp;
    assert_int_equal(sd_image_alloc(&ramp, 256, 4, 1), 0);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 256; x++)
            ramp.pixels[y * 256 + x] = (unsigned char)x;
    assert_int_equal(sd_image_resize_lanczos(&ramp, 64, 4, &out, err, sizeof err), 0);
    for (int x = 2; x < 62; x++) {
        double want = (x + 0.5) * 4.0 - 0.5; /* centre of the source span */
        if (!(fabs(out.pixels[x] - want) <= 1.0))
            fail_msg("ramp pixel %d = %d, want %.1f", x, out.pixels[x], want);
    }
    sd_image_free(&out);
    sd_image_free(&ramp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_golden_pngs),
        cmocka_unit_test(test_png_roundtrip),
        cmocka_unit_test(test_webp_roundtrip),
        cmocka_unit_test(test_channel_conversion),
        cmocka_unit_test(test_bad_input_is_an_error),
        cmocka_unit_test(test_save_and_load_files),
        cmocka_unit_test(test_lanczos_resize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
