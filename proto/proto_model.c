/*  proto_model.c: finds a message type's table among the modules that own
    them (see proto_model.h).
*/
#include <stddef.h>

#include "proto_model.h"

const proto_schema_t *proto_model_find(unsigned type)
{
    const proto_dialect_t *dialects[] = {proto_msg_model(), proto_sync_model(),
                                         proto_invite_model()};
    for (size_t i = 0; i < sizeof(dialects) / sizeof(dialects[0]); i++) {
        const proto_schema_t *schema = proto_codec_find(dialects[i], type);
        if (schema)
            return schema;
    }
    return NULL;
}
