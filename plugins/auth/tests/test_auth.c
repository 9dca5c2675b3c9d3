/* auth: keys, the users table on a real SQLite store, UserDetails, forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth_details.h"
#include "auth_form.h"
#include "auth_keys.h"
#include "auth_users.h"
#include "sqlite_store.h"

/* ---- keys ------------------------------------------------------------------ */

static void test_keys_have_the_horde_shape_and_differ(void **state) {
    (void)state;
    char a[AUTH_KEY_LEN + 1], b[AUTH_KEY_LEN + 1];
    assert_true(auth_key_generate(a));
    assert_true(auth_key_generate(b));
    assert_int_equal(strlen(a), 22);
    assert_true(auth_key_well_formed(a));
    assert_string_not_equal(a, b);
    /* over many keys every alphabet character shows up: the draw is not skewed
     * to a subset (a bug like `% 62` or a constant would fail this) */
    int seen[128] = {0};
    for (int i = 0; i < 400; i++) {
        assert_true(auth_key_generate(a));
        for (int j = 0; j < AUTH_KEY_LEN; j++)
            seen[(unsigned char)a[j]]++;
    }
    int distinct = 0;
    for (int c = 0; c < 128; c++)
        distinct += seen[c] > 0;
    assert_int_equal(distinct, 64);

    assert_false(auth_key_well_formed(AUTH_ANON_KEY));
    assert_false(auth_key_well_formed("abcdefghijklmnopqrstu"));   /* 21 */
    assert_false(auth_key_well_formed("abcdefghijklmnopqrstuvw")); /* 23 */
    assert_false(auth_key_well_formed("abcdefghijklmnopqrst/v"));  /* '/' */
    assert_false(auth_key_well_formed(NULL));
}

static void test_key_hash_and_verify(void **state) {
    (void)state;
    char key[AUTH_KEY_LEN + 1], salt[AUTH_SALT_HEX + 1], salt2[AUTH_SALT_HEX + 1];
    char hash[AUTH_HASH_HEX + 1], hash2[AUTH_HASH_HEX + 1];
    assert_true(auth_key_generate(key));
    assert_true(auth_salt_generate(salt));
    assert_true(auth_salt_generate(salt2));
    assert_string_not_equal(salt, salt2);
    assert_true(auth_key_hash(salt, key, hash));
    assert_int_equal(strlen(hash), 64);
    assert_null(strstr(hash, key));
    assert_true(auth_key_verify(key, salt, hash));
    /* the salt matters: same key, other salt, other hash */
    assert_true(auth_key_hash(salt2, key, hash2));
    assert_string_not_equal(hash, hash2);
    assert_false(auth_key_verify(key, salt2, hash));
    /* one changed character anywhere fails */
    for (int i = 0; i < AUTH_KEY_LEN; i++) {
        char bad[AUTH_KEY_LEN + 1];
        memcpy(bad, key, sizeof bad);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_false(auth_key_verify(bad, salt, hash));
    }
    assert_false(auth_key_verify(key, "zz", hash));
    assert_false(auth_key_verify(key, salt, "short"));
    /* a known vector: SHA-256 of 16 zero bytes followed by "abc" */
    assert_true(auth_key_hash("00000000000000000000000000000000", "abc", hash));
    assert_string_equal(hash, "277e7ff6d232b9763f4a66e8d05d210da32dac9c6dbce1026ad4cc98acb5fefe");
}

/* ---- users table -------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
    char path[128];
    sq_store *store;
    auth_db db;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hn-auth-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/auth.db", f->dir);
    sq_options opt = {.path = f->path, .busy_timeout_ms = 5000, .max_connections = 8,
                      .stmt_cache_size = 16, .sync_mode = SQ_SYNC_FULL};
    f->store = sq_store_new(&opt);
    hn_error err = {0};
    if (sq_store_open(f->store, &err) != HN_OK)
        return -1;
    f->db = (auth_db){&sq_storage_vt, f->store};
    if (auth_users_migrate(&f->db, &err) != HN_OK) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sq_store_free(f->store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static void create(fixture *f, const char *alias, uint32_t roles, double kudos,
                   auth_account *acc, char key[AUTH_KEY_LEN + 1]) {
    auth_new_user nu = {.alias = alias, .roles = roles, .concurrency = 30, .kudos = kudos};
    hn_error err = {0};
    if (auth_users_create(&f->db, &nu, acc, key, &err) != HN_OK)
        fail_msg("create %s: %s", alias, err.message);
}

static void test_anonymous_user_exists_once(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    assert_int_equal(auth_users_migrate(&f->db, &err), HN_OK); /* again: idempotent */
    auth_account anon;
    assert_int_equal(auth_users_find_key(&f->db, AUTH_ANON_KEY, &anon, &err), HN_OK);
    assert_int_equal(anon.user.id, 0);
    assert_string_equal(anon.user.username, "Anonymous#0");
    assert_int_equal(anon.user.concurrency, 500);
    assert_true(anon.public_workers);
    assert_int_equal(anon.user.size, sizeof(hn_user));
    assert_int_equal(sq_storage_vt.schema_version(f->store, "auth", &err), 3); /* migrations 1-3 */
    /* nobody can take its name or change its key */
    auth_new_user nu = {.alias = "anonymous", .concurrency = 30};
    char key[AUTH_KEY_LEN + 1];
    assert_int_equal(auth_users_create(&f->db, &nu, &anon, key, &err), HN_ERROR);
    assert_string_equal(err.rc, "BadUsername");
    assert_int_equal(auth_users_reset_key(&f->db, 0, key, &err), HN_ERROR);
    assert_string_equal(err.rc, "AnonForbidden");
}

