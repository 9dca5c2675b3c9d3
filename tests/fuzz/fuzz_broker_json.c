/* Fuzz target: the JSON bodies of the broker's endpoints as the routes read
 * them: the schema checks of /generate/async, /generate/pop,
 * /generate/submit and PUT /workers, then (when the async schema passes)
 * the request parser that builds the queued request and its price, and the
 * helpers a body's strings reach (seed text, base64 source images, image
 * header sniffing, worker ids). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void strings_of(const json_t *v, int depth) {
    if (depth > 8)
        return;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        (void)br_seed_from_text(s);
        char id[BR_ID_LEN];
        (void)br_uuid_parse(s, id);
        size_t raw_len = 0;
        void *raw = br_b64_decode(s, n, &raw_len);
        if (raw != NULL) {
            br_image_info info;
            (void)br_image_sniff(raw, raw_len, &info);
            free(raw);
        }
        free(br_lower(s));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) strings_of(x, depth + 1);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) strings_of(x, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    br_image_info info;
    (void)br_image_sniff(data, size, &info);
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (body == NULL)
        return 0;
    json_t *e;
    e = br_validate_pop_schema(body);
    json_decref(e);
    e = br_validate_submit_schema(body);
    json_decref(e);
    e = br_validate_worker_put_schema(body);
    json_decref(e);
    e = br_validate_async_schema(body);
    if (e == NULL && json_is_object(body)) {
        br_req_spec spec;
        if (br_request_parse(NULL, body, &spec) == 0) {
            (void)br_price_legacy(&spec);
            (void)br_price_burn(&spec, 1.0);
            br_req_spec_free(&spec);
        }
    }
    json_decref(e);
    strings_of(body, 0);
    json_decref(body);
    return 0;
}
