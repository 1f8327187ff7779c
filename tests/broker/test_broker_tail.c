/*  test_broker_tail.c: the in-memory tail of a queue (broker/broker_tail.h),
    unit; runs under the sanitizers.

    - it holds a contiguous run of the newest sequences and finds each one
      with its exact bytes;
    - it drops the oldest to make room, by count and by bytes, also when
      payloads wrap around the end of the ring (every byte checked);
    - a push out of sequence restarts it; a payload larger than the ring is
      not kept and empties it;
    - release frees the ring and the tail works again afterwards.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "broker_tail.h"

//  Deterministic payload of seq: size from 1 to 200 bytes.
static size_t s_payload(uint64_t seq, uint8_t *out)
{
    size_t size = 1 + (size_t)((seq * 2654435761u) % 200);
    for (size_t i = 0; i < size; i++)
        out[i] = (uint8_t)(seq * 131 + i);
    return size;
}

static bool s_holds(const broker_tail_t *tail, uint64_t seq)
{
    uint8_t expect[256];
    size_t size = s_payload(seq, expect);
    broker_tail_entry_t entry;
    if (!broker_tail_find(tail, seq, &entry))
        return false;
    assert_int_equal(entry.seq, seq);
    assert_int_equal(entry.size, size);
    assert_memory_equal(entry.payload, expect, size);
    assert_int_equal(entry.file, seq % 3 == 0); //  the flag comes back with its message
    return true;
}

static void s_push(broker_tail_t *tail, uint64_t seq)
{
    uint8_t payload[256];
    size_t size = s_payload(seq, payload);
    assert_true(broker_tail_push(tail, seq, payload, size, seq % 3 == 0));
}

static void test_holds_newest_by_count(void **state)
{
    (void)state;
    broker_tail_t *tail = broker_tail_new(64 * 1024, 8);
    assert_non_null(tail);
    assert_int_equal(broker_tail_allocated(tail), 0); //  nothing until the first push
    assert_false(s_holds(tail, 1));
    for (uint64_t seq = 1; seq <= 20; seq++)
        s_push(tail, seq);
    assert_int_equal(broker_tail_count(tail), 8);
    for (uint64_t seq = 13; seq <= 20; seq++)
        assert_true(s_holds(tail, seq));
    assert_false(s_holds(tail, 12));
    assert_false(s_holds(tail, 21));
    broker_tail_destroy(&tail);
    assert_null(tail);
    broker_tail_destroy(&tail); //  accepts NULL
}

//  A small ring and many pushes: payloads wrap around its end again and
//  again; whatever the tail says it holds must be exact, and it must hold
//  at least the newest message and as many as fit.
static void test_wraps_by_bytes(void **state)
{
    (void)state;
    const size_t capacity = 1000;
    broker_tail_t *tail = broker_tail_new(capacity, 1000);
    for (uint64_t seq = 1; seq <= 5000; seq++) {
        s_push(tail, seq);
        size_t count = broker_tail_count(tail);
        assert_true(count >= 1);
        size_t bytes = 0;
        for (uint64_t held = seq - count + 1; held <= seq; held++) {
            assert_true(s_holds(tail, held));
            uint8_t scratch[256];
            bytes += s_payload(held, scratch);
        }
        assert_true(bytes <= capacity);
        assert_false(s_holds(tail, seq - count)); //  contiguous: nothing below the run
        //  Room is used: the run is not much shorter than what would fit.
        uint8_t scratch[256];
        assert_true(bytes + 2 * 200 + s_payload(seq - count, scratch) > capacity / 2);
    }
    broker_tail_destroy(&tail);
}

static void test_restart_and_too_big(void **state)
{
    (void)state;
    broker_tail_t *tail = broker_tail_new(300, 16);
    s_push(tail, 1);
    s_push(tail, 2);
    s_push(tail, 7); //  not 3: the tail starts again at 7
    assert_int_equal(broker_tail_count(tail), 1);
    assert_false(s_holds(tail, 2));
    assert_true(s_holds(tail, 7));
    uint8_t big[301] = {0};
    assert_false(broker_tail_push(tail, 8, big, sizeof big, true));
    assert_int_equal(broker_tail_count(tail), 0);
    s_push(tail, 9);
    assert_true(s_holds(tail, 9));
    broker_tail_release(tail);
    assert_int_equal(broker_tail_count(tail), 0);
    assert_int_equal(broker_tail_allocated(tail), 0);
    assert_false(s_holds(tail, 9));
    s_push(tail, 10);
    assert_true(s_holds(tail, 10));
    assert_int_equal(broker_tail_allocated(tail), 300);
    broker_tail_destroy(&tail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_holds_newest_by_count),
        cmocka_unit_test(test_wraps_by_bytes),
        cmocka_unit_test(test_restart_and_too_big),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
