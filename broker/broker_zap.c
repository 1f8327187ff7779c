/*  broker_zap.c: ZAP handler accepting any CURVE client (broker_zap.h).

    Request (RFC 27): version "1.0", request id, domain, address, identity,
    mechanism, then the credentials (for CURVE one frame: the 32-byte client
    public key). Reply: version, request id, status code, status text, user
    id, metadata (empty).
*/
#include "broker_zap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES   8 //  At most: 6 fixed frames and up to 2 credential frames

struct broker_zap_t {
    void *socket; //  REP bound on ZAP_ENDPOINT
};

broker_zap_t *broker_zap_new(void *ctx)
{
    broker_zap_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->socket = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!self->socket || zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(self->socket, ZAP_ENDPOINT) != 0) {
        int saved = errno;
        broker_zap_destroy(&self);
        errno = saved;
        return NULL;
    }
    return self;
}

void broker_zap_destroy(broker_zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_zap_t *self = *self_p;
    if (self->socket)
        zmq_close(self->socket);
    free(self);
    *self_p = NULL;
}

void *broker_zap_socket(broker_zap_t *self)
{
    return self->socket;
}

//  Sends one reply: version, request id, status, text, user id, metadata.
static int s_reply(broker_zap_t *self, zmq_msg_t *request_id, const char *status, const char *text,
                   const char *user_id)
{
    if (zmq_send(self->socket, "1.0", 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(self->socket, zmq_msg_data(request_id), zmq_msg_size(request_id), ZMQ_SNDMORE) <
            0 ||
        zmq_send(self->socket, status, strlen(status), ZMQ_SNDMORE) < 0 ||
        zmq_send(self->socket, text, strlen(text), ZMQ_SNDMORE) < 0 ||
        zmq_send(self->socket, user_id, strlen(user_id), ZMQ_SNDMORE) < 0 ||
        zmq_send(self->socket, "", 0, 0) < 0)
        return -1;
    return 0;
}

static bool s_frame_is(zmq_msg_t *frame, const char *text)
{
    size_t n = strlen(text);
    return zmq_msg_size(frame) == n && memcmp(zmq_msg_data(frame), text, n) == 0;
}

//  Receives one whole request (non-blocking). Returns the number of frames
//  kept in frames (extra frames are dropped), 0 when none is pending, -1 on
//  a socket failure.
static int s_recv_request(broker_zap_t *self, zmq_msg_t *frames)
{
    int count = 0;
    int more = 1;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        int flags = count == 0 ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(&frame, self->socket, flags) < 0) {
            zmq_msg_close(&frame);
            return count == 0 && errno == EAGAIN ? 0 : -1;
        }
        more = zmq_msg_more(&frame);
        if (count < ZAP_FRAMES)
            frames[count++] = frame;
        else
            zmq_msg_close(&frame);
    }
    return count;
}

int broker_zap_handle(broker_zap_t *self)
{
    int answered = 0;
    while (true) {
        zmq_msg_t frames[ZAP_FRAMES];
        int count = s_recv_request(self, frames);
        if (count <= 0)
            return count < 0 ? -1 : answered;
        int rc;
        //  frames: 0 version, 1 request id, 2 domain, 3 address, 4 identity,
        //  5 mechanism, 6 client key
        bool curve = count == 7 && s_frame_is(&frames[0], "1.0") &&
                     s_frame_is(&frames[5], "CURVE") && zmq_msg_size(&frames[6]) == 32;
        if (curve) {
            char user_id[41];
            zmq_z85_encode(user_id, zmq_msg_data(&frames[6]), 32);
            rc = s_reply(self, &frames[1], "200", "OK", user_id);
        } else {
            zmq_msg_t empty;
            zmq_msg_init(&empty);
            rc = s_reply(self, count > 1 ? &frames[1] : &empty, "400", "CURVE only", "");
            zmq_msg_close(&empty);
        }
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
        if (rc != 0)
            return -1;
        answered++;
    }
}
