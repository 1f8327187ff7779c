/*  sn_auth.h: the credentials the client presents to ServiceNow.

    Basic: user and password on every request (libcurl builds the header).
    OAuth: POST {instance}/oauth_token.do (form-urlencoded) with the password
    grant gets an access token and a refresh token; the token is refreshed with
    the refresh_token grant `margin` seconds before it expires (the margin is
    at most half the token's lifetime), falling back to the password grant when
    the refresh token is refused. After a 401 on an API call the caller drops
    the token (sn_auth_reject) and tries once more with a fresh one; a second
    401 is final (no loop).

    The object owns copies of the secrets and wipes them when destroyed. No
    secret ever goes into an error: token endpoint failures report the
    endpoint's own words (e.g. "access_denied") and never the form body. */

#ifndef SN_AUTH_H
#define SN_AUTH_H

#include "sn_error.h"
#include "sn_http.h"

#include <stdbool.h>

typedef enum {
    SN_AUTH_BASIC = 0, //  user + password on every request
    SN_AUTH_OAUTH,     //  OAuth 2.0 password grant, Bearer tokens
} sn_auth_kind_t;

typedef struct sn_auth_t sn_auth_t;

typedef struct {
    sn_auth_kind_t kind;       //  basic or OAuth
    const char *user;          //  ServiceNow user_name
    const char *password;      //  its password
    const char *client_id;     //  OAuth application client id (OAuth only)
    const char *client_secret; //  OAuth application secret (OAuth only)
    const char *token_url;     //  absolute URL of oauth_token.do (OAuth only)
    long refresh_margin_s;     //  refresh this long before expiry, >= 0
} sn_auth_options_t;

//  New credentials holding copies of opts' strings, or NULL when out of memory.
//  The caller has checked that the strings the kind needs are present.
sn_auth_t *sn_auth_new(const sn_auth_options_t *opts);

//  Wipes and frees the credentials, sets *self_p to NULL; accepts NULL.
void sn_auth_destroy(sn_auth_t **self_p);

//  Puts the credentials into req (basic_user/basic_password, or bearer),
//  fetching or refreshing the OAuth token over http first when it is missing
//  or about to expire. The pointers stored in req stay valid until the next
//  call on self. Returns SN_OK, SN_E_AUTH when the token endpoint refuses, or
//  the transport's error (transient: the caller may retry).
sn_err_code_t sn_auth_apply(sn_auth_t *self, sn_http_t *http, sn_http_request_t *req,
                            sn_error_t *err);

//  Called after a 401 on an API call: drops the OAuth tokens so that the next
//  apply fetches new ones with the password grant. Returns true when trying
//  again can help (OAuth), false for Basic.
bool sn_auth_reject(sn_auth_t *self);

//  Replaces any secret self holds (password, client secret, tokens) found in
//  err's texts with "***".
void sn_auth_scrub(const sn_auth_t *self, sn_error_t *err);

//  Token requests made so far (fetches and refreshes).
unsigned long sn_auth_token_requests(const sn_auth_t *self);

#endif
