/* placeholder: replaced by the real module */
#include "aux.h"
HX_EXPORT int luaopen_horcrux_cgroup(lua_State *L) { return luaL_error(L, "horcrux.cgroup: not built yet"); }
