/* Replays fuzz inputs without libFuzzer: `replay_<target> FILE|DIR...` feeds
 * each file (each regular file of a directory) to LLVMFuzzerTestOneInput
 * once. Built with gcc + ASan/UBSan by `make fuzz-replay`, so the regression
 * corpus runs in `make test` on machines without clang. Exit 0 when every
 * input ran (a sanitizer report aborts the process with its own status). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole file; NULL on error. The copy is exactly `size` bytes of
 * malloc'd memory, so ASan catches reads past the input as libFuzzer does. */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    uint8_t *exact = malloc(len ? len : 1);
    if (exact != NULL)
        memcpy(exact, buf, len);
    free(buf);
    *size = len;
    return exact;
}

static int run_file(const char *path) {
    size_t size = 0;
    uint8_t *data = read_file(path, &size);
    if (data == NULL) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 0;
}

int main(int argc, char **argv) {
    int files = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: not found\n", argv[i]);
            failed++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed += run_file(argv[i]) != 0;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            failed++;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                failed += run_file(path) != 0;
                files++;
            }
        }
        closedir(d);
    }
    printf("replay %s: %d inputs, %d unreadable\n", argv[0], files, failed);
    return failed != 0;
}
