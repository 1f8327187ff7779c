/*  node_replica.c: the Basic-mode sync rules (see node_replica.h).

    Nothing here does I/O: the engine feeds records and field sets in and
    writes what comes out, so every rule is tested on its own
    (tests/node/test_replica.c).
*/
#include "node_replica.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sn_record.h"

const char *const node_replica_synced[] = {
    "short_description", "description", "urgency", "impact", "state", NULL};

const char node_replica_read_fields[] =
    "sys_id,number,sys_updated_on,sys_mod_count,sys_created_by,correlation_id,"
    "short_description,description,urgency,impact,state,close_code,close_notes";

static const char *const s_close_fields[] = {"close_code", "close_notes", NULL};

bool node_replica_state_closed(const char *state)
{
    return state && (!strcmp(state, "6") || !strcmp(state, "7"));
}

node_fields_t *node_replica_extract(const json_t *record)
{
    node_fields_t *fields = node_fields_new();
    if (!fields)
        return NULL;
    int rc = 0;
    for (int i = 0; node_replica_synced[i]; i++)
        rc |= node_fields_set(fields, node_replica_synced[i],
                              sn_field(record, node_replica_synced[i]));
    if (node_replica_state_closed(sn_field(record, "state")))
        for (int i = 0; s_close_fields[i]; i++)
            rc |= node_fields_set(fields, s_close_fields[i], sn_field(record, s_close_fields[i]));
    if (rc)
        node_fields_destroy(&fields);
    return fields;
}

//  True when the other side changed name: the field is new or its value
//  differs from the previous replica received.
static bool s_remote_changed(const node_fields_t *previous, const char *name, const char *value)
{
    const char *before = node_fields_get(previous, name);
    return !before || strcmp(before, value) != 0;
}

//  Adds the close fields of incoming when plan writes a closed state.
static int s_add_close_fields(node_fields_t *plan, const node_fields_t *incoming)
{
    if (!node_replica_state_closed(node_fields_get(plan, "state")))
        return 0;
    for (int i = 0; s_close_fields[i]; i++) {
        const char *value = node_fields_get(incoming, s_close_fields[i]);
        if (value && node_fields_set(plan, s_close_fields[i], value))
            return -1;
    }
    return 0;
}

node_fields_t *node_replica_plan(const node_fields_t *incoming, const node_fields_t *previous,
                                 const node_fields_t *local, const node_fields_t *pending,
                                 proto_role_t role)
{
    node_fields_t *plan = node_fields_new();
    if (!plan)
        return NULL;
    for (size_t i = 0; i < node_fields_size(incoming); i++) {
        const char *name = node_fields_name(incoming, i);
        const char *value = node_fields_value(incoming, i);
        if (!s_remote_changed(previous, name, value))
            continue; //  the other side did not touch it: keep ours
        const char *mine = node_fields_get(local, name);
        if (mine && !strcmp(mine, value))
            continue; //  already holds that value
        if (node_fields_get(pending, name) && role == PROTO_ROLE_PUBLIC)
            continue; //  both changed it: the public side's value wins
        if (node_fields_set(plan, name, value)) {
            node_fields_destroy(&plan);
            return NULL;
        }
    }
    if (s_add_close_fields(plan, incoming))
        node_fields_destroy(&plan);
    return plan;
}

int node_replica_pending_add(node_fields_t *pending, const node_fields_t *before,
                             const node_fields_t *after, uint64_t seq)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, seq);
    //  Fields changed or added in after ...
    for (size_t i = 0; i < node_fields_size(after); i++) {
        const char *name = node_fields_name(after, i);
        const char *old = node_fields_get(before, name);
        if ((!old || strcmp(old, node_fields_value(after, i))) &&
            node_fields_set(pending, name, text))
            return -1;
    }
    //  ... and fields that stopped travelling (close fields after a reopen).
    for (size_t i = 0; i < node_fields_size(before); i++) {
        const char *name = node_fields_name(before, i);
        if (!node_fields_get(after, name) && node_fields_set(pending, name, text))
            return -1;
    }
    return 0;
}

int node_replica_pending_ack(node_fields_t *pending, uint64_t seq, node_fields_t *previous,
                             const node_fields_t *local)
{
    size_t i = 0;
    while (i < node_fields_size(pending)) {
        const char *name = node_fields_name(pending, i);
        uint64_t at = strtoull(node_fields_value(pending, i), NULL, 10);
        if (at > seq) {
            i++;
            continue;
        }
        if (previous) {
            const char *ours = node_fields_get(local, name);
            if (!ours)
                node_fields_remove(previous, name); //  a close field that stopped travelling
            else if (node_fields_set(previous, name, ours))
                return -1;
        }
        node_fields_remove(pending, name); //  the next entry moves to i
    }
    return 0;
}

char *node_replica_comment_text(const char *instance, const char *author, const char *text)
{
    char *out = NULL;
    if (asprintf(&out, "[%s] %s wrote:\n%s", instance, author, text) < 0)
        return NULL;
    return out;
}

char *node_replica_correlation_display(const char *number, const char *instance)
{
    char *out = NULL;
    if (asprintf(&out, "%s@%s", number, instance) < 0)
        return NULL;
    return out;
}

json_t *node_replica_update_body(const node_fields_t *fields)
{
    json_t *body = json_object();
    if (!body)
        return NULL;
    for (size_t i = 0; i < node_fields_size(fields); i++) {
        if (json_object_set_new(body, node_fields_name(fields, i),
                                json_string(node_fields_value(fields, i)))) {
            json_decref(body);
            return NULL;
        }
    }
    return body;
}

json_t *node_replica_create_body(const node_fields_t *incoming, const char *source_sys_id,
                                 const char *source_number, const char *source_instance)
{
    json_t *body = node_replica_update_body(incoming);
    char *display = node_replica_correlation_display(source_number, source_instance);
    if (!body || !display ||
        json_object_set_new(body, "correlation_id", json_string(source_sys_id)) ||
        json_object_set_new(body, "correlation_display", json_string(display))) {
        json_decref(body);
        body = NULL;
    }
    free(display);
    return body;
}
