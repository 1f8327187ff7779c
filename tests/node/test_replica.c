/*  test_replica.c: unit tests for node_fields (canonical form, hash) and
    node_replica (the Basic-mode rules): which fields travel, loop prevention,
    what an incoming replica writes, the concurrent-update rule (both sides
    converge, no ping-pong), pending bookkeeping, comment and correlation texts.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "node_fields.h"
#include "node_replica.h"

//  A field set from "name=value" strings, NULL-terminated.
static node_fields_t *s_set(const char *first, ...)
{
    node_fields_t *fields = node_fields_new();
    assert_non_null(fields);
    va_list ap;
    va_start(ap, first);
    for (const char *pair = first; pair; pair = va_arg(ap, const char *)) {
        const char *eq = strchr(pair, '=');
        assert_non_null(eq);
        char name[64];
        memcpy(name, pair, (size_t)(eq - pair));
        name[eq - pair] = 0;
        assert_int_equal(node_fields_set(fields, name, eq + 1), 0);
    }
    va_end(ap);
    return fields;
}

//  Applies plan to an instance's values (what the engine's PATCH does).
static void s_apply(node_fields_t *instance, const node_fields_t *plan)
{
    for (size_t i = 0; i < node_fields_size(plan); i++)
        assert_int_equal(
            node_fields_set(instance, node_fields_name(plan, i), node_fields_value(plan, i)), 0);
}

static void test_fields_canonical_roundtrip(void **state)
{
    (void)state;
    node_fields_t *a = s_set("state=2", "impact=1", "description=line\nbreak", NULL);
    node_fields_t *b = s_set("description=line\nbreak", "state=2", "impact=1", NULL);
    assert_true(node_fields_equal(a, b));
    assert_string_equal(node_fields_name(a, 0), "description"); //  sorted
    proto_buf_t buf;
    proto_buf_init(&buf);
    assert_int_equal(node_fields_encode(a, &buf), 0);
    node_fields_t *c = node_fields_decode(buf.data, buf.size);
    assert_non_null(c);
    assert_true(node_fields_equal(a, c));
    uint8_t ha[32], hc[32];
    node_fields_hash(a, ha);
    node_fields_hash(c, hc);
    assert_memory_equal(ha, hc, 32);
    assert_int_equal(node_fields_set(c, "state", "3"), 0);
    node_fields_hash(c, hc);
    assert_memory_not_equal(ha, hc, 32);
    assert_false(node_fields_equal(a, c));
    //  A damaged blob is refused: missing terminator, unsorted names.
    assert_null(node_fields_decode(buf.data, buf.size - 1));
    const uint8_t unsorted[] = "b\0x\0a\0y";
    assert_null(node_fields_decode(unsorted, sizeof unsorted));
    node_fields_t *empty = node_fields_decode(NULL, 0);
    assert_non_null(empty);
    assert_int_equal(node_fields_size(empty), 0);
    assert_true(node_fields_equal(empty, NULL));
    char hex[17];
    assert_int_equal(strlen(node_fields_hash_hex(a, hex)), 16);
    proto_buf_release(&buf);
    node_fields_destroy(&a);
    node_fields_destroy(&b);
    node_fields_destroy(&c);
    node_fields_destroy(&empty);
    node_fields_destroy(&empty); //  idempotent
}

static void test_fields_remove_and_replace(void **state)
{
    (void)state;
    node_fields_t *f = s_set("a=1", "b=2", "c=3", NULL);
    node_fields_remove(f, "b");
    node_fields_remove(f, "zz");
    assert_int_equal(node_fields_size(f), 2);
    assert_null(node_fields_get(f, "b"));
    assert_int_equal(node_fields_set(f, "a", "9"), 0);
    assert_string_equal(node_fields_get(f, "a"), "9");
    node_fields_t *copy = node_fields_dup(f);
    assert_true(node_fields_equal(f, copy));
    node_fields_destroy(&f);
    node_fields_destroy(&copy);
}

static void test_extract_close_fields_only_when_closed(void **state)
{
    (void)state;
    json_t *rec = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "short_description", "Down",
                            "description", "All down", "urgency", "1", "impact", "2", "state", "2",
                            "close_code", "Solved", "close_notes", "x", "work_notes",
                            "secret internal", "priority", "2");
    node_fields_t *f = node_replica_extract(rec);
    assert_int_equal(node_fields_size(f), 5);
    assert_string_equal(node_fields_get(f, "short_description"), "Down");
    assert_null(node_fields_get(f, "close_code"));
    assert_null(node_fields_get(f, "work_notes")); //  never travels
    assert_null(node_fields_get(f, "priority"));   //  follows on the far side
    node_fields_destroy(&f);
    for (const char *closed = "6";; closed = "7") {
        json_object_set_new(rec, "state", json_string(closed));
        f = node_replica_extract(rec);
        assert_string_equal(node_fields_get(f, "close_code"), "Solved");
        assert_string_equal(node_fields_get(f, "close_notes"), "x");
        node_fields_destroy(&f);
        if (!strcmp(closed, "7"))
            break;
    }
    //  Absent fields read as "" (ACLs may hide a column).
    json_t *sparse = json_pack("{s:s}", "state", "1");
    f = node_replica_extract(sparse);
    assert_string_equal(node_fields_get(f, "description"), "");
    node_fields_destroy(&f);
    json_decref(sparse);
    json_decref(rec);
}

static void test_plan_first_sync_writes_everything(void **state)
{
    (void)state;
    node_fields_t *in = s_set("short_description=A", "state=1", "urgency=2", NULL);
    node_fields_t *plan = node_replica_plan(in, NULL, NULL, NULL, PROTO_ROLE_PRIVATE);
    assert_true(node_fields_equal(plan, in));
    node_fields_destroy(&plan);
    node_fields_destroy(&in);
}

static void test_plan_writes_only_remote_changes(void **state)
{
    (void)state;
    //  The other side changed urgency; short_description in the replica is
    //  stale compared with a local edit not yet polled: it must not be undone.
    node_fields_t *previous = s_set("short_description=A", "urgency=3", "state=1", NULL);
    node_fields_t *in = s_set("short_description=A", "urgency=1", "state=1", NULL);
    node_fields_t *local = s_set("short_description=A", "urgency=3", "state=1", NULL);
    node_fields_t *plan = node_replica_plan(in, previous, local, NULL, PROTO_ROLE_PUBLIC);
    assert_int_equal(node_fields_size(plan), 1);
    assert_string_equal(node_fields_get(plan, "urgency"), "1");
    node_fields_destroy(&plan);
    //  A value we already hold is not written again (no empty update).
    assert_int_equal(node_fields_set(local, "urgency", "1"), 0);
    plan = node_replica_plan(in, previous, local, NULL, PROTO_ROLE_PUBLIC);
    assert_int_equal(node_fields_size(plan), 0);
    node_fields_destroy(&plan);
    node_fields_destroy(&previous);
    node_fields_destroy(&in);
    node_fields_destroy(&local);
}

static void test_plan_resolve_brings_close_fields(void **state)
{
    (void)state;
    //  Close code and notes already arrived earlier, now the state moves to
    //  6: all three must be written together or the data policy refuses.
    node_fields_t *previous =
        s_set("state=2", "close_code=Solved", "close_notes=done", "urgency=2", NULL);
    node_fields_t *in =
        s_set("state=6", "close_code=Solved", "close_notes=done", "urgency=2", NULL);
    node_fields_t *local = s_set("state=2", "urgency=2", NULL);
    node_fields_t *plan = node_replica_plan(in, previous, local, NULL, PROTO_ROLE_PRIVATE);
    assert_string_equal(node_fields_get(plan, "state"), "6");
    assert_string_equal(node_fields_get(plan, "close_code"), "Solved");
    assert_string_equal(node_fields_get(plan, "close_notes"), "done");
    assert_null(node_fields_get(plan, "urgency"));
    node_fields_destroy(&plan);
    node_fields_destroy(&previous);
    node_fields_destroy(&in);
    node_fields_destroy(&local);
}

//  One side of a twin as the engine keeps it, for the simulations below.
typedef struct {
    proto_role_t role;
    node_fields_t *instance; //  What ServiceNow holds
    node_fields_t *local;    //  node_twin_t.local
    node_fields_t *previous; //  node_twin_t.previous
    node_fields_t *pending;  //  node_twin_t.pending
    uint64_t seq;            //  Our last SYNC seq
} s_side_t;

static void s_side_init(s_side_t *side, proto_role_t role, const node_fields_t *agreed)
{
    side->role = role;
    side->instance = node_fields_dup(agreed);
    side->local = node_fields_dup(agreed);
    side->previous = node_fields_dup(agreed);
    side->pending = node_fields_new();
    side->seq = 10;
}

static void s_side_clear(s_side_t *side)
{
    node_fields_destroy(&side->instance);
    node_fields_destroy(&side->local);
    node_fields_destroy(&side->previous);
    node_fields_destroy(&side->pending);
}

//  The engine's poll: returns the replica to send (owned) or NULL when the
//  instance holds what we know (loop prevention).
static node_fields_t *s_poll(s_side_t *side)
{
    if (node_fields_equal(side->instance, side->local))
        return NULL;
    node_fields_t *replica = node_fields_dup(side->instance);
    side->seq++;
    assert_int_equal(node_replica_pending_add(side->pending, side->local, replica, side->seq), 0);
    node_fields_destroy(&side->local);
    side->local = node_fields_dup(replica);
    return replica;
}

//  The engine's handling of a RECEIPT for our latest SYNC.
static void s_ack(s_side_t *side)
{
    assert_int_equal(
        node_replica_pending_ack(side->pending, side->seq, side->previous, side->local), 0);
}

//  A SYNC that changes no field (a human added a comment): the replica of
//  what the instance holds, with a new seq and nothing pending.
static node_fields_t *s_comment_only(s_side_t *side)
{
    side->seq++;
    return node_fields_dup(side->instance);
}

//  The engine's apply of an incoming replica (then a RECEIPT for theirs).
static void s_receive(s_side_t *side, const node_fields_t *replica)
{
    node_fields_t *plan =
        node_replica_plan(replica, side->previous, side->local, side->pending, side->role);
    assert_non_null(plan);
    s_apply(side->instance, plan);
    s_apply(side->local, plan);
    node_fields_destroy(&side->previous);
    side->previous = node_fields_dup(replica);
    node_fields_destroy(&plan);
}

static void test_concurrent_changes_converge_without_ping_pong(void **state)
{
    (void)state;
    node_fields_t *agreed = s_set("short_description=Printer", "description=d", "urgency=3",
                                  "impact=3", "state=1", NULL);
    s_side_t pub, priv;
    s_side_init(&pub, PROTO_ROLE_PUBLIC, agreed);
    s_side_init(&priv, PROTO_ROLE_PRIVATE, agreed);
    //  Same poll interval: both change short_description (a conflict), the
    //  public side also impact, the private side urgency.
    node_fields_set(pub.instance, "short_description", "Printer on fire (public)");
    node_fields_set(pub.instance, "impact", "1");
    node_fields_set(priv.instance, "short_description", "Printer jammed (private)");
    node_fields_set(priv.instance, "urgency", "1");
    node_fields_t *from_pub = s_poll(&pub);
    node_fields_t *from_priv = s_poll(&priv);
    assert_non_null(from_pub);
    assert_non_null(from_priv);
    //  The SYNCs cross: each arrives while the receiver's own is pending.
    s_receive(&pub, from_priv);
    s_receive(&priv, from_pub);
    //  RECEIPTs follow in order.
    s_ack(&pub);
    s_ack(&priv);
    assert_int_equal(node_fields_size(pub.pending), 0);
    //  Both converge: the public side won the conflict, each kept the
    //  other's non-conflicting change.
    assert_true(node_fields_equal(pub.instance, priv.instance));
    assert_string_equal(node_fields_get(pub.instance, "short_description"),
                        "Printer on fire (public)");
    assert_string_equal(node_fields_get(pub.instance, "urgency"), "1");
    assert_string_equal(node_fields_get(pub.instance, "impact"), "1");
    //  And go quiet: the next polls send nothing.
    assert_null(s_poll(&pub));
    assert_null(s_poll(&priv));
    node_fields_destroy(&from_pub);
    node_fields_destroy(&from_priv);
    s_side_clear(&pub);
    s_side_clear(&priv);
    node_fields_destroy(&agreed);
}

static void test_crossing_with_two_pending_syncs(void **state)
{
    (void)state;
    //  The public side sends two SYNCs (impact, then short_description)
    //  while one private SYNC (impact too) crosses both.
    node_fields_t *agreed = s_set("short_description=a", "urgency=3", "impact=3", "state=1", NULL);
    s_side_t pub, priv;
    s_side_init(&pub, PROTO_ROLE_PUBLIC, agreed);
    s_side_init(&priv, PROTO_ROLE_PRIVATE, agreed);
    node_fields_set(pub.instance, "impact", "2");
    node_fields_t *p1 = s_poll(&pub);
    node_fields_set(pub.instance, "short_description", "b");
    node_fields_t *p2 = s_poll(&pub);
    node_fields_set(priv.instance, "impact", "1");
    node_fields_set(priv.instance, "urgency", "2");
    node_fields_t *q1 = s_poll(&priv);
    s_receive(&pub, q1);
    s_receive(&priv, p1);
    s_receive(&priv, p2);
    s_ack(&pub);
    s_ack(&priv);
    assert_true(node_fields_equal(pub.instance, priv.instance));
    assert_string_equal(node_fields_get(priv.instance, "impact"), "2"); //  public wins
    assert_string_equal(node_fields_get(priv.instance, "urgency"), "2");
    assert_string_equal(node_fields_get(priv.instance, "short_description"), "b");
    assert_null(s_poll(&pub));
    assert_null(s_poll(&priv));
    node_fields_destroy(&p1);
    node_fields_destroy(&p2);
    node_fields_destroy(&q1);
    s_side_clear(&pub);
    s_side_clear(&priv);
    node_fields_destroy(&agreed);
}

//  Regression (chaos run): an incident created on the private side; the
//  public side later sends a comment-only SYNC that crosses a private field
//  change. The private node has never received a replica, so without the
//  RECEIPT of its create recorded in previous, the public SYNC's unchanged
//  urgency read as a public change and "public wins" overwrote the edit
//  while the public side took it: the two sides diverged.
static void test_crossing_comment_sync_after_private_create(void **state)
{
    (void)state;
    node_fields_t *empty = node_fields_new();
    s_side_t pub, priv;
    s_side_init(&pub, PROTO_ROLE_PUBLIC, empty);
    s_side_init(&priv, PROTO_ROLE_PRIVATE, empty);
    node_fields_set(priv.instance, "short_description", "VPN down");
    node_fields_set(priv.instance, "urgency", "3");
    node_fields_t *create = s_poll(&priv);
    s_receive(&pub, create); //  the twin is created with every field
    s_ack(&priv);            //  RECEIPT of the create
    node_fields_set(priv.instance, "urgency", "1");
    node_fields_t *p1 = s_poll(&priv);
    node_fields_t *q1 = s_comment_only(&pub);
    s_receive(&pub, p1);
    s_receive(&priv, q1);
    s_ack(&priv);
    assert_string_equal(node_fields_get(priv.instance, "urgency"), "1");
    assert_true(node_fields_equal(pub.instance, priv.instance));
    assert_null(s_poll(&pub));
    assert_null(s_poll(&priv));
    node_fields_destroy(&create);
    node_fields_destroy(&p1);
    node_fields_destroy(&q1);
    s_side_clear(&pub);
    s_side_clear(&priv);
    node_fields_destroy(&empty);
}

//  Regression (chaos run): the same crossing after an earlier private change
//  was applied by the public side. previous must learn from that RECEIPT that
//  the public side holds the private value, or the public side's next
//  comment-only SYNC (carrying it) reads as a change and wins.
static void test_crossing_comment_sync_after_acked_change(void **state)
{
    (void)state;
    node_fields_t *agreed = s_set("short_description=a", "urgency=3", "state=1", NULL);
    s_side_t pub, priv;
    s_side_init(&pub, PROTO_ROLE_PUBLIC, agreed);
    s_side_init(&priv, PROTO_ROLE_PRIVATE, agreed);
    node_fields_set(priv.instance, "short_description", "b");
    node_fields_t *p1 = s_poll(&priv);
    s_receive(&pub, p1);
    s_ack(&priv);
    node_fields_set(priv.instance, "short_description", "c");
    node_fields_t *p2 = s_poll(&priv);
    node_fields_t *q1 = s_comment_only(&pub);
    s_receive(&pub, p2);
    s_receive(&priv, q1);
    s_ack(&priv);
    assert_string_equal(node_fields_get(pub.instance, "short_description"), "c");
    assert_true(node_fields_equal(pub.instance, priv.instance));
    assert_null(s_poll(&pub));
    assert_null(s_poll(&priv));
    node_fields_destroy(&p1);
    node_fields_destroy(&p2);
    node_fields_destroy(&q1);
    s_side_clear(&pub);
    s_side_clear(&priv);
    node_fields_destroy(&agreed);
}

static void test_sequential_change_after_ack_is_not_overruled(void **state)
{
    (void)state;
    //  The public side changed a field and the private side applied it
    //  (RECEIPT arrived); a later private change to that field is a new
    //  change, not a conflict: the public side takes it.
    node_fields_t *agreed = s_set("urgency=3", "state=1", NULL);
    s_side_t pub, priv;
    s_side_init(&pub, PROTO_ROLE_PUBLIC, agreed);
    s_side_init(&priv, PROTO_ROLE_PRIVATE, agreed);
    node_fields_set(pub.instance, "urgency", "2");
    node_fields_t *p1 = s_poll(&pub);
    s_receive(&priv, p1);
    s_ack(&pub);                //  RECEIPT
    assert_null(s_poll(&priv)); //  what it wrote is not echoed
    node_fields_set(priv.instance, "urgency", "1");
    node_fields_t *q1 = s_poll(&priv);
    s_receive(&pub, q1);
    assert_string_equal(node_fields_get(pub.instance, "urgency"), "1");
    assert_true(node_fields_equal(pub.instance, priv.instance));
    assert_null(s_poll(&pub));
    node_fields_destroy(&p1);
    node_fields_destroy(&q1);
    s_side_clear(&pub);
    s_side_clear(&priv);
    node_fields_destroy(&agreed);
}

static void test_pending_add_and_ack(void **state)
{
    (void)state;
    node_fields_t *pending = node_fields_new();
    node_fields_t *before = s_set("state=6", "close_code=x", "urgency=1", NULL);
    node_fields_t *after = s_set("state=2", "urgency=1", NULL);
    assert_int_equal(node_replica_pending_add(pending, before, after, 5), 0);
    assert_string_equal(node_fields_get(pending, "state"), "5");
    assert_string_equal(node_fields_get(pending, "close_code"), "5"); //  stopped travelling
    assert_null(node_fields_get(pending, "urgency"));
    node_fields_set(after, "urgency", "2");
    assert_int_equal(node_replica_pending_add(pending, before, after, 9), 0);
    assert_int_equal(node_replica_pending_ack(pending, 5, NULL, NULL), 0);
    assert_int_equal(node_fields_size(pending), 3); //  seq 9 rewrote all three
    assert_int_equal(node_replica_pending_ack(pending, 8, NULL, NULL), 0);
    assert_int_equal(node_fields_size(pending), 3);
    assert_int_equal(node_replica_pending_ack(pending, 9, NULL, NULL), 0);
    assert_int_equal(node_fields_size(pending), 0);
    node_fields_destroy(&pending);
    node_fields_destroy(&before);
    node_fields_destroy(&after);
}

static void test_texts_and_bodies(void **state)
{
    (void)state;
    char *text = node_replica_comment_text("acme", "alice", "Rebooted the server");
    assert_string_equal(text, "[acme] alice wrote:\nRebooted the server");
    free(text);
    char *display = node_replica_correlation_display("INC0010001", "acme");
    assert_string_equal(display, "INC0010001@acme");
    free(display);
    node_fields_t *in = s_set("short_description=A", "state=1", NULL);
    json_t *body =
        node_replica_create_body(in, "0123456789abcdef0123456789abcdef", "INC0010007", "acme");
    assert_string_equal(json_string_value(json_object_get(body, "correlation_id")),
                        "0123456789abcdef0123456789abcdef");
    assert_string_equal(json_string_value(json_object_get(body, "correlation_display")),
                        "INC0010007@acme");
    assert_string_equal(json_string_value(json_object_get(body, "short_description")), "A");
    json_decref(body);
    body = node_replica_update_body(in);
    assert_int_equal(json_object_size(body), 2);
    json_decref(body);
    node_fields_destroy(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_canonical_roundtrip),
        cmocka_unit_test(test_fields_remove_and_replace),
        cmocka_unit_test(test_extract_close_fields_only_when_closed),
        cmocka_unit_test(test_plan_first_sync_writes_everything),
        cmocka_unit_test(test_plan_writes_only_remote_changes),
        cmocka_unit_test(test_plan_resolve_brings_close_fields),
        cmocka_unit_test(test_concurrent_changes_converge_without_ping_pong),
        cmocka_unit_test(test_crossing_with_two_pending_syncs),
        cmocka_unit_test(test_crossing_comment_sync_after_private_create),
        cmocka_unit_test(test_crossing_comment_sync_after_acked_change),
        cmocka_unit_test(test_sequential_change_after_ack_is_not_overruled),
        cmocka_unit_test(test_pending_add_and_ack),
        cmocka_unit_test(test_texts_and_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
