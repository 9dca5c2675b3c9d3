/* libFuzzer flavour only (not the replay): where a fuzzer writes what it
 * finds. libFuzzer's default is the current directory: a fuzzer started by
 * hand from the repository root once left a `timeout-<sha1>` WebP input
 * there (a starved run on a busy machine passes -timeout and dumps the unit
 * it was running). Unless the command line names -artifact_prefix (as `make
 * fuzz` does), crash-/timeout-/leak-/oom- files now go to
 * <folder of the binary>/crashes/<target>-, next to those of `make fuzz`.
 *
 * libFuzzer calls this before it parses its flags and reads the argv it
 * leaves; argv[0] must stay. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);

#define PREFIX_FLAG "-artifact_prefix="

/* The new argv; kept reachable so LeakSanitizer does not count it. */
static char **with_prefix;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (int i = 1; i < *argc; i++) {
        if (strncmp((*argv)[i], PREFIX_FLAG, strlen(PREFIX_FLAG)) == 0)
            return 0;
    }
    char *dir_copy = strdup((*argv)[0]), *base_copy = strdup((*argv)[0]);
    if (!dir_copy || !base_copy)
        abort();
    const char *dir = dirname(dir_copy), *target = basename(base_copy);
    if (strncmp(target, "fuzz_", 5) == 0)
        target += 5;
    size_t len = strlen(PREFIX_FLAG) + strlen(dir) + strlen(target) + 16;
    char *flag = malloc(len);
    with_prefix = calloc((size_t)*argc + 2, sizeof *with_prefix);
    if (!flag || !with_prefix)
        abort();
    snprintf(flag, len, "%s/crashes", dir);
    if (mkdir(flag, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", flag, strerror(errno));
        exit(1);
    }
    snprintf(flag, len, PREFIX_FLAG "%s/crashes/%s-", dir, target);
    free(dir_copy);
    free(base_copy);
    memcpy(with_prefix, *argv, (size_t)*argc * sizeof *with_prefix);
    with_prefix[(*argc)++] = flag;
    *argv = with_prefix;
    return 0;
}