static void test_create_then_authenticate(void **state) {
    fixture *f = *state;
    auth_account acc, found;
    char key[AUTH_KEY_LEN + 1];
    create(f, "alice", HN_ROLE_TRUSTED | HN_ROLE_MODERATOR, 1234, &acc, key);
    assert_true(acc.user.id >= 1);
    char expect[64];
    snprintf(expect, sizeof expect, "alice#%lld", (long long)acc.user.id);
    assert_string_equal(acc.user.username, expect);
    assert_int_equal(acc.user.roles, HN_ROLE_TRUSTED | HN_ROLE_MODERATOR);
    assert_true(acc.kudos == 1234);
    assert_false(acc.pseudonymous);
    assert_true(auth_key_well_formed(key));

    hn_error err = {0};
    assert_int_equal(auth_users_find_key(&f->db, key, &found, &err), HN_OK);
    assert_int_equal(found.user.id, acc.user.id);
    assert_int_equal(found.user.roles, acc.user.roles);

    /* same key id, different secret part: refused (the hash decides) */
    char forged[AUTH_KEY_LEN + 1];
    memcpy(forged, key, sizeof forged);
    forged[AUTH_KEY_LEN - 1] = forged[AUTH_KEY_LEN - 1] == 'x' ? 'y' : 'x';
    assert_int_equal(auth_users_find_key(&f->db, forged, &found, &err), HN_DECLINED);
    assert_int_equal(auth_users_find_key(&f->db, "not-a-key", &found, &err), HN_DECLINED);
    assert_int_equal(auth_users_find_key(&f->db, "", &found, &err), HN_DECLINED);

    /* a second user gets another id and key; both keep working */
    auth_account bob;
    char bob_key[AUTH_KEY_LEN + 1];
    create(f, "bob the builder", 0, 0, &bob, bob_key);
    assert_int_not_equal(bob.user.id, acc.user.id);
    assert_int_equal(auth_users_find_key(&f->db, bob_key, &found, &err), HN_OK);
    assert_int_equal(found.user.id, bob.user.id);
    assert_int_equal(auth_users_find_key(&f->db, key, &found, &err), HN_OK);
    assert_int_equal(found.user.id, acc.user.id);

    /* lookups by id, alias and "alias#id" */
    assert_int_equal(auth_users_get(&f->db, bob.user.id, &found, &err), HN_OK);
    assert_string_equal(found.alias, "bob the builder");
    assert_int_equal(auth_users_get(&f->db, 999999, &found, &err), HN_DECLINED);
    assert_int_equal(auth_users_find_ref(&f->db, "alice", &found, &err), HN_OK);
    assert_int_equal(auth_users_find_ref(&f->db, expect, &found, &err), HN_OK);
    assert_int_equal(found.user.id, acc.user.id);
    assert_int_equal(auth_users_find_ref(&f->db, "bob#1", &found, &err), HN_DECLINED);
    char idref[32];
    snprintf(idref, sizeof idref, "%lld", (long long)bob.user.id);
    assert_int_equal(auth_users_find_ref(&f->db, idref, &found, &err), HN_OK);
    assert_string_equal(found.alias, "bob the builder");
}

