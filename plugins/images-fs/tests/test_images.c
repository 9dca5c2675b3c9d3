/* images-fs: files by key, signatures, the node secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "images_files.h"
#include "images_sign.h"

typedef struct fixture {
    char dir[64];
    char images[96];
    images_dir d;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hn-images-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->images, sizeof f->images, "%s/a/images", f->dir); /* parents created */
    hn_error err = {0};
    if (images_dir_open(&f->d, f->images, &err) != HN_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    images_dir_close(&f->d);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static int count_entries(const char *path) {
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_key_rules(void **state) {
    (void)state;
    const char *good[] = {"a", "abc-DEF_123.webp", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.webp",
                          "x.y.z"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_true(images_key_valid(good[i]));
    const char *bad[] = {"", ".", "..", "../etc/passwd", "a/b", "a%2Fb", ".hidden", ".tmp-x",
                         "a..b", "a b", "a\\b", "caf\xc3\xa9", "a\nb", NULL};
    for (size_t i = 0; bad[i]; i++)
        assert_false(images_key_valid(bad[i]));
    assert_false(images_key_valid(NULL));
    char longkey[IMAGES_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey);
    longkey[IMAGES_KEY_MAX] = '\0';
    assert_true(images_key_valid(longkey));
    longkey[IMAGES_KEY_MAX] = 'k';
    longkey[IMAGES_KEY_MAX + 1] = '\0';
    assert_false(images_key_valid(longkey));
}

static void test_put_get_exists_remove(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    static const unsigned char webp[] = "RIFF\x10\0\0\0WEBPVP8 payload";
    assert_int_equal(images_file_exists(&f->d, "img.webp", &err), HN_DECLINED);
    assert_int_equal(images_file_put(&f->d, "img.webp", webp, sizeof webp, &err), HN_OK);
    assert_int_equal(images_file_exists(&f->d, "img.webp", &err), HN_OK);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(images_file_get(&f->d, "img.webp", &data, &len, &err), HN_OK);
    assert_int_equal(len, sizeof webp);
    assert_memory_equal(data, webp, sizeof webp);
    assert_string_equal(images_content_type(data, len), "image/webp");
    free(data);

    /* overwrite: the new content, and no temp file left behind */
    static const unsigned char png[] = "\x89PNG\r\n\x1a\nrest";
    assert_int_equal(images_file_put(&f->d, "img.webp", png, sizeof png, &err), HN_OK);
    assert_int_equal(images_file_get(&f->d, "img.webp", &data, &len, &err), HN_OK);
    assert_int_equal(len, sizeof png);
    assert_string_equal(images_content_type(data, len), "image/png");
    free(data);
    assert_int_equal(count_entries(f->images), 1);

    assert_int_equal(images_file_remove(&f->d, "img.webp", &err), HN_OK);
    assert_int_equal(images_file_remove(&f->d, "img.webp", &err), HN_DECLINED);
    assert_int_equal(images_file_get(&f->d, "img.webp", &data, &len, &err), HN_DECLINED);
    assert_null(data);

    /* the file is where it should be and nowhere else */
    assert_int_equal(images_file_put(&f->d, "k1", "x", 1, &err), HN_OK);
    char path[160];
    snprintf(path, sizeof path, "%s/k1", f->images);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1);

    /* bad keys are refused by every function */
    assert_int_equal(images_file_put(&f->d, "../escape", "x", 1, &err), HN_ERROR);
    assert_string_equal(err.rc, "InvalidImageKey");
    assert_int_equal(images_file_get(&f->d, "..", &data, &len, &err), HN_ERROR);
    assert_int_equal(images_file_exists(&f->d, "a/b", &err), HN_ERROR);
    assert_int_equal(images_file_remove(&f->d, ".", &err), HN_ERROR);
    snprintf(path, sizeof path, "%s/a/escape", f->dir);
    assert_int_not_equal(access(path, F_OK), 0);
}

static void test_symlinks_are_not_followed(void **state) {
    fixture *f = *state;
    char target[160], link_path[160];
    snprintf(target, sizeof target, "%s/secret.txt", f->dir);
    FILE *fp = fopen(target, "w");
    fputs("outside", fp);
    fclose(fp);
    snprintf(link_path, sizeof link_path, "%s/evil", f->images);
    assert_int_equal(symlink(target, link_path), 0);
    hn_error err = {0};
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(images_file_get(&f->d, "evil", &data, &len, &err), HN_DECLINED);
    assert_int_equal(images_file_exists(&f->d, "evil", &err), HN_DECLINED);
}

static void test_stale_temp_files_are_removed_on_open(void **state) {
    fixture *f = *state;
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s/.tmp-0123456789abcdef-key", f->images);
    FILE *fp = fopen(tmp, "w");
    fputs("half", fp);
    fclose(fp);
    hn_error err = {0};
    assert_int_equal(images_file_put(&f->d, "kept", "x", 1, &err), HN_OK);
    images_dir_close(&f->d);
    assert_int_equal(images_dir_open(&f->d, f->images, &err), HN_OK);
    assert_int_not_equal(access(tmp, F_OK), 0);
    assert_int_equal(images_file_exists(&f->d, "kept", &err), HN_OK);
}

static void test_content_types(void **state) {
    (void)state;
    assert_string_equal(images_content_type("\xff\xd8\xff\xe0", 4), "image/jpeg");
    assert_string_equal(images_content_type("GIF89a...", 9), "image/gif");
    assert_string_equal(images_content_type("RIFF1234WAVE", 12), "application/octet-stream");
    assert_string_equal(images_content_type("", 0), "application/octet-stream");
}

/* ---- signatures ------------------------------------------------------------- */

static void test_signatures(void **state) {
    (void)state;
    const char *secret = "0123456789abcdef0123456789abcdef";
    char sig[IMAGES_SIG_HEX + 1], exp[32];
    int64_t now = 1700000000;
    images_sign(secret, "GET", "k.webp", now + 60, sig);
    snprintf(exp, sizeof exp, "%lld", (long long)(now + 60));
    assert_int_equal(strlen(sig), 64);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, sig, now), IMAGES_SIG_OK);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, sig, now + 60), IMAGES_SIG_OK);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, sig, now + 61),
                     IMAGES_SIG_EXPIRED);
    /* everything signed matters */
    assert_int_equal(images_verify(secret, "PUT", "k.webp", exp, sig, now), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(secret, "GET", "k2.webp", exp, sig, now), IMAGES_SIG_BAD);
    assert_int_equal(images_verify("another secret entirely", "GET", "k.webp", exp, sig, now),
                     IMAGES_SIG_BAD);
    char later[32];
    snprintf(later, sizeof later, "%lld", (long long)(now + 6000));
    assert_int_equal(images_verify(secret, "GET", "k.webp", later, sig, now), IMAGES_SIG_BAD);
    char padded[40];
    snprintf(padded, sizeof padded, "0%s", exp);
    assert_int_equal(images_verify(secret, "GET", "k.webp", padded, sig, now), IMAGES_SIG_BAD);
    /* malformed parts */
    assert_int_equal(images_verify(secret, "GET", "k.webp", NULL, sig, now), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, NULL, now), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(secret, "GET", "k.webp", "12a", sig, now), IMAGES_SIG_BAD);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, "abc", now), IMAGES_SIG_BAD);
    char flipped[IMAGES_SIG_HEX + 1];
    memcpy(flipped, sig, sizeof flipped);
    flipped[10] = flipped[10] == '0' ? '1' : '0';
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, flipped, now), IMAGES_SIG_BAD);
    /* upper-case hex of the right signature is accepted */
    char upper[IMAGES_SIG_HEX + 1];
    for (int i = 0; i <= IMAGES_SIG_HEX; i++)
        upper[i] = (char)((sig[i] >= 'a' && sig[i] <= 'f') ? sig[i] - 32 : sig[i]);
    assert_int_equal(images_verify(secret, "GET", "k.webp", exp, upper, now), IMAGES_SIG_OK);
}

