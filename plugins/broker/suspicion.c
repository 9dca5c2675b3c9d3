/* broker: worker suspicion (spec §5, horde/suspicions.py). A worker gathers
 * suspicion for a name cut to 100 characters (WORKER_NAME_LONG, and
 * WORKER_NAME_EXTREME over 200), an untrusted owner asking for more than
 * 3072x3072 pixels (EXTREME_MAX_PIXELS), an image finished faster than
 * `unreasonably_fast_mps` (UNREASONABLY_FAST) and too many dropped jobs in an
 * hour (TOO_MANY_JOBS_ABORTED). Each reason counts once per worker, except
 * the last two, which count every time. At HN_SUSPICIOUS_AT the worker is
 * paused (it then gets only its owner's requests, pop.c). The count is kept
 * in the worker's row (stats), shown to moderators as WorkerDetails
 * `suspicious`. */
#include "accounts.h"

bool br_worker_suspect(broker *b, br_worker *w, int reason) {
    (void)b;
    if (reason < 0 || reason > 31)
        return false;
    uint32_t bit = 1u << reason;
    bool repeatable = reason == HN_SUSPICION_UNREASONABLY_FAST ||
                      reason == HN_SUSPICION_TOO_MANY_JOBS_ABORTED;
    if (!repeatable && (w->suspicion_reasons & bit))
        return false;
    w->suspicion_reasons |= bit;
    w->suspicion++;
    if (w->suspicion >= HN_SUSPICIOUS_AT)
        w->paused = true;
    w->dirty = true;
    return true;
}

/* The horde keeps a worker name's first 100 characters (UTF-8 aware: a cut
 * never splits a character); longer names are suspicious. Returns how many
 * characters `name` had. */
size_t br_worker_name_cut(char *name, size_t max_chars) {
    size_t chars = 0, cut = 0;
    for (size_t i = 0; name[i]; i++) {
        if (((unsigned char)name[i] & 0xC0) == 0x80)
            continue; /* a continuation byte */
        if (chars == max_chars)
            cut = i;
        chars++;
    }
    if (chars > max_chars)
        name[cut] = '\0';
    return chars;
}

uint32_t br_owner_bits(const hn_user *u) {
    bool pub = HN_USER_HAS(u, public_workers) && u->public_workers;
    return (u->roles & ~BR_OWNER_PUBLIC_WORKERS) | (pub ? BR_OWNER_PUBLIC_WORKERS : 0);
}
