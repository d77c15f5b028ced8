/* static.h - the dashboard's files, served by the host from a folder
 * (--web DIR) before any Lua route: GET and HEAD of "/" (index.html) and of
 * "/ui/<file>".
 *
 * In C, not as a route of routes.lua, because these requests skip the
 * token rule (the files are the same for everyone and hold no data; every
 * API call the page makes carries the token): the exemption must cover
 * these files and nothing else, so no route an operator writes can ever be
 * served without the token through it. The Host allow-list still applies
 * (the guard checks it first). */
#ifndef HORCRUX_STATIC_H
#define HORCRUX_STATIC_H

#include <microhttpd.h>

/* Whether a request for path with method is one for the files: GET or
 * HEAD, and "/" or "/ui/..." (a name that is not a file there is a 404
 * from here, never from a route). */
int hx_static_wants(const char *method, const char *path);

/* Queues the answer for path from dir (a real path, no trailing slash):
 * "/" is dir/index.html, "/ui/x.js" is dir/ui/x.js;
 * 200 with the file, 304 when the client's If-None-Match or
 * If-Modified-Since says it has it, 404 for a name outside the grammar
 * (segments [A-Za-z0-9_][A-Za-z0-9._-]*: no "..", no hidden file), a
 * missing file, or a type not in the table. *status gets the status. */
enum MHD_Result hx_static_send(struct MHD_Connection *conn, const char *dir,
                               const char *path, const char *request_id,
                               int *status);

#endif
