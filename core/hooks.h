/* hooks.h - what the host calls of horcrux.hooks (hooks.c) from C. */
#ifndef HORCRUX_HOOKS_H
#define HORCRUX_HOOKS_H

/* Makes hooks.take() and hooks.post() return at once while on (the
 * server's stop: deliveries in flight stay pending on disk). */
void hx_hooks_interrupt(int on);

#endif
