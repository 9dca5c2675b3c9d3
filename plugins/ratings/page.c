/* ratings: the rating page, GET /rate. One self-contained HTML file
 * (page.html: markup, style and script) compiled into the plugin with
 * .incbin, so the page needs no files at run time. It talks to the node's own
 * /api/v1 with the API key the person enters (anonymous without one). */
#include "ratings.h"

/* page.html, embedded; plugin.mk makes page.o depend on it. The path is
 * relative to the repository root, where make runs the compiler. */
__asm__(".section .rodata\n"
        ".global rt_page_html_start\n"
        ".hidden rt_page_html_start\n"
        "rt_page_html_start:\n"
        ".incbin \"plugins/ratings/page.html\"\n"
        ".global rt_page_html_end\n"
        ".hidden rt_page_html_end\n"
        "rt_page_html_end:\n"
        ".previous\n");
extern const char rt_page_html_start[], rt_page_html_end[];

static void route_page(hn_request *req, void *state) {
    ratings *r = state;
    r->api->resp_header(req, "Cache-Control", "no-cache");
    r->api->respond(req, 200, "text/html; charset=utf-8", rt_page_html_start,
                    (size_t)(rt_page_html_end - rt_page_html_start));
}

int rt_page_register(ratings *r) {
    return r->api->route_add(r->self, HN_GET, "/rate", route_page, r);
}
