/*  test_link_window.c: one connection's un-STORED PUBLISHes
    (link/link_window.h): order, bound, cumulative acknowledgement, rewinds,
    and the ring wrapping around many times.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "link_window.h"

static void s_push(link_window_t *w, uint64_t seq)
{
    uint8_t frame[8];
    memcpy(frame, &seq, sizeof frame);
    assert_int_equal(link_window_push(w, seq, frame, sizeof frame, seq % 2 == 0), 0);
}

//  Takes the next waiting entry, checks its sequence and bytes, marks it sent.
static void s_take(link_window_t *w, uint64_t seq)
{
    const link_entry_t *e = link_window_next(w);
    assert_non_null(e);
    assert_int_equal(e->seq, seq);
    assert_int_equal(e->size, 8);
    assert_memory_equal(e->data, &seq, 8);
    assert_int_equal(e->file, seq % 2 == 0); //  the flag stays with its entry
    link_window_mark_sent(w);
}

static void test_order_and_bound(void **state)
{
    (void)state;
    link_window_t *w = link_window_new(3);
    assert_non_null(w);
    assert_null(link_window_next(w));
    s_push(w, 5);
    s_push(w, 6);
    s_push(w, 9); //  gaps are the caller's business; order is not
    uint8_t b = 0;
    assert_int_equal(link_window_push(w, 10, &b, 1, false), 1); //  full
    assert_int_equal(link_window_room(w), 0);
    s_take(w, 5);
    s_take(w, 6);
    assert_int_equal(link_window_sent(w), 2);
    s_take(w, 9);
    assert_null(link_window_next(w));
    assert_int_equal(link_window_count(w), 3);
    assert_int_equal(link_window_bytes(w), 3 * 8);
    assert_int_equal(link_window_ack(w, 6), 2);
    assert_int_equal(link_window_bytes(w), 8); //  what is held, not what was sent
    link_window_destroy(&w);
    assert_null(w);
    link_window_destroy(&w); //  idempotent
}

static void test_seq_must_grow(void **state)
{
    (void)state;
    link_window_t *w = link_window_new(4);
    uint8_t b = 0;
    s_push(w, 3);
    assert_int_equal(link_window_push(w, 3, &b, 1, false), -1);
    assert_int_equal(link_window_push(w, 2, &b, 1, false), -1);
    assert_int_equal(link_window_ack(w, 7), 1); //  an ack beyond raises the floor
    assert_int_equal(link_window_last_seq(w), 7);
    assert_int_equal(link_window_push(w, 7, &b, 1, false), -1);
    s_push(w, 8);
    link_window_destroy(&w);
}

static void test_ack_is_cumulative(void **state)
{
    (void)state;
    link_window_t *w = link_window_new(8);
    for (uint64_t s = 1; s <= 5; s++)
        s_push(w, s);
    s_take(w, 1);
    s_take(w, 2);
    s_take(w, 3);
    assert_int_equal(link_window_ack(w, 2), 2);
    assert_int_equal(link_window_first_seq(w), 3);
    assert_int_equal(link_window_sent(w), 1);
    assert_int_equal(link_window_ack(w, 2), 0); //  duplicate
    assert_int_equal(link_window_ack(w, 4), 2); //  beyond what was sent: still cumulative
    assert_int_equal(link_window_sent(w), 0);
    s_take(w, 5);
    assert_int_equal(link_window_ack(w, 100), 1);
    assert_int_equal(link_window_count(w), 0);
    assert_int_equal(link_window_first_seq(w), 0);
    link_window_destroy(&w);
}

static void test_rewind(void **state)
{
    (void)state;
    link_window_t *w = link_window_new(8);
    for (uint64_t s = 10; s <= 14; s++)
        s_push(w, s);
    for (uint64_t s = 10; s <= 13; s++)
        s_take(w, s);
    assert_int_equal(link_window_rewind(w, 12), 0);
    assert_int_equal(link_window_sent(w), 2);
    s_take(w, 12);
    assert_int_equal(link_window_rewind(w, 20), 0); //  beyond: nothing to re-send
    assert_int_equal(link_window_sent(w), 3);
    assert_int_equal(link_window_rewind(w, 9), -1); //  below the window: lost
    link_window_rewind_all(w);
    s_take(w, 10);
    link_window_destroy(&w);
}

static void test_ring_wraps(void **state)
{
    (void)state;
    link_window_t *w = link_window_new(7);
    uint64_t next_push = 1, next_take = 1, acked = 0;
    for (int round = 0; round < 1000; round++) {
        while (link_window_room(w) > 0)
            s_push(w, next_push++);
        while (link_window_next(w) && next_take < next_push - 2)
            s_take(w, next_take++);
        acked += 3;
        if (acked >= next_take)
            acked = next_take - 1;
        link_window_ack(w, acked);
        assert_int_equal(link_window_first_seq(w), acked + 1);
        assert_int_equal(link_window_count(w), next_push - 1 - acked);
    }
    link_window_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_bound),   cmocka_unit_test(test_seq_must_grow),
        cmocka_unit_test(test_ack_is_cumulative), cmocka_unit_test(test_rewind),
        cmocka_unit_test(test_ring_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
