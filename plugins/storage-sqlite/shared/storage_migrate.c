/* storage-sqlite/shared: migrations over a provider's vtable (storage_migrate.h). */
#include "storage-sqlite/shared/storage_migrate.h"

#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 2, 3))) static hn_rc fail(hn_error *err, const char *fmt, ...) {
    if (!err)
        return HN_ERROR;
    err->status = 500;
    snprintf(err->rc, sizeof err->rc, "StorageError");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return HN_ERROR;
}

static int read_version(const storage_migrator *m, hn_db *c, const char *owner, hn_error *err) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT version FROM %s WHERE owner = ?", m->table);
    hn_value args[] = {HN_V_TEXT(owner)};
    hn_stmt *st = m->vt->query(c, sql, args, 1, err);
    if (!st)
        return -1;
    int r = m->vt->step(st, err);
    int v = r == 1 ? (int)m->vt->col_int(st, 0) : 0;
    m->vt->finish(st);
    return r < 0 ? -1 : v;
}

int storage_schema_version(const storage_migrator *m, const char *owner, hn_error *err) {
    hn_db *c = m->vt->acquire(m->state, err);
    if (!c)
        return -1;
    int v = read_version(m, c, owner, err);
    m->vt->release(m->state, c);
    return v;
}

/* One step in its own transaction; the version is read again inside it, so
 * a step someone else applied meanwhile is not applied twice. */
static hn_rc apply_step(const storage_migrator *m, hn_db *c, const char *owner,
                        const hn_migration *step, hn_error *err) {
    const hn_storage_vt *vt = m->vt;
    if (vt->begin(c, err) != HN_OK)
        return HN_ERROR;
    if (m->lock_sql && vt->exec(c, m->lock_sql, m->lock_args, m->n_lock_args, NULL, err) != HN_OK)
        goto fail;
    int cur = read_version(m, c, owner, err);
    if (cur < 0)
        goto fail;
    if (cur >= step->version)
        return vt->commit(c, err); /* someone else got here first */
    if (m->exec_script(c, step->sql, err) != HN_OK) {
        if (err) {
            char what[sizeof err->message];
            snprintf(what, sizeof what, "%s", err->message);
            snprintf(err->message, sizeof err->message, "migration %s %d: %.400s", owner,
                     step->version, what);
        }
        goto fail;
    }
    char sql[200];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (owner, version) VALUES (?, ?) "
             "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
             m->table);
    hn_value args[] = {HN_V_TEXT(owner), HN_V_INT(step->version)};
    if (vt->exec(c, sql, args, 2, NULL, err) != HN_OK || vt->commit(c, err) != HN_OK)
        goto fail;
    return HN_OK;
fail:
    vt->rollback(c, NULL);
    return HN_ERROR;
}

hn_rc storage_migrate(const storage_migrator *m, const char *owner, const hn_migration *steps,
                      size_t n, hn_error *err) {
    if (!owner || !owner[0])
        return fail(err, "storage: migrate: no owner");
    for (size_t i = 0; i < n; i++) {
        if (steps[i].version <= 0 || (i > 0 && steps[i].version <= steps[i - 1].version) ||
            !steps[i].sql)
            return fail(err,
                        "storage: migrate %s: step %zu: versions must be 1, 2, ... in "
                        "increasing order, each with SQL",
                        owner, i);
    }
    hn_db *c = m->vt->acquire(m->state, err);
    if (!c)
        return HN_ERROR;
    hn_rc rc = HN_OK;
    int cur = read_version(m, c, owner, err);
    if (cur < 0)
        rc = HN_ERROR;
    for (size_t i = 0; rc == HN_OK && i < n; i++) {
        if (steps[i].version > cur)
            rc = apply_step(m, c, owner, &steps[i], err);
    }
    m->vt->release(m->state, c);
    return rc;
}
