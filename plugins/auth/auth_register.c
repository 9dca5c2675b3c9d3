/* auth: open registration, GET and POST /register (only routed when the
 * config says `registration = true`; otherwise the node answers 404).
 *
 * The form creates a pseudonymous user (the horde's word for an account made
 * without OAuth) and shows its API key once: it is stored only as a hash. A
 * client IP may register `register_per_hour` users an hour. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_form.h"

static const char page_head[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Register - horde-node</title>\n"
    "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}"
    "code{font-size:1.3em;background:#eee;padding:.2em .4em}"
    ".error{color:#a00}</style></head><body>\n<h1>Register</h1>\n";
static const char page_tail[] = "</body></html>\n";

static void write_form(FILE *f, const char *username) {
    fputs("<p>Pick a username to get an API key for this horde. The account is pseudonymous: "
          "the key is the only way into it and is shown once, so keep it safe.</p>\n"
          "<form method=\"post\"><label>Username "
          "<input name=\"username\" required minlength=\"3\" maxlength=\"30\" value=\"",
          f);
    auth_html_write(f, username ? username : "");
    fputs("\"></label> <button type=\"submit\">Register</button></form>\n", f);
}

/* Sends what was written to the page buffer. */
static void send_page(auth_state *a, hn_request *req, int status, char *buf, size_t len) {
    a->api->resp_header(req, "Cache-Control", "no-store"); /* the key must not be cached */
    a->api->respond(req, status, "text/html; charset=utf-8", buf, len);
    free(buf);
}

static void send_form(auth_state *a, hn_request *req, int status, const char *error,
                      const char *username) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        a->api->respond(req, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        return;
    }
    fputs(page_head, f);
    if (error) {
        fputs("<p class=\"error\">", f);
        auth_html_write(f, error);
        fputs("</p>\n", f);
    }
    write_form(f, username);
    fputs(page_tail, f);
    fclose(f);
    send_page(a, req, status, buf, len);
}

void auth_route_register_form(hn_request *req, void *state) {
    send_form(state, req, 200, NULL, NULL);
}

/* ---- per-IP limit ---------------------------------------------------------- */

/* Takes one registration from ip's hourly allowance; false when spent. */
static bool take_allowance(auth_state *a, const char *ip, int64_t now) {
    if (a->conf->register_per_hour <= 0)
        return true;
    pthread_mutex_lock(&a->reg_mu);
    auth_reg_slot *slot = NULL, *oldest = &a->reg_slots[0];
    for (int i = 0; i < AUTH_REG_SLOTS; i++) {
        auth_reg_slot *s = &a->reg_slots[i];
        if (s->ip[0] && strcmp(s->ip, ip) == 0) {
            slot = s;
            break;
        }
        if (s->window_start < oldest->window_start)
            oldest = s;
    }
    if (!slot) { /* a new IP takes the slot whose window began longest ago */
        slot = oldest;
        snprintf(slot->ip, sizeof slot->ip, "%s", ip);
        slot->window_start = now;
        slot->count = 0;
    }
    if (now - slot->window_start >= 3600) {
        slot->window_start = now;
        slot->count = 0;
    }
    bool ok = slot->count < a->conf->register_per_hour;
    if (ok)
        slot->count++;
    pthread_mutex_unlock(&a->reg_mu);
    return ok;
}

/* Gives back a registration that did not happen (a taken name, ...). */
static void give_back_allowance(auth_state *a, const char *ip) {
    if (a->conf->register_per_hour <= 0)
        return;
    pthread_mutex_lock(&a->reg_mu);
    for (int i = 0; i < AUTH_REG_SLOTS; i++) {
        auth_reg_slot *s = &a->reg_slots[i];
        if (s->ip[0] && strcmp(s->ip, ip) == 0 && s->count > 0) {
            s->count--;
            break;
        }
    }
    pthread_mutex_unlock(&a->reg_mu);
}

/* ---- POST ------------------------------------------------------------------- */

void auth_route_register_post(hn_request *req, void *state) {
    auth_state *a = state;
    size_t len = 0;
    const char *body = a->api->req_body(req, &len);
    char username[256];
    auth_form_rc frc = auth_form_field(body, len, "username", username, sizeof username);
    if (frc == AUTH_FORM_ABSENT) {
        send_form(a, req, 400, "Please give a username.", NULL);
        return;
    }
    if (frc != AUTH_FORM_OK) {
        send_form(a, req, 400, "That username cannot be used.", NULL);
        return;
    }
    const char *why = auth_alias_check(username);
    if (!why && a->api->text_profane(username)) /* §5 profanity checks */
        why = "That username contains profanity. Please choose another.";
    if (why) {
        send_form(a, req, 400, why, NULL);
        return;
    }
    const char *ip = a->api->req_client_ip(req);
    if (!ip)
        ip = "";
    if (!take_allowance(a, ip, (int64_t)time(NULL))) {
        send_form(a, req, 429,
                  "Too many registrations from your address; please try again in an hour.",
                  NULL);
        return;
    }
    auth_new_user nu = {.alias = username,
                        .roles = 0,
                        .concurrency = (int)a->conf->concurrency,
                        .kudos = 0,
                        .pseudonymous = true};
    auth_account acc;
    char key[AUTH_KEY_LEN + 1];
    hn_error err = {0};
    if (auth_users_create(&a->db, &nu, &acc, key, &err) != HN_OK) {
        give_back_allowance(a, ip);
        if (err.status >= 500)
            a->api->log(a->self, HN_LOG_ERROR, "registration failed: %s", err.message);
        send_form(a, req, err.status >= 400 && err.status < 500 ? err.status : 500,
                  err.status < 500 ? err.message : "Registration failed; please try again.",
                  username);
        return;
    }
    a->api->log(a->self, HN_LOG_INFO, "registered user %s", acc.user.username);
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f) {
        a->api->respond(req, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        return;
    }
    fputs(page_head, f);
    fputs("<p>Welcome, <b>", f);
    auth_html_write(f, acc.user.username);
    fputs("</b>. Your API key:</p>\n<p><code id=\"apikey\">", f);
    auth_html_write(f, key);
    fputs("</code></p>\n<p>It is shown only this once. Send it in the <code>apikey</code> "
          "header of your requests.</p>\n",
          f);
    fputs(page_tail, f);
    fclose(f);
    memset(key, 0, sizeof key);
    send_page(a, req, 200, buf, blen);
}
