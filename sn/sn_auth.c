/*  sn_auth.c: Basic credentials and OAuth tokens (password and refresh_token
    grants on oauth_token.do). See sn_auth.h for the contract. */

#include "sn_auth.h"
#include "sn_query.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sn_auth_t {
    sn_auth_kind_t kind;          //  basic or OAuth
    char *user;                   //  user_name
    char *password;               //  its password
    char *client_id;              //  OAuth client id, or NULL
    char *client_secret;          //  OAuth client secret, or NULL
    char *token_url;              //  oauth_token.do URL, or NULL
    long margin_s;                //  refresh margin before expiry
    char *access_token;           //  current Bearer token, or NULL
    char *last_token;             //  the token a fetch in progress replaces, or NULL
    char *refresh_token;          //  refresh token, or NULL
    double refresh_at;            //  monotonic second to refresh at
    unsigned long token_requests; //  token endpoint calls so far
};

//  Wipes and frees a secret string; accepts NULL.
static void s_secret_free(char **secret_p)
{
    if (!*secret_p)
        return;
    OPENSSL_cleanse(*secret_p, strlen(*secret_p));
    free(*secret_p);
    *secret_p = NULL;
}

static char *s_dup(const char *text, bool *ok)
{
    if (!text)
        return NULL;
    char *copy = strdup(text);
    if (!copy)
        *ok = false;
    return copy;
}

sn_auth_t *sn_auth_new(const sn_auth_options_t *opts)
{
    assert(opts && opts->user && opts->password && opts->refresh_margin_s >= 0);
    assert(opts->kind == SN_AUTH_BASIC ||
           (opts->client_id && opts->client_secret && opts->token_url));
    sn_auth_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    bool ok = true;
    self->kind = opts->kind;
    self->margin_s = opts->refresh_margin_s;
    self->user = s_dup(opts->user, &ok);
    self->password = s_dup(opts->password, &ok);
    if (opts->kind == SN_AUTH_OAUTH) {
        self->client_id = s_dup(opts->client_id, &ok);
        self->client_secret = s_dup(opts->client_secret, &ok);
        self->token_url = s_dup(opts->token_url, &ok);
    }
    if (!ok)
        sn_auth_destroy(&self);
    return self;
}

