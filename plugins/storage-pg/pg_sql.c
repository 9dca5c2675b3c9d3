/* storage-pg: `?` placeholders to $1..$n (see pg_sql.h). */
#include "pg_sql.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

static bool ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (unsigned char)c >= 0x80;
}

/* Length of the dollar-quote tag starting at p ("$$" or "$tag$"), 0 if p does
 * not open one (e.g. "$1", a positional parameter). */
static size_t dollar_tag_len(const char *p) {
    size_t n = 1;
    if (p[n] != '$' && !ident_start(p[n]))
        return 0;
    while (p[n] && p[n] != '$') {
        if (!ident_char(p[n]))
            return 0;
        n++;
    }
    return p[n] == '$' ? n + 1 : 0;
}

/* Index just past the literal/comment/identifier that starts at sql[i], or i
 * when none starts there. */
static size_t skip_quoted(const char *sql, size_t i) {
    char c = sql[i];
    bool prev_ident = i > 0 && ident_char(sql[i - 1]);
    if (c == '\'' || ((c == 'E' || c == 'e') && sql[i + 1] == '\'' && !prev_ident)) {
        bool escapes = c != '\'';
        size_t j = i + (escapes ? 2 : 1);
        while (sql[j]) {
            if (escapes && sql[j] == '\\' && sql[j + 1]) {
                j += 2;
            } else if (sql[j] == '\'') {
                if (sql[j + 1] == '\'') /* '' is a quote inside the literal */
                    j += 2;
                else
                    return j + 1;
            } else {
                j++;
            }
        }
        return j; /* unterminated: PostgreSQL will say so */
    }
    if (c == '"') {
        size_t j = i + 1;
        while (sql[j]) {
            if (sql[j] == '"' && sql[j + 1] == '"')
                j += 2;
            else if (sql[j] == '"')
                return j + 1;
            else
                j++;
        }
        return j;
    }
    if (c == '-' && sql[i + 1] == '-') {
        size_t j = i + 2;
        while (sql[j] && sql[j] != '\n')
            j++;
        return j;
    }
    if (c == '/' && sql[i + 1] == '*') { /* PostgreSQL's block comments nest */
        size_t j = i + 2;
        int depth = 1;
        while (sql[j] && depth > 0) {
            if (sql[j] == '/' && sql[j + 1] == '*') {
                depth++;
                j += 2;
            } else if (sql[j] == '*' && sql[j + 1] == '/') {
                depth--;
                j += 2;
            } else {
                j++;
            }
        }
        return j;
    }
    if (c == '$' && !prev_ident) {
        size_t tag = dollar_tag_len(sql + i);
        if (tag == 0)
            return i;
        const char *end = sql + i + tag;
        for (;;) {
            const char *close = strchr(end, '$');
            if (!close)
                return strlen(sql);
            if (strncmp(close, sql + i, tag) == 0)
                return (size_t)(close - sql) + tag;
            end = close + 1;
        }
    }
    return i;
}

char *pg_sql_number_params(const char *sql, int *nparams) {
    size_t len = strlen(sql);
    size_t marks = 0;
    for (size_t i = 0; i < len; i++)
        marks += sql[i] == '?';
    /* each `?` grows to at most "$" plus 10 digits */
    char *out = malloc(len + marks * 10 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    int n = 0;
    size_t i = 0;
    while (i < len) {
        size_t past = skip_quoted(sql, i);
        if (past > i) {
            memcpy(out + o, sql + i, past - i);
            o += past - i;
            i = past;
        } else if (sql[i] == '?') {
            o += (size_t)sprintf(out + o, "$%d", ++n);
            i++;
        } else {
            out[o++] = sql[i++];
        }
    }
    out[o] = '\0';
    *nparams = n;
    return out;
}
