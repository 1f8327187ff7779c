/*  sn_retry.c: capped exponential backoff with jitter, and Retry-After.
    See sn_retry.h for the contract. */

#include "sn_retry.h"

#include <assert.h>

sn_retry_policy_t sn_retry_policy_default(void)
{
    sn_retry_policy_t policy = {.max_attempts = 5,
                                .base_backoff_ms = 500,
                                .max_backoff_ms = 30000,
                                .max_total_wait_ms = 120000,
                                .jitter = true};
    return policy;
}

bool sn_retry_policy_valid(const sn_retry_policy_t *policy)
{
    return policy->max_attempts >= 1 && policy->base_backoff_ms >= 1 &&
           policy->max_backoff_ms >= policy->base_backoff_ms && policy->max_total_wait_ms >= 0;
}

void sn_retry_start(sn_retry_t *self, const sn_retry_policy_t *policy, uint64_t seed)
{
    assert(self && policy && sn_retry_policy_valid(policy));
    self->policy = *policy;
    self->attempts = 0;
    self->waited_ms = 0;
    self->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static uint64_t s_random(sn_retry_t *self)
{
    uint64_t x = self->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->rng = x;
    return x;
}

//  The backoff before attempt number attempts+1, capped and jittered.
static long s_backoff(sn_retry_t *self)
{
    long delay = self->policy.base_backoff_ms;
    for (int n = 1; n < self->attempts && delay < self->policy.max_backoff_ms; n++)
        delay *= 2;
    if (delay > self->policy.max_backoff_ms)
        delay = self->policy.max_backoff_ms;
    if (self->policy.jitter) {
        long half = delay / 2;
        delay = half + (long)(s_random(self) % (uint64_t)(delay - half + 1));
    }
    return delay;
}

long sn_retry_next(sn_retry_t *self, long retry_after_s)
{
    assert(self);
    self->attempts++;
    if (self->attempts >= self->policy.max_attempts)
        return -1;
    long budget = self->policy.max_total_wait_ms - self->waited_ms;
    long delay;
    if (retry_after_s > 0) {
        if (retry_after_s > budget / 1000)
            return -1;
        delay = retry_after_s * 1000;
    } else {
        delay = s_backoff(self);
        if (delay > budget)
            delay = budget;
        if (delay <= 0 && budget <= 0)
            return -1;
    }
    self->waited_ms += delay;
    return delay;
}
