/* core: the profanity check behind api->text_profane (spec §5: the horde
 * checks usernames, contacts, worker names/info/bridge agents and team names
 * with alt-profanity-check + safetext; a self-hosted node uses this small word
 * list instead: no model, no download, the same answer every time).
 *
 * A text is profane when one of its words (runs of ASCII letters, compared
 * case-insensitively; digits and punctuation split words, and common
 * letter-for-digit swaps are undone first) starts with one of the STEMS or
 * equals one of the WORDS. Whole words only, so "Scunthorpe", "classic" or
 * "assistant" pass. */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "core.h"

/* words that are profane with any ending ("fucking", "shitty", ...) */
static const char *const STEMS[] = {
    "fuck", "shit", "cunt", "bitch", "bastard", "motherfuck", "asshole", "dickhead",
    "wank", "twat", "nigger", "nigga", "faggot", "retard", "whore", "slut", "bollock",
    "pussies", "cocksuck", "jizz", "rapist", NULL};

/* words that are profane only as themselves (their stems begin innocent words) */
static const char *const WORDS[] = {
    "ass", "arse", "dick", "dicks", "cock", "cocks", "pussy", "fag", "fags", "tits", "titties",
    "porn", "porno", "rape", "raped", "cum", "damn", "piss", "prick", "spic", "kike", "chink",
    "crap", "douche", "hentai", "nazi", NULL};

/* 0->o, 1->i, 3->e, 4->a, 5->s, 7->t, @->a, $->s: the usual disguises */
static int undisguise(int c) {
    switch (c) {
    case '0': return 'o';
    case '1': return 'i';
    case '3': return 'e';
    case '4': case '@': return 'a';
    case '5': case '$': return 's';
    case '7': return 't';
    default: return tolower(c);
    }
}

static bool word_profane(const char *w, size_t n) {
    for (size_t i = 0; STEMS[i]; i++) {
        size_t sn = strlen(STEMS[i]);
        if (n >= sn && memcmp(w, STEMS[i], sn) == 0)
            return true;
    }
    for (size_t i = 0; WORDS[i]; i++)
        if (strlen(WORDS[i]) == n && memcmp(w, WORDS[i], n) == 0)
            return true;
    return false;
}

bool hn_text_profane(const char *text) {
    if (!text)
        return false;
    char word[64];
    size_t n = 0;
    bool letters = false; /* a word of digits alone ("1337") is no disguise */
    for (const char *p = text;; p++) {
        int c = (unsigned char)*p;
        int u = c ? undisguise(c) : 0;
        if (u >= 'a' && u <= 'z') {
            if (n < sizeof word)
                word[n++] = (char)u;
            letters |= isalpha(c) != 0;
            continue;
        }
        if (n && letters && n < sizeof word && word_profane(word, n))
            return true;
        n = 0;
        letters = false;
        if (!c)
            return false;
    }
}
