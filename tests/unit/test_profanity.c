/* Unit tests for core/profanity.c (api->text_profane): whole words, stems,
 * case, digit disguises, and innocent words that contain profane ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core.h"

static void profane_words(void **state) {
    (void)state;
    static const char *const bad[] = {"fuck", "FuckFace", "what the shit", "you b1tch",
                                      "sh1t-lord", "Team Bastards", "a cunt", "ass",
                                      "kick-ass worker", "f u c k? no: fuck!", NULL};
    for (size_t i = 0; bad[i]; i++)
        assert_true(hn_text_profane(bad[i]));
}

static void innocent_words(void **state) {
    (void)state;
    static const char *const good[] = {"", "Scunthorpe", "classic", "assistant", "cocktail",
                                       "Dickens", "shiitake", "grape", "1337 worker",
                                       "AI Horde Worker reGen:9.0.1:https://github.com/x",
                                       "passage", "title", NULL};
    for (size_t i = 0; good[i]; i++)
        assert_false(hn_text_profane(good[i]));
    assert_false(hn_text_profane(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(profane_words),
        cmocka_unit_test(innocent_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
