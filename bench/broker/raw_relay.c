/*  raw_relay.c: the benchmark's upper bound, a ZeroMQ relay that stores nothing.

    One ROUTER socket. A consumer DEALER says 'H' (hello) and gets 'W'; from then
    on every 'P' (publish) frame a publisher DEALER sends is forwarded to that
    consumer as 'D' (deliver), and every 'C' (consumed) the consumer answers is
    forwarded to the publisher as 'S' (stored). So the publisher's acknowledgement
    means "the consumer has it", the same end-to-end chain the durable broker
    runs, minus the disk. One consumer and one publisher at a time (the last one
    heard from); frames for an absent consumer are dropped.

    Frame after the routing frame: type (1 byte) + queue (u32) + seq (u64) [+ payload].

      raw_relay --bind tcp://127.0.0.1:PORT
*/
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#define RAW_HEADER 13 //  type + queue + seq

typedef struct {
    char id[256];   //  routing id
    size_t id_size; //  bytes in id; 0 when unknown
} s_peer_t;

//  Sends routing frame to + the bytes of body (with its first byte replaced by
//  type) without copying the body. Returns 0, or -1 (the frame is dropped).
static int s_forward(void *router, const s_peer_t *to, zmq_msg_t *body, char type)
{
    if (to->id_size == 0)
        return -1;
    ((char *)zmq_msg_data(body))[0] = type;
    if (zmq_send(router, to->id, to->id_size, ZMQ_SNDMORE) < 0)
        return -1;
    return zmq_msg_send(body, router, 0) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--bind") != 0) {
        fprintf(stderr, "usage: raw_relay --bind ENDPOINT\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_RCVHWM, &zero, sizeof zero);
    if (zmq_bind(router, argv[2]) != 0) {
        fprintf(stderr, "raw_relay: cannot bind %s: %s\n", argv[2], zmq_strerror(zmq_errno()));
        return 1;
    }
    s_peer_t publisher = {.id_size = 0}, consumer = {.id_size = 0};
    unsigned long long dropped = 0;
    while (true) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, router, 0) < 0 || !zmq_msg_more(&id) ||
            zmq_msg_recv(&body, router, 0) < 0 || zmq_msg_size(&id) > sizeof publisher.id) {
            zmq_msg_close(&id);
            zmq_msg_close(&body);
            if (zmq_errno() == EINTR || zmq_errno() == ETERM)
                break;
            continue;
        }
        const char *data = zmq_msg_data(&body);
        char type = zmq_msg_size(&body) > 0 ? data[0] : '?';
        s_peer_t *from = type == 'P' ? &publisher : &consumer;
        if (type == 'P' || type == 'H' || type == 'C') {
            memcpy(from->id, zmq_msg_data(&id), zmq_msg_size(&id));
            from->id_size = zmq_msg_size(&id);
        }
        int rc = -1;
        if (type == 'H')
            rc = s_forward(router, &consumer, &body, 'W');
        else if (type == 'P' && zmq_msg_size(&body) >= RAW_HEADER)
            rc = s_forward(router, &consumer, &body, 'D');
        else if (type == 'C' && zmq_msg_size(&body) >= RAW_HEADER)
            rc = s_forward(router, &publisher, &body, 'S');
        if (rc != 0 && ++dropped % 1000 == 1)
            fprintf(stderr, "raw_relay: dropped %llu frames\n", dropped);
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
    zmq_close(router);
    zmq_ctx_term(ctx);
    return 0;
}
