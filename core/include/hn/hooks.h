/* horde-node plugin SDK: typed hooks, generated from hooks.def.
 *
 * For each row HN_HOOK(name, policy, (params), (args)) this header gives:
 *   typedef hn_rc hn_hook_<name>_fn(void *state, params);
 *   int   hn_hook_add_<name>(api, self, fn, state, order);   (init only)
 *   hn_rc hn_run_<name>(api, params);                        (any thread)
 * and the id HN_HOOK_ID_<name>. Include hn/hn.h rather than this file. */
#ifndef HN_HOOKS_H
#define HN_HOOKS_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hn_hook_policy { HN_RUN_ALL, HN_RUN_FIRST, HN_NOTIFY } hn_hook_policy;

#define HN_UNPAREN_(...) __VA_ARGS__

typedef enum hn_hook_id {
#define HN_HOOK(name, policy, params, args) HN_HOOK_ID_##name,
#include "hooks.def"
#undef HN_HOOK
    HN_HOOK_COUNT
} hn_hook_id;

#define HN_HOOK(name, policy, params, args)                                              \
    typedef hn_rc hn_hook_##name##_fn(void *state, HN_UNPAREN_ params);                 \
    static inline int hn_hook_add_##name(const hn_api *api, hn_plugin *self,            \
                                         hn_hook_##name##_fn *fn, void *state,          \
                                         const hn_hook_order *order) {                  \
        return api->hook_add(self, HN_HOOK_ID_##name, (hn_hook_fn_generic)fn, state,    \
                             order);                                                    \
    }                                                                                   \
    static inline hn_rc hn_run_##name(const hn_api *api, HN_UNPAREN_ params) {          \
        size_t n_ = 0;                                                                  \
        const hn_hook_entry *h_ = api->hook_handlers(HN_HOOK_ID_##name, &n_);           \
        for (size_t i_ = 0; i_ < n_; i_++) {                                            \
            hn_rc r_ = ((hn_hook_##name##_fn *)h_[i_].fn)(h_[i_].state, HN_UNPAREN_ args); \
            if ((policy) == HN_NOTIFY)                                                  \
                continue;                                                               \
            if ((policy) == HN_RUN_FIRST) {                                             \
                if (r_ != HN_DECLINED)                                                  \
                    return r_;                                                          \
            } else if (r_ == HN_ERROR || r_ == HN_DONE) {                               \
                return r_;                                                              \
            }                                                                           \
        }                                                                               \
        return (policy) == HN_RUN_FIRST ? HN_DECLINED : HN_OK;                          \
    }
#include "hooks.def"
#undef HN_HOOK

#ifdef __cplusplus
}
#endif
#endif
