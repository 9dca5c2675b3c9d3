/* kudos: operations on the ledger; see ops.h. */
#include "ops.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static hn_rc refuse(hn_error *err, const char *rc, const char *message) {
    err->status = 400;
    snprintf(err->rc, sizeof(err->rc), "%s", rc);
    snprintf(err->message, sizeof(err->message), "%s", message);
    return HN_ERROR;
}

/* Runs a one-row, one-column integer query inside tx; *found false if no row. */
static hn_rc query_int(kd_tx *tx, const char *sql, const hn_value *args, size_t n, int64_t *out,
                       bool *found) {
    hn_stmt *st = tx->l->vt->query(tx->db, sql, args, n, tx->err);
    if (!st)
        return HN_ERROR;
    int r = tx->l->vt->step(st, tx->err);
    if (r == 1)
        *out = tx->l->vt->col_int(st, 0);
    tx->l->vt->finish(st);
    if (found)
        *found = r == 1;
    return r < 0 ? HN_ERROR : HN_OK;
}

/* Locks two accounts in ascending id order (they may be the same user). */
static hn_rc lock_two(kd_tx *tx, int64_t a_id, kd_account *a, int64_t b_id, kd_account *b) {
    if (a_id == b_id) {
        if (kd_tx_lock(tx, a_id, a) != HN_OK)
            return HN_ERROR;
        *b = *a;
        return HN_OK;
    }
    if (a_id < b_id)
        return kd_tx_lock(tx, a_id, a) == HN_OK && kd_tx_lock(tx, b_id, b) == HN_OK ? HN_OK
                                                                                    : HN_ERROR;
    return kd_tx_lock(tx, b_id, b) == HN_OK && kd_tx_lock(tx, a_id, a) == HN_OK ? HN_OK : HN_ERROR;
}

/* Promoted here, the role not yet set in auth: trusted meanwhile. Once the
 * role is set, the role alone decides (a moderator may take it away; the
 * escrow then starts again and may promote again, as on the horde). */
bool kd_trusted_pending(const kd_account *a) {
    return a->promoted && !a->role_synced;
}

/* §3.5: escrow above the threshold, an old enough account, not anonymous:
 * the escrow becomes spendable and the user trusted. */
static hn_rc maybe_promote(kd_tx *tx, kd_account *a, const kd_owner *o, const kd_trust *t,
                           const char *event, bool *promoted) {
    *promoted = false;
    if (t->threshold <= 0 || o->id == 0 || o->trusted || o->suspicious || kd_trusted_pending(a))
        return HN_OK;
    if (a->escrow <= kd_cents(t->threshold) || tx->now - o->created < t->min_age_s)
        return HN_OK;
    int64_t e = a->escrow;
    kd_posting out = {KD_ESCROW, -e, "escrow_release", NULL, NULL, -1, event};
    kd_posting in = {KD_BALANCE, e, "escrow_release", "accumulated", NULL, -1, event};
    hn_value args[] = {HN_V_INT(a->user_id)};
    if (kd_tx_post(tx, a, &out) != HN_OK || kd_tx_post(tx, a, &in) != HN_OK ||
        kd_tx_exec(tx,
                   "UPDATE kudos_accounts SET promoted = 1, role_synced = 0 WHERE user_id = ?",
                   args, 1, NULL) != HN_OK)
        return HN_ERROR;
    a->promoted = true;
    a->role_synced = false;
    *promoted = true;
    return HN_OK;
}

/* ---- requests ----------------------------------------------------------------------------- */

