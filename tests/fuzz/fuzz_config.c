/* Fuzz target: the config loader (libconfig text, then the node section's
 * schema and the load/providers lists). hn_config_load reads a path, so the
 * input is handed over as an in-memory file (memfd). */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.conf", 0);
    if (fd < 0)
        return 0;
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    hn_config *cfg = NULL;
    char err[512];
    if (hn_config_load(path, &cfg, err, sizeof err) == 0) {
        for (size_t i = 0; i < hn_config_load_count(cfg); i++)
            (void)hn_config_load_at(cfg, i);
        (void)hn_config_provider_choices(cfg);
        char where[256];
        (void)hn_config_where(cfg, "plugins.broker.max_body", where, sizeof where);
        static const char *const loaded[] = {"broker", "auth", NULL};
        (void)hn_config_check_sections(cfg, loaded, err, sizeof err);
        hn_config_free(cfg);
    }
    close(fd);
    return 0;
}