static void test_secret_file_is_made_once_private(void **state) {
    fixture *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/images.secret", f->dir);
    char s1[IMAGES_SECRET_MAX + 1], s2[IMAGES_SECRET_MAX + 1];
    bool loose = true;
    hn_error err = {0};
    assert_int_equal(images_secret_load(path, s1, &loose, &err), HN_OK);
    assert_false(loose);
    assert_int_equal(strlen(s1), 64);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(images_secret_load(path, s2, &loose, &err), HN_OK);
    assert_string_equal(s1, s2); /* stable across restarts */

    chmod(path, 0644);
    assert_int_equal(images_secret_load(path, s2, &loose, &err), HN_OK);
    assert_true(loose);

    /* a file too short to be a secret is an error, not a weak key */
    FILE *fp = fopen(path, "w");
    fputs("short\n", fp);
    fclose(fp);
    assert_int_equal(images_secret_load(path, s2, &loose, &err), HN_ERROR);
}

/* Processes starting at the same time end up with one secret. */
static void test_secret_creation_race(void **state) {
    fixture *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/race.secret", f->dir);
    enum { N = 6 };
    int fds[N][2];
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        kids[i] = fork();
        if (kids[i] == 0) {
            char s[IMAGES_SECRET_MAX + 1];
            bool loose;
            hn_error err = {0};
            if (images_secret_load(path, s, &loose, &err) != HN_OK)
                _exit(1);
            _exit(write(fds[i][1], s, 64) == 64 ? 0 : 1);
        }
        close(fds[i][1]);
    }
    char first[65] = {0};
    for (int i = 0; i < N; i++) {
        char got[65] = {0};
        assert_int_equal(read(fds[i][0], got, 64), 64);
        close(fds[i][0]);
        int st;
        waitpid(kids[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (i == 0)
            memcpy(first, got, 64);
        else
            assert_string_equal(first, got);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_rules),
        cmocka_unit_test_setup_teardown(test_put_get_exists_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks_are_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_temp_files_are_removed_on_open, setup,
                                        teardown),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test_setup_teardown(test_secret_file_is_made_once_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_creation_race, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
