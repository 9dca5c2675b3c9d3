/* The node: config -> plugins -> init -> freeze -> (test | command | run). */
#ifndef HN_NODE_H
#define HN_NODE_H

#include <stdbool.h>

typedef struct hn_node_opts {
    const char *config_path; /* NULL: the default config */
    const char *listen;      /* overrides node.listen when not NULL */
    const char *data_dir;    /* overrides node.data_dir when not NULL */
    bool test_only;          /* -t */
    int argc;                /* the command and its arguments, if any */
    char **argv;
} hn_node_opts;

/* Runs the node as the options say; returns the process exit status. */
int hn_node_main(const hn_node_opts *opts);

/* The default config file: the installed one, or etc/horde-node.conf of the
 * source tree beside the binary. Writes it to out; -1 if none exists. */
int hn_node_default_config(char *out, size_t len);

#endif
