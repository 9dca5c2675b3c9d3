/* storage-pg: `?` -> $n rewriting (pg_sql.c), the one piece of the provider
 * that needs no server. Everything else is tested through a real node and a
 * real PostgreSQL (test_storage_contract.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pg_sql.h"

static void expect(const char *in, const char *want, int want_n) {
    int n = -1;
    char *out = pg_sql_number_params(in, &n);
    assert_non_null(out);
    assert_string_equal(out, want);
    assert_int_equal(n, want_n);
    free(out);
}

static void test_plain_parameters(void **state) {
    (void)state;
    expect("SELECT 1", "SELECT 1", 0);
    expect("", "", 0);
    expect("INSERT INTO t (a, b) VALUES (?, ?)", "INSERT INTO t (a, b) VALUES ($1, $2)", 2);
    expect("?", "$1", 1);
    expect("a=?AND b=?", "a=$1AND b=$2", 2);
}

static void test_many_parameters_number_past_nine(void **state) {
    (void)state;
    char in[4096] = "VALUES (", want[8192] = "VALUES (";
    for (int i = 1; i <= 120; i++) {
        strcat(in, i > 1 ? ", ?" : "?");
        char part[16];
        snprintf(part, sizeof part, i > 1 ? ", $%d" : "$%d", i);
        strcat(want, part);
    }
    strcat(in, ")");
    strcat(want, ")");
    expect(in, want, 120);
}

static void test_literals_are_left_alone(void **state) {
    (void)state;
    expect("SELECT '?', ?", "SELECT '?', $1", 1);
    expect("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || $1", 1);
    expect("SELECT E'a\\'?' , ?", "SELECT E'a\\'?' , $1", 1);
    expect("SELECT e'\\\\', ?", "SELECT e'\\\\', $1", 1);
    /* standard strings: a backslash is an ordinary character */
    expect("SELECT 'a\\', ?", "SELECT 'a\\', $1", 1);
    expect("SELECT \"we?ird\"\"col\" FROM t WHERE x = ?",
           "SELECT \"we?ird\"\"col\" FROM t WHERE x = $1", 1);
    /* an identifier ending in e before a quote is not an E'' string */
    expect("SELECT name'?'", "SELECT name'?'", 0);
}

static void test_comments_are_left_alone(void **state) {
    (void)state;
    expect("SELECT ? -- what?\n, ?", "SELECT $1 -- what?\n, $2", 2);
    expect("SELECT ? -- what?", "SELECT $1 -- what?", 1);
    expect("SELECT /* ? /* nested ? */ still ? */ ?", "SELECT /* ? /* nested ? */ still ? */ $1",
           1);
    expect("SELECT 1 - -1, ?", "SELECT 1 - -1, $1", 1);
    expect("SELECT 4 / 2, ?", "SELECT 4 / 2, $1", 1);
}

static void test_dollar_quotes(void **state) {
    (void)state;
    expect("SELECT $$a ? b$$, ?", "SELECT $$a ? b$$, $1", 1);
    expect("SELECT $fn$ ? $x$ ? $fn$, ?", "SELECT $fn$ ? $x$ ? $fn$, $1", 1);
    /* $1 is a positional parameter, not a quote; a$b$ is an identifier */
    expect("SELECT $1, ?", "SELECT $1, $1", 1);
    expect("SELECT a$b$, ?", "SELECT a$b$, $1", 1);
}

static void test_unterminated_input_is_copied(void **state) {
    (void)state;
    /* PostgreSQL reports these; the rewrite just must not overrun */
    expect("SELECT '?", "SELECT '?", 0);
    expect("SELECT \"?", "SELECT \"?", 0);
    expect("SELECT /* ?", "SELECT /* ?", 0);
    expect("SELECT $q$ ?", "SELECT $q$ ?", 0);
    expect("SELECT E'\\", "SELECT E'\\", 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_parameters),
        cmocka_unit_test(test_many_parameters_number_past_nine),
        cmocka_unit_test(test_literals_are_left_alone),
        cmocka_unit_test(test_comments_are_left_alone),
        cmocka_unit_test(test_dollar_quotes),
        cmocka_unit_test(test_unterminated_input_is_copied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
