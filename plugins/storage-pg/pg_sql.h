/* storage-pg: turning the SDK's portable SQL into what PostgreSQL takes.
 *
 * Plugins write `?` placeholders (storage.h); PostgreSQL numbers them ($1, $2,
 * ...). The rewrite happens once per statement text (the result is cached
 * with the prepared statement). A `?` is a parameter unless it is inside a
 * string literal ('...', E'...' with backslash escapes), a quoted identifier
 * ("..."), a dollar-quoted string ($tag$...$tag$) or a comment (-- to the end
 * of the line, and nested slash-star comments), exactly where PostgreSQL's
 * own lexer would not see an operator. PostgreSQL's jsonb operators `?`, `?|`
 * and `?&` are therefore not usable through this interface (they are not in
 * the portable subset anyway).
 *
 * Pure functions, no state: safe from any thread. */
#ifndef PG_SQL_H
#define PG_SQL_H

#include <stddef.h>

/* Returns a malloc'd copy of sql with every parameter `?` replaced by $1..$n
 * in order and *nparams set to n; NULL when out of memory. The caller frees. */
char *pg_sql_number_params(const char *sql, int *nparams);

#endif
