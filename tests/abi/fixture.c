/* ABI fixture plugins: one source, built out of tree against the installed
 * SDK several times with a different -DFIXTURE_* each (see Makefile). Each
 * variant changes exactly one thing the loader checks. */
#include <stdlib.h>

#include <hn/hn.h>

#ifndef FIXTURE_NAME
#define FIXTURE_NAME "abi_good"
#endif

static void ping_route(hn_request *req, void *state) {
    const hn_api *api = state;
    api->respond_json(req, 200, json_pack("{s:s}", "plugin", FIXTURE_NAME));
}

#ifdef FIXTURE_MISSING_SYMBOL
/* Defined nowhere: the .so is linked without -z defs so that dlopen, not the
 * linker, is the one that finds out. */
extern void hn_fixture_function_that_does_not_exist(void);
#endif

static hn_rc fixture_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                          hn_error *err) {
    (void)conf;
    (void)err;
#ifdef FIXTURE_MISSING_SYMBOL
    hn_fixture_function_that_does_not_exist();
#endif
    *state = (void *)api;
    api->route_add(self, HN_GET, "/api/v2/fixture/" FIXTURE_NAME, ping_route, (void *)api);
    return HN_OK;
}

static const hn_plugin_desc fixture_desc = {
    HN_PLUGIN_DESC_INIT,
#if defined(FIXTURE_NO_MAGIC)
    .magic = 0,
#endif
#if defined(FIXTURE_OLD_MINOR)
    .abi_minor = HN_ABI_MINOR - 1,
#elif defined(FIXTURE_NEW_MINOR)
    .abi_minor = HN_ABI_MINOR + 1,
#endif
#if defined(FIXTURE_WRONG_MAJOR)
    .abi_major = HN_ABI_MAJOR + 1,
#endif
#if defined(FIXTURE_BAD_SIG)
    .build_sig = "ptr4,long4,jansson2",
#endif
    .name = FIXTURE_NAME,
    .version = "0.0.1",
    .description = "ABI test fixture",
    .init = fixture_init,
};

#ifndef FIXTURE_NO_ENTRY
HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &fixture_desc; }
#else
/* Exports something, but not the entry point. */
HN_PLUGIN_EXPORT const hn_plugin_desc *not_the_entry(void) { return &fixture_desc; }
#endif
