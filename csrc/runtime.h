/* The runtime object a rewritten module calls: the hit path in C.
 *   rt.call(site, func, *args, **kwargs)   a marked call
 *   rt.key(site, func, args, kwargs)       key of a call (chains, async)
 *   rt.key_expr(site, values)              key of a non-call expression
 *   rt.load(site, key)                     (True, value) or (False, reason)
 *   rt.save(site, key, value, seconds)     store a computed value
 * Policy (warnings, logging, async, chains) lives in devstash/_runtime.py,
 * which the runtime calls back through its `policy` object on rare events. */
#ifndef DEVSTASH_RUNTIME_H
#define DEVSTASH_RUNTIME_H

#include "util.h"

extern PyTypeObject Runtime_Type;

#endif /* DEVSTASH_RUNTIME_H */
