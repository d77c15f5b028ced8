/* placeholder: replaced by the real module (horcrux.shared) */
#include "aux.h"
HX_EXPORT int luaopen_horcrux_shared(lua_State *L) {
  return luaL_error(L, "horcrux.shared: not built yet");
}
