/*  broker_keys.h: the broker's CURVE key pair.

    Made with zmq_curve_keypair on first start and kept in STATE_DIR/broker.key
    (mode 0600, written atomically): two lines "public = Z85" and
    "secret = Z85". The public key travels in invitation codes; the secret
    never leaves the file and is never logged.
*/
#ifndef BROKER_KEYS_H
#define BROKER_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define BROKER_KEY_FILE "broker.key"
#define BROKER_Z85_SIZE 41 //  40 Z85 characters and a NUL

typedef struct {
    char public_z85[BROKER_Z85_SIZE]; //  Public key, Z85
    char secret_z85[BROKER_Z85_SIZE]; //  Secret key, Z85
} broker_keys_t;

//  Loads state_dir/broker.key, or when absent and create is true makes a
//  new pair and writes it (creating state_dir with mode 0700 if needed).
//  Sets *created when a new pair was made. Returns 0, or -1 with a reason in
//  err (a file with group/other permissions is refused).
int broker_keys_load(broker_keys_t *keys, const char *state_dir, bool create, bool *created,
                     char *err, size_t errlen);

//  Overwrites the secret in memory.
void broker_keys_wipe(broker_keys_t *keys);

#endif
