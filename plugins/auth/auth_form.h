/* auth: application/x-www-form-urlencoded bodies and HTML escaping, for the
 * /register page. Pure functions on caller buffers. */
#ifndef AUTH_FORM_H
#define AUTH_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum auth_form_rc {
    AUTH_FORM_OK,
    AUTH_FORM_ABSENT,    /* no field of that name */
    AUTH_FORM_MALFORMED, /* a bad %-escape, or a NUL byte once decoded */
    AUTH_FORM_TOO_LONG   /* the decoded value does not fit in out */
} auth_form_rc;

/* Decodes the first field `name` of body[0..len) into out (NUL-terminated):
 * '+' is a space, %XX a byte. */
auth_form_rc auth_form_field(const char *body, size_t len, const char *name, char *out,
                             size_t out_size);

/* Writes s to f with & < > " ' escaped. */
void auth_html_write(FILE *f, const char *s);

#endif
