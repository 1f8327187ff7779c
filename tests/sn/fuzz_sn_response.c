/*  fuzz_sn_response.c: libFuzzer target for the parts of the ServiceNow client
    that read what the network sends: response decoding (content type, JSON,
    error envelopes), record normalisation, the keyset pager's checks of a page,
    query composition and stamp parsing. The first input byte picks the part. */

#include "sn_pager.h"
#include "sn_query.h"
#include "sn_record.h"
#include "sn_response.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const s_types[] = {"application/json;charset=UTF-8", "text/html", "",
                                      "text/plain", "application/problem+json"};

//  A NUL-terminated copy of data.
static char *s_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

static void s_decode(const uint8_t *data, size_t size)
{
    if (size < 3)
        return;
    sn_response_t resp = {.total_count = -1};
    resp.status = 100 + (data[0] << 8 | data[1]) % 500;
    snprintf(resp.content_type, sizeof resp.content_type, "%s",
             s_types[data[2] % (sizeof s_types / sizeof s_types[0])]);
    resp.body = s_text(data + 3, size - 3);
    resp.body_len = size - 3;
    resp.body_cap = size - 2;
    json_t *doc = NULL;
    sn_error_t err;
    if (sn_response_decode(&resp, &doc, &err) == SN_OK && doc) {
        json_t *result = NULL;
        if (sn_response_result(doc, JSON_ARRAY, &result, &err) == SN_OK)
            json_decref(result);
        if (sn_response_result(doc, JSON_OBJECT, &result, &err) == SN_OK)
            json_decref(result);
    }
    json_decref(doc);
    sn_response_reset(&resp);
}

static void s_page(const uint8_t *data, size_t size)
{
    json_t *rows = json_loadb((const char *)data, size, 0, NULL);
    sn_pager_t *pager =
        sn_pager_new("active=true^NQurgency=1", "sys_updated_on", "2024-01-01 00:00:00");
    bool oom;
    //  Feed the same page until the pager refuses it or completes
    for (int round = 0; round < 4 && sn_pager_query(pager, &oom); round++) {
        sn_error_t err;
        if (json_is_array(rows))
            sn_record_normalise(json_array_get(rows, 0));
        if (sn_pager_advance(pager, rows, &err) != SN_OK)
            break;
    }
    sn_pager_destroy(&pager);
    json_decref(rows);
}

static void s_query(const uint8_t *data, size_t size)
{
    char *text = s_text(data, size);
    size_t split = strlen(text);
    const char *condition = split < size ? text + split + 1 : NULL;
    free(sn_query_and(text, condition));
    free(sn_query_escape(text));
    char out[SN_STAMP_SIZE];
    if (sn_stamp_valid(text))
        sn_stamp_add(text, -(long)size * 1000, out);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        s_decode(data + 1, size - 1);
        break;
    case 1:
        s_page(data + 1, size - 1);
        break;
    default:
        s_query(data + 1, size - 1);
        break;
    }
    return 0;
}
