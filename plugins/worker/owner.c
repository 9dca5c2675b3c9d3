/* worker: the node-owner user of an all-in-one node.
 *
 * With the local horde and no api_key, the worker pops as a user of this
 * node's own auth plugin, made on the first start through hook user_ensure
 * (auth implements it). Keys are stored hashed by auth, so the worker keeps
 * the clear key it was given in <data>/worker/owner.key (mode 0600) and
 * checks it on every start (GET /api/v2/find_user through the local horde);
 * a missing or refused key is replaced by a fresh one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker.h"

static void set_key(wk_state *w, const char *key) {
    pthread_mutex_lock(&w->lock); /* job threads read it under the lock */
    wk_copy(w->apikey, sizeof w->apikey, key);
    pthread_mutex_unlock(&w->lock);
}

static void key_path(const wk_state *w, char *out, size_t len) {
    snprintf(out, len, "%s/worker/owner.key", w->data_dir);
}

static int read_key(const char *path, char *key, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || !line[0] || strlen(line) >= len)
        return -1;
    wk_copy(key, len, line);
    return 0;
}

static int write_key(const wk_state *w, const char *path, const char *key, char *err,
                     size_t errlen) {
    char dir[PATH_MAX + 16], tmp[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/worker", w->data_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[256];
    int n = snprintf(line, sizeof line, "%s\n", key);
    bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* 1: the horde knows the key, 0: it refuses it, -1: no answer. */
static int key_works(wk_state *w, const char *key) {
    int status = 0;
    json_t *resp = NULL;
    hn_error e = {0};
    if (w->horde->call(w->horde_state, "GET", "/v2/find_user", key, NULL, &status, &resp, &e) !=
        HN_OK)
        return -1;
    json_decref(resp);
    if (status == 200)
        return 1;
    return status == 401 || status == 403 || status == 404 ? 0 : -1;
}

int wk_owner_key(wk_state *w, char *err, size_t errlen) {
    char path[PATH_MAX + 32];
    key_path(w, path, sizeof path);
    char key[128];
    if (read_key(path, key, sizeof key) == 0) {
        int ok = key_works(w, key);
        if (ok == 1) {
            set_key(w, key);
            return 0;
        }
        if (ok < 0) {
            /* cannot tell now: use it; a refused pop will say so */
            set_key(w, key);
            return 0;
        }
        w->api->log(w->self, HN_LOG_WARN, "the key in %s is refused; making a new one", path);
    }
    hn_user user;
    memset(&user, 0, sizeof user);
    user.size = sizeof user;
    char fresh[128] = "";
    hn_error e = {0};
    hn_rc rc = hn_run_user_ensure(w->api, w->conf->owner_name, HN_ROLE_TRUSTED, true, &user,
                                  fresh, sizeof fresh, &e);
    if (rc == HN_DECLINED) {
        snprintf(err, errlen,
                 "no plugin can create the node-owner user (load auth, with hook user_ensure) "
                 "and plugins.worker.api_key is not set");
        return -1;
    }
    if (rc != HN_OK || !fresh[0]) {
        snprintf(err, errlen, "cannot make the node-owner user \"%s\": %s", w->conf->owner_name,
                 e.message[0] ? e.message : "no key was given");
        return -1;
    }
    if (write_key(w, path, fresh, err, errlen) != 0)
        return -1;
    set_key(w, fresh);
    w->api->log(w->self, HN_LOG_INFO, "the worker runs as user %s (key in %s)", user.username,
                path);
    return 0;
}