void sn_auth_destroy(sn_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_auth_t *self = *self_p;
    free(self->user);
    s_secret_free(&self->password);
    free(self->client_id);
    s_secret_free(&self->client_secret);
    free(self->token_url);
    s_secret_free(&self->access_token);
    s_secret_free(&self->last_token);
    s_secret_free(&self->refresh_token);
    free(self);
    *self_p = NULL;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

//  The token lifetime in seconds from the token answer: expires_in is a number
//  in the documentation, a string in some captures; 1800 (the default) when
//  missing or unreadable; 0 for a token at the end of its life.
static long s_expires_in(json_t *doc)
{
    json_t *value = json_object_get(doc, "expires_in");
    char *end = NULL;
    long seconds = -1;
    if (json_is_integer(value))
        seconds = (long)json_integer_value(value);
    else if (json_is_string(value)) {
        seconds = strtol(json_string_value(value), &end, 10);
        if (end == json_string_value(value) || *end)
            seconds = -1;
    }
    return seconds < 0 ? 1800 : seconds;
}

//  Stores the tokens of a successful token answer.
static sn_err_code_t s_take_tokens(sn_auth_t *self, json_t *doc, sn_error_t *err)
{
    const char *access = json_string_value(json_object_get(doc, "access_token"));
    const char *refresh = json_string_value(json_object_get(doc, "refresh_token"));
    if (!access || !*access)
        return sn_error_set(err, SN_E_BAD_RESPONSE, 200, "OAuth token answer without a token",
                            "no access_token in the answer of oauth_token.do");
    //  "Access requests made within the access token expiration time always
    //  return the current access token" (ServiceNow's OAuth documentation):
    //  an early refresh cannot renew it, so it is used to the end of its
    //  life, and the first call after that fetches a new one.
    bool same = self->last_token && !strcmp(self->last_token, access);
    s_secret_free(&self->last_token);
    s_secret_free(&self->access_token);
    self->access_token = strdup(access);
    if (refresh && *refresh) {
        s_secret_free(&self->refresh_token);
        self->refresh_token = strdup(refresh);
    }
    if (!self->access_token)
        return sn_error_set(err, SN_E_BAD_RESPONSE, 200, "out of memory storing a token", NULL);
    long lifetime = s_expires_in(doc);
    long margin = same ? 0 : self->margin_s < lifetime / 2 ? self->margin_s : lifetime / 2;
    self->refresh_at = s_now() + (double)(lifetime - margin);
    return SN_OK;
}

//  The x-www-form-urlencoded body of a token request (a new string holding
//  secrets: the caller wipes and frees it), or NULL when out of memory.
//  refresh selects the refresh_token grant, else the password grant.
static char *s_form(const sn_auth_t *self, bool refresh)
{
    const char *names[4] = {"client_id", "client_secret", NULL, NULL};
    const char *values[4] = {self->client_id, self->client_secret, NULL, NULL};
    size_t count = 2;
    if (refresh) {
        names[count] = "refresh_token";
        values[count++] = self->refresh_token;
    } else {
        names[count] = "username";
        values[count++] = self->user;
        names[count] = "password";
        values[count++] = self->password;
    }
    char *form = strdup(refresh ? "grant_type=refresh_token" : "grant_type=password");
    for (size_t i = 0; form && i < count; i++) {
        char *escaped = sn_query_escape(values[i]);
        char *longer = NULL;
        if (escaped && asprintf(&longer, "%s&%s=%s", form, names[i], escaped) < 0)
            longer = NULL;
        s_secret_free(&escaped);
        s_secret_free(&form);
        form = longer;
    }
    return form;
}

//  One call of the token endpoint with the given grant. Every refusal that is
//  not transient comes back as SN_E_AUTH.
static sn_err_code_t s_request_token(sn_auth_t *self, sn_http_t *http, bool refresh,
                                     sn_error_t *err)
{
    char *form = s_form(self, refresh);
    if (!form)
        return sn_error_set(err, SN_E_CONFIG, 0, "out of memory building a token request", NULL);
    sn_http_request_t req = {.method = "POST",
                             .url = self->token_url,
                             .content_type = "application/x-www-form-urlencoded",
                             .body = form,
                             .body_len = strlen(form)};
    sn_response_t resp = {0};
    bool maybe_sent;
    json_t *doc = NULL;
    self->token_requests++;
    sn_err_code_t code = sn_http_perform(http, &req, &resp, &maybe_sent, err);
    s_secret_free(&form);
    if (code == SN_OK)
        code = sn_response_decode(&resp, &doc, err);
    if (resp.body)
        OPENSSL_cleanse(resp.body, resp.body_len);
    sn_response_reset(&resp);
    if (code == SN_OK && !doc)
        code = sn_error_set(err, SN_E_BAD_RESPONSE, 0, "empty answer from oauth_token.do", NULL);
    if (code == SN_OK)
        code = s_take_tokens(self, doc, err);
    json_decref(doc);
    if (sn_err_scope(code) == SN_SCOPE_RECORD || code == SN_E_PERMISSION || code == SN_E_AUTH) {
        char detail[sizeof err->detail];
        snprintf(detail, sizeof detail, "%s grant for user '%.64s', HTTP %ld: %.200s%s%.200s",
                 refresh ? "refresh_token" : "password", self->user, err->http_status, err->message,
                 *err->detail ? " / " : "", err->detail);
        code = sn_error_set(err, SN_E_AUTH, err->http_status, "OAuth token request refused", "%s",
                            detail);
    }
    return code;
}

//  Gets a usable access token: the refresh grant when a refresh token is held
//  (falling back to the password grant if it is refused), else the password
//  grant.
static sn_err_code_t s_fetch(sn_auth_t *self, sn_http_t *http, sn_error_t *err)
{
    s_secret_free(&self->last_token);
    self->last_token = self->access_token;
    self->access_token = NULL;
    if (self->refresh_token) {
        sn_err_code_t code = s_request_token(self, http, true, err);
        if (code != SN_E_AUTH)
            return code;
        s_secret_free(&self->refresh_token);
    }
    return s_request_token(self, http, false, err);
}

sn_err_code_t sn_auth_apply(sn_auth_t *self, sn_http_t *http, sn_http_request_t *req,
                            sn_error_t *err)
{
    assert(self && http && req && err);
    req->basic_user = req->basic_password = req->bearer = NULL;
    if (self->kind == SN_AUTH_BASIC) {
        req->basic_user = self->user;
        req->basic_password = self->password;
        return SN_OK;
    }
    if (!self->access_token || s_now() >= self->refresh_at) {
        sn_err_code_t code = s_fetch(self, http, err);
        if (code != SN_OK)
            return code;
    }
    req->bearer = self->access_token;
    return SN_OK;
}

bool sn_auth_reject(sn_auth_t *self)
{
    assert(self);
    if (self->kind == SN_AUTH_BASIC)
        return false;
    s_secret_free(&self->access_token);
    s_secret_free(&self->last_token);
    s_secret_free(&self->refresh_token);
    return true;
}

void sn_auth_scrub(const sn_auth_t *self, sn_error_t *err)
{
    assert(self && err);
    sn_error_scrub(err, self->password);
    sn_error_scrub(err, self->client_secret);
    sn_error_scrub(err, self->access_token);
    sn_error_scrub(err, self->refresh_token);
}

unsigned long sn_auth_token_requests(const sn_auth_t *self)
{
    assert(self);
    return self->token_requests;
}
