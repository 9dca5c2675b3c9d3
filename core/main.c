/* horde-node: the command line. Everything else is in node.c. */
#include <stdio.h>
#include <string.h>

#include "node.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: horde-node [-c FILE] [--listen ADDR:PORT] [--data-dir DIR] [-t] "
            "[COMMAND ARGS...]\n"
            "  -c FILE          config file (default: the installed etc/horde-node.conf)\n"
            "  --listen A:P     override node.listen\n"
            "  --data-dir DIR   override node.data_dir\n"
            "  -t               check the config, load and init every plugin, print the\n"
            "                   plugins, providers, hook order and routes, and exit\n"
            "  -h, --help       this text; `horde-node help` lists plugin commands\n"
            "Without a command the node runs until SIGTERM/SIGINT (SIGHUP: reload).\n");
}

static const char *value_of(int argc, char **argv, int *i, const char *flag) {
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) == 0 && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "horde-node: %s needs a value\n", flag);
        return NULL;
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    hn_node_opts o = {0};
    int i = 1;
    /* Node options come first; the first other word starts the command. */
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
            strncmp(a, "--config=", 9) == 0) {
            if ((o.config_path = value_of(argc, argv, &i, a[1] == 'c' ? "-c" : "--config")) ==
                NULL)
                return 2;
        } else if (strncmp(a, "--listen", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
            if ((o.listen = value_of(argc, argv, &i, "--listen")) == NULL)
                return 2;
        } else if (strncmp(a, "--data-dir", 10) == 0 && (a[10] == '\0' || a[10] == '=')) {
            if ((o.data_dir = value_of(argc, argv, &i, "--data-dir")) == NULL)
                return 2;
        } else if (strcmp(a, "-t") == 0) {
            o.test_only = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "horde-node: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    o.argc = argc - i;
    o.argv = argv + i;
    return hn_node_main(&o);
}
