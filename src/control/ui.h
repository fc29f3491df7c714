/* The dashboard page (src/control/ui/index.html), embedded at build time
 * by cmake/embed.cmake into a generated C file: served by the admin
 * listener at / and /ui/. */
#ifndef ZKGATE_UI_H
#define ZKGATE_UI_H

#include <stddef.h>

extern const unsigned char zg_ui_index_html[];
extern const size_t zg_ui_index_html_len;

#endif
