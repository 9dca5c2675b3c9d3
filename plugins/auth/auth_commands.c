/* auth: the `user` command (create, list, key-reset). A user interface:
 * results on stdout, errors on stderr, exit status 0 / 1 (failed) / 2 (usage).
 * `user create` and `user key-reset` print the new key alone on the last line
 * of stdout, so scripts can take it with `tail -n 1`. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"

static const char usage[] =
    "usage: horde-node [-c FILE] [--data-dir DIR] user create NAME [--admin] [--moderator] "
    "[--trusted] [--kudos N]\n"
    "       horde-node [-c FILE] [--data-dir DIR] user list\n"
    "       horde-node [-c FILE] [--data-dir DIR] user key-reset NAME|NAME#ID|ID\n";

static void roles_text(uint32_t roles, char *out, size_t n) {
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {{HN_ROLE_ADMIN, "admin"},         {HN_ROLE_MODERATOR, "moderator"},
                 {HN_ROLE_TRUSTED, "trusted"},     {HN_ROLE_FLAGGED, "flagged"},
                 {HN_ROLE_CUSTOMIZER, "customizer"}, {HN_ROLE_SERVICE, "service"},
                 {HN_ROLE_EDUCATION, "education"}, {HN_ROLE_VPN, "vpn"},
                 {HN_ROLE_SPECIAL, "special"}};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (roles & names[i].bit) {
            int w = snprintf(out + used, n - used, "%s%s", used ? "," : "", names[i].name);
            if (w < 0 || (size_t)w >= n - used)
                break;
            used += (size_t)w;
        }
    }
    if (!used)
        snprintf(out, n, "-");
}

static bool parse_kudos(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!s[0] || *end || errno || v < 0 || v > 1e12)
        return false;
    *out = v;
    return true;
}

static int cmd_create(auth_state *a, int argc, char **argv) {
    const char *name = NULL;
    auth_new_user nu = {.concurrency = (int)a->conf->concurrency};
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--admin") == 0) {
            nu.roles |= HN_ROLE_ADMIN;
        } else if (strcmp(arg, "--moderator") == 0) {
            nu.roles |= HN_ROLE_MODERATOR;
        } else if (strcmp(arg, "--trusted") == 0) {
            nu.roles |= HN_ROLE_TRUSTED;
        } else if (strcmp(arg, "--kudos") == 0 || strncmp(arg, "--kudos=", 8) == 0) {
            const char *v = arg[7] == '=' ? arg + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !parse_kudos(v, &nu.kudos)) {
                fprintf(stderr, "user create: --kudos needs a number >= 0\n");
                return 2;
            }
        } else if (arg[0] == '-' && arg[1] == '-') {
            fprintf(stderr, "user create: unknown option %s\n%s", arg, usage);
            return 2;
        } else if (!name) {
            name = arg;
        } else {
            fprintf(stderr, "user create: one NAME only (quote a name with spaces)\n%s", usage);
            return 2;
        }
    }
    if (!name) {
        fprintf(stderr, "user create: NAME is missing\n%s", usage);
        return 2;
    }
    nu.alias = name;
    auth_account acc;
    char key[AUTH_KEY_LEN + 1];
    hn_error err = {0};
    if (auth_users_create(&a->db, &nu, &acc, key, &err) != HN_OK) {
        fprintf(stderr, "user create: %s\n", err.message);
        return 1;
    }
    char roles[128];
    roles_text(acc.user.roles, roles, sizeof roles);
    printf("created user %s (roles: %s, kudos: %.0f). API key (shown once):\n%s\n",
           acc.user.username, roles, acc.kudos, key);
    memset(key, 0, sizeof key);
    return 0;
}

static void print_row(const auth_account *acc, void *ctx) {
    (void)ctx;
    char roles[128], when[32];
    roles_text(acc->user.roles, roles, sizeof roles);
    time_t t = (time_t)acc->user.created;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", gmtime_r(&t, &tm));
    printf("%-6" PRId64 " %-36s %-24s %11d %12.0f  %s%s\n", acc->user.id, acc->user.username,
           roles, acc->user.concurrency, acc->kudos, when, acc->pseudonymous ? "  pseudonymous" : "");
}

static int cmd_list(auth_state *a) {
    printf("%-6s %-36s %-24s %11s %12s  %s\n", "id", "username", "roles", "concurrency", "kudos",
           "created (UTC)");
    hn_error err = {0};
    if (auth_users_list(&a->db, print_row, NULL, &err) != HN_OK) {
        fprintf(stderr, "user list: %s\n", err.message);
        return 1;
    }
    return 0;
}

static int cmd_key_reset(auth_state *a, int argc, char **argv) {
    if (argc != 1) {
        fprintf(stderr, "user key-reset: give exactly one NAME\n%s", usage);
        return 2;
    }
    hn_error err = {0};
    auth_account acc;
    hn_rc rc = auth_users_find_ref(&a->db, argv[0], &acc, &err);
    if (rc == HN_DECLINED) {
        fprintf(stderr, "user key-reset: no user \"%s\"\n", argv[0]);
        return 1;
    }
    char key[AUTH_KEY_LEN + 1];
    if (rc != HN_OK || auth_users_reset_key(&a->db, acc.user.id, key, &err) != HN_OK) {
        fprintf(stderr, "user key-reset: %s\n", err.message);
        return 1;
    }
    printf("new API key for %s (the old key no longer works; shown once):\n%s\n",
           acc.user.username, key);
    memset(key, 0, sizeof key);
    return 0;
}

int auth_command_user(int argc, char **argv, void *state) {
    auth_state *a = state;
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (!a->db.vt) {
        fprintf(stderr, "user: no storage (load a storage plugin before auth)\n");
        return 1;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "create") == 0)
        return cmd_create(a, argc - 2, argv + 2);
    if (strcmp(sub, "list") == 0 && argc == 2)
        return cmd_list(a);
    if (strcmp(sub, "key-reset") == 0)
        return cmd_key_reset(a, argc - 2, argv + 2);
    fprintf(stderr, "user: unknown subcommand \"%s\"\n%s", sub, usage);
    return 2;
}
