/*  sn_record.h: a ServiceNow record as the client hands it out.

    A record is a jansson object whose every value is a string, exactly as the
    Table API sends them with sysparm_display_value=false and
    sysparm_exclude_reference_link=true ("sys_mod_count":"4", "active":"true",
    a reference is the bare sys_id). sn_record_normalise() enforces that shape on
    whatever came over the wire: a reference object {"link","value"} becomes its
    value, null becomes "", a number or boolean its text; any other value (array,
    nested object) makes the record invalid.

    Ownership: every function that hands out a json_t (sn_client.h) gives the
    caller one reference, to be released with json_decref(). Records passed to a
    callback are borrowed for the duration of the call (json_incref to keep). */

#ifndef SN_RECORD_H
#define SN_RECORD_H

#include <jansson.h>
#include <stdbool.h>

//  The string value of field name in record, or "" when the field is absent
//  (ACLs and sysparm_fields leave fields out) or not a string. Never NULL; the
//  pointer lives as long as the record is not changed.
const char *sn_field(const json_t *record, const char *name);

//  Rewrites record in place so that every value is a string (see above).
//  Returns false when record is not an object or holds a value that has no
//  string form; record may then be partly rewritten.
bool sn_record_normalise(json_t *record);

//  True when text looks like a sys_id: 32 characters of [0-9a-zA-Z].
bool sn_is_sys_id(const char *text);

//  True when text can be a table name in a URL: letters a-z, digits and '_'.
bool sn_is_table_name(const char *text);

#endif
