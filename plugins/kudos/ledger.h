/* kudos: the ledger, on the `storage` provider.
 *
 * Every movement of kudos is a row of kudos_ledger (user, bucket, signed
 * amount, reason, the kudos_details key it counts towards, a reference such as
 * a job or request id, the other party of a transfer, the event that caused
 * it). kudos_accounts keeps each user's balance and escrow as a cache that is
 * only ever changed in the same transaction as the rows that justify it, so
 * balance == SUM(amount) of the user's balance rows at every commit
 * (kd_ledger_verify checks it).
 *
 * Amounts are integers of centi-kudos: the horde rounds every balance to 2
 * decimals, and integers make "the balance is the sum of the rows" exact.
 *
 * A user's account is created the first time a transaction touches it; its
 * opening balance is taken over from auth's users.kudos (set by
 * `user create --kudos N`) as an "opening" row, and its floor (§3.4) from
 * users.pseudonymous. Without a users table both are 0/false.
 *
 * Threads: every function takes a connection for the call only; a kd_tx holds
 * one from begin to commit/abort. Any thread may use the ledger. Writers lock
 * the accounts they change first (an UPDATE of the row), in ascending user id
 * order when there are two, so concurrent transactions serialise per account
 * on PostgreSQL as SQLite's single writer does anyway. */
#ifndef KD_LEDGER_H
#define KD_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include <hn/hn.h>

#include "rules.h"

typedef enum kd_bucket { KD_BALANCE = 0, KD_ESCROW = 1 } kd_bucket;

typedef struct kd_ledger {
    const hn_storage_vt *vt; /* borrowed from the storage plugin */
    void *state;
    kd_floors floors;
    bool have_users; /* auth's users table exists (probed at open) */
    bool have_monthly; /* it has the monthly_kudos column (auth's PUT /users fields) */
} kd_ledger;

/* Migrates the schema (owner "kudos") and probes for auth's users table. */
hn_rc kd_ledger_open(kd_ledger *l, const hn_storage_vt *vt, void *state, const kd_floors *floors,
                     hn_error *err);

typedef struct kd_account {
    int64_t user_id;
    int64_t balance;  /* spendable, centi-kudos */
    int64_t escrow;   /* evaluating_kudos, centi-kudos */
    int64_t floor;    /* the balance floor, centi-kudos */
    bool promoted;    /* made trusted by the kudos plugin (escrow released) */
    bool role_synced; /* ... and auth's trusted role was set (from then on the role decides) */
    bool exists;      /* false: never touched yet (values are what it would open with) */
} kd_account;

/* Reads an account without writing anything. */
hn_rc kd_ledger_account(kd_ledger *l, int64_t user_id, kd_account *out, hn_error *err);

/* Adds {"accumulated": .., "gifted": .., ...} sums (kudos) of the user's rows
 * to `details`, one key per kudos_details key that has rows. */
hn_rc kd_ledger_details(kd_ledger *l, int64_t user_id, json_t *details, hn_error *err);

/* Counts accounts whose balance or escrow differs from the sum of their rows
 * (0 when the ledger is consistent). */
hn_rc kd_ledger_verify(kd_ledger *l, int64_t *mismatches, hn_error *err);

/* ---- transactions --------------------------------------------------------------------- */

typedef struct kd_tx {
    kd_ledger *l;
    hn_db *db;
    hn_error *err; /* where failures are reported */
    int64_t now;   /* unix seconds, stamped on rows */
} kd_tx;

hn_rc kd_tx_begin(kd_ledger *l, kd_tx *tx, int64_t now, hn_error *err);
/* Commits and gives the connection back (also on failure). */
hn_rc kd_tx_commit(kd_tx *tx);
/* Rolls back and gives the connection back. */
void kd_tx_abort(kd_tx *tx);

/* Records that `event` is being applied: HN_OK the first time, HN_DONE when it
 * was applied before: its key is in kudos_events, or (the key pruned) rows
 * were written under it. The caller then does nothing twice. */
hn_rc kd_tx_event(kd_tx *tx, const char *event);

/* Locks the user's account for the rest of the transaction, creating it (with
 * its opening row) on first use, and reads it. */
hn_rc kd_tx_lock(kd_tx *tx, int64_t user_id, kd_account *out);

typedef struct kd_posting {
    kd_bucket bucket;
    int64_t cents;        /* signed */
    const char *reason;   /* "usage", "generation", "transfer_out", ... */
    const char *detail;   /* kudos_details key it counts towards, or NULL */
    const char *ref;      /* job / request / worker id, or NULL */
    int64_t counterparty; /* the other user of a transfer, or -1 */
    const char *event;    /* the event (for audits), or NULL */
} kd_posting;

/* Writes one row and moves the locked account `a` by it (a zero amount writes
 * nothing). */
hn_rc kd_tx_post(kd_tx *tx, kd_account *a, const kd_posting *p);

/* After a debit: a balance below the floor is lifted to it by a "floor" row
 * (the horde's FLOOR_ADJUSTMENT). */
hn_rc kd_tx_clamp(kd_tx *tx, kd_account *a, const char *event);

/* Sum of the user's active reservations (centi-kudos). */
hn_rc kd_tx_reserved(kd_tx *tx, int64_t user_id, int64_t *cents);

/* What the user can spend now: balance - floor - reservations. */
hn_rc kd_tx_available(kd_tx *tx, const kd_account *a, int64_t *cents);

/* Runs a write statement inside the transaction. */
hn_rc kd_tx_exec(kd_tx *tx, const char *sql, const hn_value *args, size_t nargs, int64_t *changes);

#endif
