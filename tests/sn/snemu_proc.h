/*  snemu_proc.h: runs the ServiceNow emulator (tests/snemu/snemu.py) as a child
    process for the client's tests, and talks to its control API.

    snemu_proc_start() spawns `python3 snemu.py --port 0 --port-file F ...`,
    waits for the port file, and returns a handle; snemu_proc_stop() sends
    SIGTERM and reaps it. The control calls fail the test (cmocka) when the
    emulator does not answer 200. */

#ifndef SNEMU_PROC_H
#define SNEMU_PROC_H

#include <jansson.h>

typedef struct snemu_proc_t snemu_proc_t;

//  Starts the emulator with the given extra arguments (NULL-terminated list,
//  may be NULL). Fails the test when it does not listen within 15 s.
snemu_proc_t *snemu_proc_start(const char *const *extra_args);

//  Stops and reaps the emulator; sets *self_p to NULL; accepts NULL.
void snemu_proc_stop(snemu_proc_t **self_p);

//  "http://127.0.0.1:PORT".
const char *snemu_proc_url(const snemu_proc_t *self);

//  Sends method (GET, POST, DELETE) to a control path such as "/__snemu/faults"
//  with an optional JSON body; returns the parsed answer (caller decrefs).
json_t *snemu_proc_control(snemu_proc_t *self, const char *method, const char *path,
                           const char *body);

//  Sets faults (a JSON object text) through POST /__snemu/faults.
void snemu_proc_faults(snemu_proc_t *self, const char *faults);

//  Clears faults, data, the request log and the clock offset.
void snemu_proc_reset_all(snemu_proc_t *self);

//  The request log entries (a new JSON array, caller decrefs).
json_t *snemu_proc_log(snemu_proc_t *self);

//  Number of log entries whose path starts with path_prefix, and whose status
//  equals status (0 for any).
size_t snemu_proc_count(snemu_proc_t *self, const char *path_prefix, long status);

#endif
