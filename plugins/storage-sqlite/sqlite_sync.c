/* storage-sqlite: group commit (see sqlite_sync.h for the idea). */
#include "sqlite_sync.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sqlite_conn.h"

void sq_write_gate_init(sq_write_gate *g) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

void sq_write_gate_destroy(sq_write_gate *g) {
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

bool sq_write_gate_enter(sq_write_gate *g, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    while (g->held) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, &deadline) == ETIMEDOUT && g->held) {
            pthread_mutex_unlock(&g->mu);
            return false;
        }
    }
    g->held = true;
    pthread_mutex_unlock(&g->mu);
    return true;
}

void sq_write_gate_leave(sq_write_gate *g) {
    pthread_mutex_lock(&g->mu);
    g->held = false;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void sq_group_sync_init(sq_group_sync *g) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

void sq_group_sync_destroy(sq_group_sync *g) {
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* fsync of the WAL through SQLite's own file object for it, so the same
 * descriptor SQLite writes with is synced (and, the first time, the directory
 * that holds the new -wal file, which the unix VFS does on the first xSync). */
static int sync_wal(sqlite3 *db) {
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc != SQLITE_OK)
        return rc;
    if (wal == NULL || wal->pMethods == NULL)
        return SQLITE_IOERR_FSYNC; /* no WAL open although we just committed: refuse */
    return wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
}

hn_rc sq_group_sync_wait(sq_group_sync *g, sqlite3 *db, hn_error *err) {
    pthread_mutex_lock(&g->mu);
    /* Our frames were written before this point, so any fsync that starts
     * after we take the ticket covers them. */
    uint64_t ticket = ++g->written;
    while (g->synced < ticket && !g->poisoned) {
        if (g->running) {
            pthread_cond_wait(&g->cv, &g->mu);
            continue;
        }
        g->running = true;
        uint64_t target = g->written; /* everyone who has a ticket by now */
        pthread_mutex_unlock(&g->mu);
        int rc = sync_wal(db);
        pthread_mutex_lock(&g->mu);
        g->running = false;
        g->fsyncs++;
        if (rc == SQLITE_OK && target > g->synced)
            g->synced = target;
        else if (rc != SQLITE_OK)
            g->poisoned = true;
        pthread_cond_broadcast(&g->cv);
    }
    bool ok = g->synced >= ticket;
    pthread_mutex_unlock(&g->mu);
    if (!ok)
        return sq_fail_msg(err, "storage: fsync of the write-ahead log failed; "
                                "refusing writes until the node restarts");
    return HN_OK;
}