static void test_duplicate_and_bad_names(void **state) {
    fixture *f = *state;
    auth_account acc;
    char key[AUTH_KEY_LEN + 1];
    create(f, "carol", 0, 0, &acc, key);
    auth_new_user nu = {.alias = "carol", .concurrency = 30};
    hn_error err = {0};
    assert_int_equal(auth_users_create(&f->db, &nu, &acc, key, &err), HN_ERROR);
    assert_string_equal(err.rc, "NameAlreadyExists");
    assert_int_equal(err.status, 400);

    const char *bad[] = {"ab", "a#b#c", " lead", "trail ", "0123456789012345678901234567890",
                         "tab\there", "bad\xff utf8"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_non_null(auth_alias_check(bad[i]));
    assert_null(auth_alias_check("caf\xc3\xa9 ok"));
    assert_null(auth_alias_check("012345678901234567890123456789")); /* exactly 30 */
}

static void test_key_reset_replaces_the_key(void **state) {
    fixture *f = *state;
    auth_account acc, found;
    char old_key[AUTH_KEY_LEN + 1], new_key[AUTH_KEY_LEN + 1];
    create(f, "dave", 0, 0, &acc, old_key);
    hn_error err = {0};
    assert_int_equal(auth_users_reset_key(&f->db, acc.user.id, new_key, &err), HN_OK);
    assert_string_not_equal(old_key, new_key);
    assert_int_equal(auth_users_find_key(&f->db, old_key, &found, &err), HN_DECLINED);
    assert_int_equal(auth_users_find_key(&f->db, new_key, &found, &err), HN_OK);
    assert_int_equal(found.user.id, acc.user.id);
    assert_int_equal(auth_users_reset_key(&f->db, 424242, new_key, &err), HN_ERROR);
    assert_string_equal(err.rc, "UserNotFound");
}

static bool file_contains(const char *path, const char *needle) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return false;
    size_t cap = 1 << 20, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(fp);
    bool found = memmem(buf, n, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

/* The key is never written anywhere: not in the database, not in its WAL. */
static void test_key_is_stored_only_as_a_hash(void **state) {
    fixture *f = *state;
    auth_account acc;
    char key[AUTH_KEY_LEN + 1];
    create(f, "erin", 0, 0, &acc, key);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    char secret_part[AUTH_KEY_LEN - AUTH_KEY_ID_LEN + 1];
    memcpy(secret_part, key + AUTH_KEY_ID_LEN, sizeof secret_part);
    assert_false(file_contains(f->path, secret_part));
    assert_false(file_contains(wal, secret_part));
    /* while the name is there (the check can find things) */
    assert_true(file_contains(f->path, "erin") || file_contains(wal, "erin"));
}

static void count_visit(const auth_account *acc, void *ctx) {
    (void)acc;
    (*(int *)ctx)++;
}

static void test_list_visits_every_user(void **state) {
    fixture *f = *state;
    auth_account acc;
    char key[AUTH_KEY_LEN + 1];
    create(f, "frank", 0, 0, &acc, key);
    create(f, "grace", 0, 0, &acc, key);
    int n = 0;
    hn_error err = {0};
    assert_int_equal(auth_users_list(&f->db, count_visit, &n, &err), HN_OK);
    assert_int_equal(n, 3); /* Anonymous, frank, grace */
}

static void test_update_page_and_wipe(void **state) {
    fixture *f = *state;
    auth_account acc, other, got;
    char key[AUTH_KEY_LEN + 1];
    hn_error err = {0};
    create(f, "henry", 0, 0, &acc, key);
    create(f, "irene", 0, 0, &other, key);
    auth_column_set sets[] = {{"roles", HN_V_INT(HN_ROLE_TRUSTED)},
                              {"admin_comment", HN_V_TEXT("a note")},
                              {"usage_multiplier", HN_V_DOUBLE(2.5)},
                              {"deleted", HN_V_INT(1)}};
    assert_int_equal(auth_users_update(&f->db, acc.user.id, sets, 4, &err), HN_OK);
    assert_int_equal(auth_users_get(&f->db, acc.user.id, &got, &err), HN_OK);
    assert_int_equal(got.user.roles, HN_ROLE_TRUSTED);
    assert_string_equal(got.admin_comment, "a note");
    assert_true(got.usage_multiplier == 2.5 && got.deleted);
    /* a taken name, an unknown user */
    auth_column_set rename[] = {{"username", HN_V_TEXT("irene")}};
    assert_int_equal(auth_users_update(&f->db, acc.user.id, rename, 1, &err), HN_ERROR);
    assert_string_equal(err.rc, "NameAlreadyExists");
    assert_int_equal(auth_users_update(&f->db, 9999, sets, 1, &err), HN_ERROR);
    assert_string_equal(err.rc, "UserNotFound");
    /* pages in id order */
    int n = 0;
    assert_int_equal(auth_users_page(&f->db, 1, 1, count_visit, &n, &err), HN_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(auth_users_page(&f->db, 0, 25, count_visit, &n, &err), HN_OK);
    assert_int_equal(n, 3);
    /* wiped for good; the anonymous user never */
    assert_int_equal(auth_users_wipe(&f->db, acc.user.id, &err), HN_OK);
    assert_int_equal(auth_users_get(&f->db, acc.user.id, &got, &err), HN_DECLINED);
    assert_int_equal(auth_users_wipe(&f->db, 0, &err), HN_ERROR);
}

/* ---- details ------------------------------------------------------------------ */

static void test_details_by_privilege(void **state) {
    (void)state;
    auth_account a = {0};
    a.user.id = 7;
    snprintf(a.user.username, sizeof a.user.username, "zed#7");
    a.user.roles = HN_ROLE_TRUSTED | HN_ROLE_VPN;
    a.user.concurrency = 30;
    a.user.created = 1000;
    a.kudos = 50;
    snprintf(a.contact, sizeof a.contact, "zed@example.com");

    json_t *pub = auth_user_details(&a, 0, 1600);
    assert_string_equal(json_string_value(json_object_get(pub, "username")), "zed#7");
    assert_int_equal(json_integer_value(json_object_get(pub, "id")), 7);
    assert_true(json_is_true(json_object_get(pub, "trusted")));
    assert_true(json_is_false(json_object_get(pub, "moderator")));
    assert_int_equal(json_integer_value(json_object_get(pub, "account_age")), 600);
    assert_true(json_real_value(json_object_get(pub, "kudos")) == 50.0);
    assert_non_null(json_object_get(json_object_get(pub, "records"), "fulfillment"));
    assert_null(json_object_get(pub, "worker_ids")); /* not public_workers */
    assert_null(json_object_get(pub, "contact"));
    assert_null(json_object_get(pub, "vpn"));
    assert_null(json_object_get(pub, "suspicious"));
    json_decref(pub);

    json_t *own = auth_user_details(&a, 1, 1600);
    assert_string_equal(json_string_value(json_object_get(own, "contact")), "zed@example.com");
    assert_true(json_is_true(json_object_get(own, "vpn")));
    assert_true(json_is_array(json_object_get(own, "worker_ids")));
    assert_true(json_is_array(json_object_get(own, "sharedkey_ids")));
    assert_null(json_object_get(own, "monthly_kudos"));
    json_decref(own);

    json_t *mod = auth_user_details(&a, 2, 1600);
    assert_non_null(json_object_get(mod, "monthly_kudos"));
    assert_int_equal(json_integer_value(json_object_get(mod, "suspicious")), 0);
    json_decref(mod);

    a.public_workers = true;
    pub = auth_user_details(&a, 0, 1600);
    assert_true(json_is_array(json_object_get(pub, "worker_ids")));
    json_decref(pub);
}

/* ---- forms ---------------------------------------------------------------------- */

static void test_form_fields(void **state) {
    (void)state;
    char out[32];
    const char *body = "a=1&username=J%C3%B6rg+the%2bgreat&x=";
    assert_int_equal(auth_form_field(body, strlen(body), "username", out, sizeof out),
                     AUTH_FORM_OK);
    assert_string_equal(out, "J\xc3\xb6rg the+great");
    assert_int_equal(auth_form_field(body, strlen(body), "x", out, sizeof out), AUTH_FORM_OK);
    assert_string_equal(out, "");
    assert_int_equal(auth_form_field(body, strlen(body), "nope", out, sizeof out),
                     AUTH_FORM_ABSENT);
    /* the length given counts, not a NUL: the field past len is not seen */
    assert_int_equal(auth_form_field(body, 3, "username", out, sizeof out), AUTH_FORM_ABSENT);
    const char *nul = "username=ab%00cd";
    assert_int_equal(auth_form_field(nul, strlen(nul), "username", out, sizeof out),
                     AUTH_FORM_MALFORMED);
    const char *cut = "username=abc%4";
    assert_int_equal(auth_form_field(cut, strlen(cut), "username", out, sizeof out),
                     AUTH_FORM_MALFORMED);
    const char *badhex = "username=%zz";
    assert_int_equal(auth_form_field(badhex, strlen(badhex), "username", out, sizeof out),
                     AUTH_FORM_MALFORMED);
    const char *lng = "username=0123456789012345678901234567890123456789";
    assert_int_equal(auth_form_field(lng, strlen(lng), "username", out, sizeof out),
                     AUTH_FORM_TOO_LONG);
    assert_int_equal(auth_form_field(NULL, 0, "username", out, sizeof out), AUTH_FORM_ABSENT);
}

static void test_html_escape(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    auth_html_write(f, "<script>\"x\" & 'y'</script>");
    fclose(f);
    assert_string_equal(buf, "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;");
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_have_the_horde_shape_and_differ),
        cmocka_unit_test(test_key_hash_and_verify),
        cmocka_unit_test_setup_teardown(test_anonymous_user_exists_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_then_authenticate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_and_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_reset_replaces_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_is_stored_only_as_a_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_visits_every_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_page_and_wipe, setup, teardown),
        cmocka_unit_test(test_details_by_privilege),
        cmocka_unit_test(test_form_fields),
        cmocka_unit_test(test_html_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
