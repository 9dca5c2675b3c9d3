/* worker: `horde-node -c FILE worker models|download`.
 *
 * `models` lists what the worker would offer and where each file stands;
 * `download` fetches and verifies every reference model of models_to_load
 * (and the CLIP vocabulary) in the foreground, with a progress bar on a
 * terminal, like the public worker's download_models. Neither needs the node
 * started: they read the config and the models folder only. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "http_client.h"
#include "worker.h"

const char wk_command_usage[] =
    "models | download   (list the worker's models / fetch and verify them)";

static void print_warn(void *ud, const char *msg) {
    (void)ud;
    fprintf(stderr, "warning: %s\n", msg);
}

static int cmd_models(wk_state *w) {
    wk_names local = {0}, paths = {0}, resolved = {0};
    wk_scan_checkpoints(w->cache_home, &local, &paths);
    for (size_t i = 0; i < local.n; i++) {
        const char *why = wk_checkpoint_sane(paths.v[i]);
        printf("%-40s local      %s%s%s%s\n", local.v[i], why ? "BROKEN " : "ready ",
               paths.v[i], why ? " " : "", why ? why : "");
    }
    if (wk_models_resolve(w->have_ref ? &w->ref : NULL, w->conf->models_to_load,
                          w->conf->models_to_skip, NULL, w->conf->load_large_models, &local,
                          &resolved, print_warn, NULL) != 0) {
        wk_names_free(&local);
        wk_names_free(&paths);
        return 1;
    }
    for (size_t i = 0; i < resolved.n; i++) {
        const wk_ref_model *m = w->have_ref ? wk_reference_find(&w->ref, resolved.v[i]) : NULL;
        if (!m)
            continue;
        for (size_t f = 0; f < m->n_files; f++) {
            char path[PATH_MAX + 300];
            snprintf(path, sizeof path, "%s/compvis/%s", w->cache_home, m->files[f].path);
            struct stat st;
            const char *state = m->files[f].sha256 && wk_sidecar_matches(path, m->files[f].sha256)
                                    ? "ready "
                                : stat(path, &st) == 0 ? "unverified "
                                                       : "missing ";
            printf("%-40s reference  %s%s\n", m->name, state, path);
        }
        if (m->n_weights == 0)
            printf("%-40s reference  NO FILE in the reference\n", m->name);
    }
    wk_names_free(&local);
    wk_names_free(&paths);
    wk_names_free(&resolved);
    return 0;
}

int wk_command(int argc, char **argv, void *state) {
    wk_state *w = state;
    if (argc != 2 || (strcmp(argv[1], "models") != 0 && strcmp(argv[1], "download") != 0)) {
        fprintf(stderr, "usage: horde-node [-c FILE] worker %s\n", wk_command_usage);
        return 2;
    }
    char err[512];
    if (wk_reference_load(w, err, sizeof err) < 0) {
        fprintf(stderr, "horde-node worker: model reference: %s\n", err);
        return 1;
    }
    if (strcmp(argv[1], "models") == 0)
        return cmd_models(w);
    wk_vocab_ensure(w);
    int failed = wk_models_download_all(w, true);
    if (!w->vocab_path[0] && w->conf->clip_vocab_url && w->conf->clip_vocab_url[0])
        failed++;
    return failed ? 1 : 0;
}
