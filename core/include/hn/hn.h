/* horde-node plugin SDK: everything a plugin needs, in one include. */
#ifndef HN_HN_H
#define HN_HN_H

#include "types.h"
#include "error.h"
#include "plugin.h"
#include "api.h"
#include "hooks.h"
#include "storage.h"
#include "images.h"
#include "generator.h"
#include "horde.h"

#endif
