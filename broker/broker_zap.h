/*  broker_zap.h: the ZAP handler (RFC 27) of the broker's CURVE server.

    Every CURVE client whose handshake succeeds is accepted here, with its
    Z85 public key as ZAP User-Id; the broker then reads that key from each
    message (zmq_msg_gets "User-Id") and decides what the key may do (public
    node from the config, private node bound by JOIN, or a stranger that may
    only HELLO and JOIN). Any mechanism but CURVE is refused.

    The handler is a REP socket on inproc://zeromq.zap.01 in the broker's
    context, polled by the main loop: it must be created before the ROUTER
    binds.
*/
#ifndef BROKER_ZAP_H
#define BROKER_ZAP_H

typedef struct broker_zap_t broker_zap_t;

//  Binds the handler in ctx. Returns it, or NULL with errno set.
broker_zap_t *broker_zap_new(void *ctx);

//  Closes the socket and sets *self_p to NULL; accepts NULL.
void broker_zap_destroy(broker_zap_t **self_p);

//  The socket, to put in a zmq_poll set (ZMQ_POLLIN).
void *broker_zap_socket(broker_zap_t *self);

//  Answers every pending request without blocking. Returns the number of
//  requests answered, or -1 on a socket failure (errno set).
int broker_zap_handle(broker_zap_t *self);

#endif
