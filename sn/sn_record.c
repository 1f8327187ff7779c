/*  sn_record.c: field access and shape normalisation of ServiceNow records.
    See sn_record.h for the contract. */

#include "sn_record.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

const char *sn_field(const json_t *record, const char *name)
{
    const char *value = json_string_value(json_object_get(record, name));
    return value ? value : "";
}

//  The string form of one field value, as a new reference, or NULL when the
//  value has none (array, object without a string "value").
static json_t *s_string_form(json_t *value)
{
    char text[64];
    switch (json_typeof(value)) {
    case JSON_STRING:
        return json_incref(value);
    case JSON_NULL:
        return json_string("");
    case JSON_TRUE:
        return json_string("true");
    case JSON_FALSE:
        return json_string("false");
    case JSON_INTEGER:
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return json_string(text);
    case JSON_REAL:
        snprintf(text, sizeof text, "%.17g", json_real_value(value));
        return json_string(text);
    case JSON_OBJECT: {
        //  A reference field without sysparm_exclude_reference_link
        json_t *inner = json_object_get(value, "value");
        return json_is_string(inner) ? json_incref(inner) : NULL;
    }
    case JSON_ARRAY:
        return NULL;
    }
    return NULL;
}

bool sn_record_normalise(json_t *record)
{
    if (!json_is_object(record))
        return false;
    const char *key;
    json_t *value;
    json_object_foreach(record, key, value)
    {
        if (json_is_string(value))
            continue;
        json_t *text = s_string_form(value);
        if (!text)
            return false;
        //  Replacing the value of an existing key keeps the iteration valid
        json_object_set_new(record, key, text);
    }
    return true;
}

bool sn_is_sys_id(const char *text)
{
    if (!text || strlen(text) != 32)
        return false;
    for (const char *c = text; *c; c++)
        if (!isalnum((unsigned char)*c))
            return false;
    return true;
}

bool sn_is_table_name(const char *text)
{
    if (!text || !*text)
        return false;
    for (const char *c = text; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}
