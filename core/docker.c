/* placeholder: replaced by the real module */
#include "aux.h"
HX_EXPORT int luaopen_horcrux_docker(lua_State *L) { return luaL_error(L, "horcrux.docker: not built yet"); }