hn_rc kd_apply_activate(kd_tx *tx, const kd_request_info *r) {
    char event[96];
    snprintf(event, sizeof(event), "activate:%s", r->id);
    hn_rc ev = kd_tx_event(tx, event);
    if (ev != HN_OK)
        return ev == HN_DONE ? HN_OK : HN_ERROR; /* done before: nothing to do */
    kd_account a, owner;
    /* another user's style: they get 2, the requester pays 2 more */
    bool styled = r->style_owner > 0 && r->style_owner != r->user_id;
    hn_value row[] = {HN_V_TEXT(r->id),
                      HN_V_INT(r->user_id),
                      HN_V_DOUBLE(r->price),
                      HN_V_INT(r->burn.has_source),
                      HN_V_DOUBLE(r->burn.pp_multiplier),
                      HN_V_INT(r->burn.slow_workers),
                      HN_V_INT(r->burn.worker_blacklist),
                      HN_V_INT(r->n),
                      HN_V_INT(r->reservation != NULL),
                      HN_V_INT(tx->now),
                      HN_V_INT(tx->now)};
    if ((styled ? lock_two(tx, r->user_id, &a, r->style_owner, &owner)
                : kd_tx_lock(tx, r->user_id, &a)) != HN_OK ||
        kd_tx_exec(tx,
                   "INSERT INTO kudos_requests (id, user_id, price, has_source, pp_mult, slow,"
                   " blacklist, n, reserved, created, touched)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                   row, 11, NULL) != HN_OK)
        return HN_ERROR;
    if (r->reservation) {
        hn_value bind[] = {HN_V_TEXT(r->id), HN_V_INT(tx->now), HN_V_TEXT(r->reservation),
                           HN_V_INT(r->user_id)};
        if (kd_tx_exec(tx,
                       "UPDATE kudos_reservations SET request_id = ?, touched = ?"
                       " WHERE token = ? AND user_id = ?",
                       bind, 4, NULL) != HN_OK)
            return HN_ERROR;
    }
    /* the activation tax: no burn multipliers, counted in consumption */
    kd_posting tax = {KD_BALANCE, -kd_cents(r->activation_tax + (styled ? 2 : 0)), "activation",
                      "accumulated", r->id, -1, event};
    if (kd_tx_post(tx, &a, &tax) != HN_OK || kd_tx_clamp(tx, &a, event) != HN_OK)
        return HN_ERROR;
    kd_posting style = {KD_BALANCE, kd_cents(2), "style", "styled", r->id, r->user_id, event};
    if (styled && kd_tx_post(tx, &owner, &style) != HN_OK)
        return HN_ERROR;
    return HN_OK;
}

hn_rc kd_apply_release(kd_tx *tx, const char *request_id) {
    hn_value a[] = {HN_V_TEXT(request_id)};
    if (kd_tx_exec(tx, "DELETE FROM kudos_reservations WHERE request_id = ?", a, 1, NULL) != HN_OK)
        return HN_ERROR;
    return kd_tx_exec(tx, "UPDATE kudos_requests SET reserved = 0 WHERE id = ?", a, 1, NULL);
}

hn_rc kd_apply_touch(kd_tx *tx, const char *request_id) {
    hn_value a[] = {HN_V_INT(tx->now), HN_V_TEXT(request_id)};
    if (kd_tx_exec(tx, "UPDATE kudos_requests SET touched = ? WHERE id = ?", a, 2, NULL) != HN_OK)
        return HN_ERROR;
    return kd_tx_exec(tx, "UPDATE kudos_reservations SET touched = ? WHERE request_id = ?", a, 2,
                      NULL);
}

/* The request's burn inputs; defaults (no multipliers) when not on record. */
static hn_rc request_burn(kd_tx *tx, const char *request_id, kd_burn_flags *f, int *n, int *ok,
                          bool *reserved, bool *found) {
    *f = (kd_burn_flags){false, 1.0, true, false};
    *n = 0;
    *ok = 0;
    *reserved = false;
    *found = false;
    if (!request_id)
        return HN_OK;
    hn_value args[] = {HN_V_TEXT(request_id)};
    hn_stmt *st = tx->l->vt->query(
        tx->db, "SELECT has_source, pp_mult, slow, blacklist, n, ok, reserved FROM kudos_requests"
        " WHERE id = ?",
        args, 1, tx->err);
    if (!st)
        return HN_ERROR;
    int r = tx->l->vt->step(st, tx->err);
    if (r == 1) {
        const hn_storage_vt *vt = tx->l->vt;
        f->has_source = vt->col_int(st, 0) != 0;
        f->pp_multiplier = vt->col_double(st, 1);
        f->slow_workers = vt->col_int(st, 2) != 0;
        f->worker_blacklist = vt->col_int(st, 3) != 0;
        *n = (int)vt->col_int(st, 4);
        *ok = (int)vt->col_int(st, 5);
        *reserved = vt->col_int(st, 6) != 0;
        *found = true;
    }
    tx->l->vt->finish(st);
    return r < 0 ? HN_ERROR : HN_OK;
}

static hn_rc recorded_bridge(kd_tx *tx, const char *worker_id, char *out, size_t len) {
    out[0] = '\0';
    if (!worker_id)
        return HN_OK;
    hn_value args[] = {HN_V_TEXT(worker_id)};
    hn_stmt *st = tx->l->vt->query(tx->db, "SELECT bridge_agent FROM kudos_workers WHERE id = ?",
                                   args, 1, tx->err);
    if (!st)
        return HN_ERROR;
    int r = tx->l->vt->step(st, tx->err);
    if (r == 1)
        snprintf(out, len, "%s", tx->l->vt->col_text(st, 0));
    tx->l->vt->finish(st);
    return r < 0 ? HN_ERROR : HN_OK;
}

static hn_rc add_worker_kudos(kd_tx *tx, const char *worker_id, int64_t user_id, int64_t generated,
                              int64_t uptime) {
    if (!worker_id || !worker_id[0])
        return HN_OK;
    hn_value args[] = {HN_V_TEXT(worker_id), HN_V_INT(user_id), HN_V_INT(generated),
                       HN_V_INT(uptime),     HN_V_INT(tx->now)};
    return kd_tx_exec(tx,
                      "INSERT INTO kudos_workers (id, user_id, generated, uptime, touched)"
                      " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                      " generated = kudos_workers.generated + excluded.generated,"
                      " uptime = kudos_workers.uptime + excluded.uptime,"
                      " touched = excluded.touched",
                      args, 5, NULL);
}

/* Credits an owner: all spendable, or (untrusted, not anonymous) split with
 * `escrow_part` of it into escrow; then the promotion check. */
static hn_rc credit_owner(kd_tx *tx, kd_account *a, const kd_owner *o, double spendable,
                          double escrow, const char *reason, const char *ref, const char *event,
                          const kd_trust *t, bool *promoted) {
    kd_posting in = {KD_BALANCE, kd_cents(spendable), reason, "accumulated", ref, -1, event};
    kd_posting held = {KD_ESCROW, kd_cents(escrow), reason, NULL, ref, -1, event};
    if (kd_tx_post(tx, a, &in) != HN_OK || kd_tx_post(tx, a, &held) != HN_OK)
        return HN_ERROR;
    return maybe_promote(tx, a, o, t, event, promoted);
}

static bool escrows(const kd_owner *o, const kd_account *a) {
    return o->id != 0 && !o->trusted && !kd_trusted_pending(a);
}

hn_rc kd_apply_settle_job(kd_tx *tx, const kd_job_settle *s, const kd_trust *t,
                          kd_settled *out) {
    memset(out, 0, sizeof(*out));
    char event[96];
    snprintf(event, sizeof(event), "job:%s", s->job_id);
    hn_rc ev = kd_tx_event(tx, event);
    if (ev != HN_OK) {
        out->duplicate = ev == HN_DONE;
        return ev == HN_DONE ? HN_OK : HN_ERROR;
    }
    kd_burn_flags burn;
    int n, ok;
    bool reserved;
    char bridge[256];
    kd_account req, own;
    if (request_burn(tx, s->request_id, &burn, &n, &ok, &reserved, &out->request_known) != HN_OK)
        return HN_ERROR;
    if (s->bridge_agent)
        snprintf(bridge, sizeof(bridge), "%s", s->bridge_agent);
    else if (recorded_bridge(tx, s->worker_id, bridge, sizeof(bridge)) != HN_OK)
        return HN_ERROR;
    if (lock_two(tx, s->requester_id, &req, s->owner.id, &own) != HN_OK)
        return HN_ERROR;

    /* the requester: a censored image still pays the per-image tax */
    out->charged = kd_burn(&burn, s->censored ? 0 : s->gen_kudos);
    int64_t charge = kd_cents(out->charged);
    kd_posting usage = {KD_BALANCE, -charge, "usage", "accumulated", s->request_id, -1, event};
    if (kd_tx_post(tx, &req, &usage) != HN_OK || kd_tx_clamp(tx, &req, event) != HN_OK)
        return HN_ERROR;
    if (reserved) { /* only requests holding a reservation need the bookkeeping */
        hn_value consume[] = {HN_V_INT(charge), HN_V_INT(charge), HN_V_TEXT(s->request_id)};
        hn_value done[] = {HN_V_INT(tx->now), HN_V_TEXT(s->request_id)};
        if (kd_tx_exec(tx,
                       "UPDATE kudos_reservations SET amount = CASE WHEN amount > ?"
                       " THEN amount - ? ELSE 0 END WHERE request_id = ?",
                       consume, 3, NULL) != HN_OK ||
            kd_tx_exec(tx, "UPDATE kudos_requests SET ok = ok + 1, touched = ? WHERE id = ?",
                       done, 2, NULL) != HN_OK)
            return HN_ERROR;
        /* every image paid: what is left of the reservation is free again */
        if (ok + 1 >= n &&
            kd_tx_exec(tx, "DELETE FROM kudos_reservations WHERE request_id = ?", &done[1], 1,
                       NULL) != HN_OK)
            return HN_ERROR;
    }

    /* the owner (maybe the requester themself: then `own` is re-read) */
    if (s->owner.id == s->requester_id)
        own = req;
    out->earned = s->gen_kudos * kd_bridge_multiplier(bridge[0] ? bridge : NULL);
    double spendable = out->earned, escrow = 0;
    if (escrows(&s->owner, &own))
        kd_escrow_split(out->earned, &spendable, &escrow);
    out->escrowed = escrow;
    if (credit_owner(tx, &own, &s->owner, spendable, escrow, "generation", s->job_id, event, t,
                     &out->promoted) != HN_OK ||
        add_worker_kudos(tx, s->worker_id, s->owner.id, kd_cents(out->earned), 0) != HN_OK)
        return HN_ERROR;
    return HN_OK;
}

hn_rc kd_op_settle_job(kd_ledger *l, const kd_job_settle *s, const kd_trust *t, int64_t now,
                       kd_settled *out, hn_error *err) {
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    if (kd_apply_settle_job(&tx, s, t, out) != HN_OK) {
        kd_tx_abort(&tx);
        return HN_ERROR;
    }
    return kd_tx_commit(&tx);
}

/* ---- workers --------------------------------------------------------------------------------- */

hn_rc kd_apply_worker_seen(kd_tx *tx, const char *worker_id, int64_t user_id,
                          const char *bridge_agent) {
    hn_value args[] = {HN_V_TEXT(worker_id), HN_V_INT(user_id),
                       HN_V_TEXT(bridge_agent ? bridge_agent : ""), HN_V_INT(tx->now)};
    return kd_tx_exec(tx,
                      "INSERT INTO kudos_workers (id, user_id, bridge_agent, touched)"
                      " VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                      " user_id = excluded.user_id, bridge_agent = excluded.bridge_agent,"
                      " touched = excluded.touched",
                      args, 4, NULL);
}

hn_rc kd_apply_uptime(kd_tx *tx, const char *worker_id, const kd_owner *owner, double amount,
                      const kd_trust *t, const char *event, bool *promoted) {
    *promoted = false;
    hn_rc ev = event ? kd_tx_event(tx, event) : HN_OK;
    if (ev != HN_OK)
        return ev == HN_DONE ? HN_OK : HN_ERROR;
    kd_account a;
    if (kd_tx_lock(tx, owner->id, &a) != HN_OK)
        return HN_ERROR;
    /* untrusted owners earn uptime entirely into escrow */
    bool held = escrows(owner, &a);
    if (credit_owner(tx, &a, owner, held ? 0 : amount, held ? amount : 0, "uptime", worker_id,
                     event, t, promoted) != HN_OK ||
        add_worker_kudos(tx, worker_id, owner->id, 0, kd_cents(amount)) != HN_OK)
        return HN_ERROR;
    return HN_OK;
}

/* One operation in its own transaction. */
#define KD_ONE_TX(l, now, err, call)                                                          \
    do {                                                                                      \
        kd_tx tx_;                                                                            \
        if (kd_tx_begin((l), &tx_, (now), (err)) != HN_OK)                                    \
            return HN_ERROR;                                                                  \
        kd_tx *tx = &tx_;                                                                     \
        if ((call) != HN_OK) {                                                                \
            kd_tx_abort(tx);                                                                  \
            return HN_ERROR;                                                                  \
        }                                                                                     \
        return kd_tx_commit(tx);                                                              \
    } while (0)

hn_rc kd_op_activate(kd_ledger *l, const kd_request_info *r, int64_t now, hn_error *err) {
    KD_ONE_TX(l, now, err, kd_apply_activate(tx, r));
}

hn_rc kd_op_release_request(kd_ledger *l, const char *request_id, int64_t now, hn_error *err) {
    KD_ONE_TX(l, now, err, kd_apply_release(tx, request_id));
}

hn_rc kd_op_touch_request(kd_ledger *l, const char *request_id, int64_t now, hn_error *err) {
    KD_ONE_TX(l, now, err, kd_apply_touch(tx, request_id));
}

hn_rc kd_op_worker_seen(kd_ledger *l, const char *worker_id, int64_t user_id,
                        const char *bridge_agent, int64_t now, hn_error *err) {
    KD_ONE_TX(l, now, err, kd_apply_worker_seen(tx, worker_id, user_id, bridge_agent));
}

hn_rc kd_op_uptime(kd_ledger *l, const char *worker_id, const kd_owner *owner, double amount,
                   const kd_trust *t, const char *event, int64_t now, bool *promoted,
                   hn_error *err) {
    KD_ONE_TX(l, now, err, kd_apply_uptime(tx, worker_id, owner, amount, t, event, promoted));
}

hn_rc kd_op_worker_kudos(kd_ledger *l, const char *worker_id, double *generated, double *uptime,
                         hn_error *err) {
    hn_db *db = l->vt->acquire(l->state, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_TEXT(worker_id)};
    hn_stmt *st = l->vt->query(db, "SELECT generated, uptime FROM kudos_workers WHERE id = ?", args,
                               1, err);
    hn_rc rc = HN_ERROR;
    if (st) {
        int r = l->vt->step(st, err);
        if (r == 1) {
            *generated = (double)l->vt->col_int(st, 0) / 100.0;
            *uptime = (double)l->vt->col_int(st, 1) / 100.0;
        }
        rc = r == 1 ? HN_OK : r == 0 ? HN_DECLINED : HN_ERROR;
        l->vt->finish(st);
    }
    l->vt->release(l->state, db);
    return rc;
}

/* ---- transfers, awards, admin ------------------------------------------------------------------ */

hn_rc kd_op_transfer(kd_ledger *l, const kd_transfer *t, int64_t now, bool *replayed,
                     hn_error *err) {
    *replayed = false;
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    int64_t v;
    bool found;
    hn_value fast[] = {HN_V_INT(t->target.id), HN_V_INT(t->source.id), HN_V_INT(now - 60)};
    if (query_int(&tx,
                  "SELECT 1 FROM kudos_ledger WHERE user_id = ? AND reason = 'transfer_out'"
                  " AND counterparty = ? AND created >= ? LIMIT 1",
                  fast, 3, &v, &found) != HN_OK)
        goto fail;
    hn_rc rc = HN_OK;
    if (found)
        rc = refuse(err, "TooFastKudosTransfers",
                    "This user transferred kudos to you very recently. Please wait at least 1 "
                    "minute.");
    else if (t->source.suspicious)
        rc = refuse(err, "FaultWhenKudosSending",
                    "Something went wrong when sending kudos. Please contact the mods.");
    else if (t->source.roles & HN_ROLE_FLAGGED)
        rc = refuse(err, "SourceAccountFlagged",
                    "The target account has been flagged for suspicious activity and tranferring "
                    "kudos to them is blocked.");
    else if (t->source.roles & HN_ROLE_EDUCATION)
        rc = refuse(err, "EducationCannotSendKudos", "Education accounts cannot transfer kudos away");
    else if (t->target.suspicious)
        rc = refuse(err, "FaultWhenKudosReceiving",
                    "Something went wrong when receiving kudos. Please contact the mods.");
    else if (t->target.roles & HN_ROLE_FLAGGED)
        rc = refuse(err, "TargetAccountFlagged",
                    "Your account has been flagged for suspicious activity. Please contact the "
                    "mods.");
    else if (t->source.deleted || t->target.deleted)
        rc = refuse(err, "DeletedUser", "This user has been deleted.");
    else if (t->amount < 0)
        rc = refuse(err, "NegativeKudosTransfer", "Nice try...");
    else if (t->amount == 0)
        rc = refuse(err, "InvalidKudosTransferAmount", "Transfer amount must be positive.");
    if (rc != HN_OK) {
        kd_tx_abort(&tx);
        return rc;
    }
    int64_t cents = (int64_t)t->amount * 100;
    if (t->idempotency_key) {
        hn_value key[] = {HN_V_INT(t->source.id), HN_V_TEXT(t->idempotency_key)};
        hn_stmt *st = l->vt->query(tx.db,
                                   "SELECT target_id, amount FROM kudos_idempotency"
                                   " WHERE source_id = ? AND idem_key = ?",
                                   key, 2, err);
        if (!st)
            goto fail;
        int r = l->vt->step(st, err);
        int64_t prev_target = r == 1 ? l->vt->col_int(st, 0) : -1;
        int64_t prev_amount = r == 1 ? l->vt->col_int(st, 1) : -1;
        l->vt->finish(st);
        if (r < 0)
            goto fail;
        if (r == 1) {
            kd_tx_abort(&tx);
            if (prev_target != t->target.id || prev_amount != cents)
                return refuse(err, "IdempotencyKeyConflict",
                              "Idempotency key was already used with different transfer "
                              "parameters.");
            *replayed = true;
            return HN_OK;
        }
    }
    kd_account src, dst;
    int64_t available;
    if (lock_two(&tx, t->source.id, &src, t->target.id, &dst) != HN_OK ||
        kd_tx_available(&tx, &src, &available) != HN_OK)
        goto fail;
    if (available < cents) {
        kd_tx_abort(&tx);
        return refuse(err, "KudosTransferNotEnough", "Not enough kudos.");
    }
    /* to an education account it is a donation */
    const char *out_detail = (t->target.roles & HN_ROLE_EDUCATION) ? "donated" : "gifted";
    kd_posting debit = {KD_BALANCE, -cents, "transfer_out", out_detail, NULL, t->target.id, NULL};
    kd_posting credit = {KD_BALANCE, cents, "transfer_in", "received", NULL, t->source.id, NULL};
    if (kd_tx_post(&tx, &src, &debit) != HN_OK || kd_tx_post(&tx, &dst, &credit) != HN_OK)
        goto fail;
    if (t->idempotency_key) {
        hn_value row[] = {HN_V_INT(t->source.id), HN_V_TEXT(t->idempotency_key),
                          HN_V_INT(t->target.id), HN_V_INT(cents), HN_V_INT(now)};
        if (kd_tx_exec(&tx,
                       "INSERT INTO kudos_idempotency (source_id, idem_key, target_id, amount,"
                       " created) VALUES (?, ?, ?, ?, ?)",
                       row, 5, NULL) != HN_OK)
            goto fail;
    }
    return kd_tx_commit(&tx);
fail:
    kd_tx_abort(&tx);
    return HN_ERROR;
}

hn_rc kd_op_grant(kd_ledger *l, int64_t user_id, double amount, const char *reason,
                  const char *detail, int64_t now, kd_account *after, hn_error *err) {
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    kd_posting p = {KD_BALANCE, kd_cents(amount), reason, detail, NULL, -1, NULL};
    if (kd_tx_lock(&tx, user_id, after) != HN_OK || kd_tx_post(&tx, after, &p) != HN_OK ||
        (p.cents < 0 && kd_tx_clamp(&tx, after, NULL) != HN_OK)) {
        kd_tx_abort(&tx);
        return HN_ERROR;
    }
    return kd_tx_commit(&tx);
}

/* ---- promotion and auth's roles ------------------------------------------------------------------ */

hn_rc kd_op_unsynced_promotions(kd_ledger *l, int64_t *ids, size_t max, size_t *n,
                                hn_error *err) {
    *n = 0;
    hn_db *db = l->vt->acquire(l->state, err);
    if (!db)
        return HN_ERROR;
    hn_stmt *st = l->vt->query(db,
                               "SELECT user_id FROM kudos_accounts WHERE promoted = 1 AND"
                               " role_synced = 0 ORDER BY user_id",
                               NULL, 0, err);
    int r = st ? 0 : -1;
    while (st && *n < max && (r = l->vt->step(st, err)) == 1)
        ids[(*n)++] = l->vt->col_int(st, 0);
    if (st)
        l->vt->finish(st);
    l->vt->release(l->state, db);
    return r < 0 ? HN_ERROR : HN_OK;
}

hn_rc kd_op_mark_role_synced(kd_ledger *l, int64_t user_id, hn_error *err) {
    hn_db *db = l->vt->acquire(l->state, err);
    if (!db)
        return HN_ERROR;
    hn_value a[] = {HN_V_INT(user_id)};
    hn_rc rc = l->vt->exec(db, "UPDATE kudos_accounts SET role_synced = 1 WHERE user_id = ?", a,
                           1, NULL, err);
    l->vt->release(l->state, db);
    return rc;
}

/* ---- monthly kudos ------------------------------------------------------------------------------- */

int64_t kd_month_after(int64_t t) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year = tm.tm_year + 1900 + (tm.tm_mon == 11);
    int mon = (tm.tm_mon + 1) % 12;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int last_day = days[mon] + (mon == 1 && leap);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon;
    if (tm.tm_mday > last_day)
        tm.tm_mday = last_day;
    return (int64_t)timegm(&tm);
}

typedef struct monthly_due {
    int64_t id;
    int64_t cents;
} monthly_due;

/* Users with something to receive each month. */
static hn_rc monthly_users(kd_ledger *l, double moderator_amount, monthly_due **out, size_t *n,
                           hn_error *err) {
    *out = NULL;
    *n = 0;
    hn_db *db = l->vt->acquire(l->state, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_INT(moderator_amount > 0), HN_V_INT(HN_ROLE_MODERATOR)};
    hn_stmt *st = l->vt->query(db,
                               "SELECT id, monthly_kudos, roles FROM users WHERE id > 0 AND"
                               " (monthly_kudos > 0 OR (? = 1 AND (roles & ?) <> 0)) ORDER BY id",
                               args, 2, err);
    size_t cap = 0;
    int r = st ? 0 : -1;
    while (st && (r = l->vt->step(st, err)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            monthly_due *grown = realloc(*out, cap * sizeof(**out));
            if (!grown) {
                r = -1;
                break;
            }
            *out = grown;
        }
        int64_t cents = l->vt->col_int(st, 1) * 100;
        if ((uint32_t)l->vt->col_int(st, 2) & HN_ROLE_MODERATOR)
            cents += kd_cents(moderator_amount);
        (*out)[(*n)++] = (monthly_due){l->vt->col_int(st, 0), cents};
    }
    if (st)
        l->vt->finish(st);
    l->vt->release(l->state, db);
    if (r < 0) {
        free(*out);
        *out = NULL;
        *n = 0;
        return HN_ERROR;
    }
    return HN_OK;
}

/* Pays one user if due: one transaction. */
static hn_rc pay_monthly(kd_ledger *l, const monthly_due *u, int64_t now, bool *paid,
                         hn_error *err) {
    *paid = false;
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    kd_account a;
    int64_t last = 0;
    bool found;
    hn_value id[] = {HN_V_INT(u->id)};
    if (kd_tx_lock(&tx, u->id, &a) != HN_OK ||
        query_int(&tx, "SELECT monthly_last FROM kudos_accounts WHERE user_id = ?", id, 1, &last,
                  &found) != HN_OK)
        goto fail;
    if (last != 0 && now < kd_month_after(last)) {
        kd_tx_abort(&tx);
        return HN_OK;
    }
    char event[96];
    snprintf(event, sizeof(event), "recurring:%" PRId64 ":%" PRId64, u->id, last);
    hn_rc ev = kd_tx_event(&tx, event);
    if (ev == HN_ERROR)
        goto fail;
    if (ev == HN_OK) {
        kd_posting p = {KD_BALANCE, u->cents, "recurring", "recurring", NULL, -1, event};
        hn_value upd[] = {HN_V_INT(now), HN_V_INT(u->id)};
        if (kd_tx_post(&tx, &a, &p) != HN_OK ||
            kd_tx_exec(&tx, "UPDATE kudos_accounts SET monthly_last = ? WHERE user_id = ?", upd,
                       2, NULL) != HN_OK)
            goto fail;
        *paid = true;
    }
    return kd_tx_commit(&tx);
fail:
    kd_tx_abort(&tx);
    return HN_ERROR;
}

hn_rc kd_op_monthly(kd_ledger *l, int64_t now, double moderator_amount, int *paid, hn_error *err) {
    *paid = 0;
    if (!l->have_monthly)
        return HN_OK;
    monthly_due *users;
    size_t n;
    if (monthly_users(l, moderator_amount, &users, &n, err) != HN_OK)
        return HN_ERROR;
    hn_rc rc = HN_OK;
    for (size_t i = 0; i < n && rc == HN_OK; i++) {
        bool one = false;
        rc = pay_monthly(l, &users[i], now, &one, err);
        *paid += one;
    }
    free(users);
    return rc;
}

hn_rc kd_op_monthly_last(kd_ledger *l, int64_t user_id, int64_t *last, hn_error *err) {
    *last = 0;
    hn_db *db = l->vt->acquire(l->state, err);
    if (!db)
        return HN_ERROR;
    hn_value a[] = {HN_V_INT(user_id)};
    hn_stmt *st = l->vt->query(db, "SELECT monthly_last FROM kudos_accounts WHERE user_id = ?", a,
                               1, err);
    int r = st ? l->vt->step(st, err) : -1;
    if (r == 1)
        *last = l->vt->col_int(st, 0);
    if (st)
        l->vt->finish(st);
    l->vt->release(l->state, db);
    return r < 0 ? HN_ERROR : HN_OK;
}

/* ---- reservations and pruning --------------------------------------------------------------------- */

hn_rc kd_op_reserve(kd_ledger *l, int64_t user_id, int64_t cents, const char *token, int64_t now,
                    bool *granted, int64_t *available, hn_error *err) {
    *granted = false;
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    kd_account a;
    if (kd_tx_lock(&tx, user_id, &a) != HN_OK || kd_tx_available(&tx, &a, available) != HN_OK)
        goto fail;
    if (cents > *available) {
        kd_tx_abort(&tx);
        return HN_OK;
    }
    hn_value row[] = {HN_V_TEXT(token), HN_V_INT(user_id), HN_V_INT(cents), HN_V_INT(now),
                      HN_V_INT(now)};
    if (kd_tx_exec(&tx,
                   "INSERT INTO kudos_reservations (token, user_id, amount, created, touched)"
                   " VALUES (?, ?, ?, ?, ?)",
                   row, 5, NULL) != HN_OK)
        goto fail;
    if (kd_tx_commit(&tx) != HN_OK)
        return HN_ERROR;
    *granted = true;
    return HN_OK;
fail:
    kd_tx_abort(&tx);
    return HN_ERROR;
}

hn_rc kd_op_prune(kd_ledger *l, int64_t now, int64_t unbound_ttl_s, int64_t request_ttl_s,
                  hn_error *err) {
    kd_tx tx;
    if (kd_tx_begin(l, &tx, now, err) != HN_OK)
        return HN_ERROR;
    hn_value unbound[] = {HN_V_INT(now - unbound_ttl_s)};
    hn_value stale[] = {HN_V_INT(now - request_ttl_s)};
    hn_value old_events[] = {HN_V_INT(now - 86400)};
    if (kd_tx_exec(&tx,
                   "DELETE FROM kudos_reservations WHERE request_id IS NULL AND touched < ?",
                   unbound, 1, NULL) != HN_OK ||
        kd_tx_exec(&tx,
                   "DELETE FROM kudos_reservations WHERE request_id IS NOT NULL AND touched < ?",
                   stale, 1, NULL) != HN_OK ||
        kd_tx_exec(&tx, "DELETE FROM kudos_requests WHERE touched < ?", stale, 1, NULL) != HN_OK ||
        kd_tx_exec(&tx, "DELETE FROM kudos_events WHERE created < ?", old_events, 1, NULL) !=
            HN_OK) {
        kd_tx_abort(&tx);
        return HN_ERROR;
    }
    return kd_tx_commit(&tx);
}
