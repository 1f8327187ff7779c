/*  sn_retry.h: when to try a failed ServiceNow call again, and after how long.

    One sn_retry_t lives for the duration of one client call. After each failed
    attempt that is worth retrying, sn_retry_next() says how long to wait:
      - a 429 with Retry-After waits exactly that long, or gives up at once when
        that would overrun the call's total wait budget (waiting less is useless);
      - anything else waits a capped exponential backoff, base * 2^(n-1) up to
        the cap, with jitter drawn from [d/2, d] so that clients drift apart;
      - the last backoff is shortened to fit the total wait budget.
    Pure arithmetic, no clock and no sleep: the caller sleeps. The random source
    is a per-object xorshift, so the type is safe to use from any one thread. */

#ifndef SN_RETRY_H
#define SN_RETRY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int max_attempts;       //  tries per call including the first, >= 1
    long base_backoff_ms;   //  first backoff, >= 1
    long max_backoff_ms;    //  cap on one backoff, >= base_backoff_ms
    long max_total_wait_ms; //  cap on the sum of all waits of one call, >= 0
    bool jitter;            //  draw each backoff from [d/2, d] instead of d
} sn_retry_policy_t;

typedef struct {
    sn_retry_policy_t policy; //  copy of the policy in force
    int attempts;             //  attempts that failed so far
    long waited_ms;           //  sum of the delays handed out so far
    uint64_t rng;             //  xorshift64 state, never 0
} sn_retry_t;

//  The default policy: 5 attempts, 500 ms base, 30 s cap, 120 s in total, jitter.
sn_retry_policy_t sn_retry_policy_default(void);

//  True when policy's values are within the ranges documented above.
bool sn_retry_policy_valid(const sn_retry_policy_t *policy);

//  Starts the retry bookkeeping of one call; seed feeds the jitter.
void sn_retry_start(sn_retry_t *self, const sn_retry_policy_t *policy, uint64_t seed);

//  Records one failed attempt and returns the delay in milliseconds before the
//  next one, or -1 when the attempts or the total wait budget are spent.
//  retry_after_s > 0 is the server's Retry-After (429).
long sn_retry_next(sn_retry_t *self, long retry_after_s);

#endif
