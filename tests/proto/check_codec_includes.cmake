# Fails when the generic codec (proto/proto_codec.h, proto/proto_codec.c)
# includes a domain header: the domain modules include the codec, never the
# other way round (no include cycle; the codec knows no message type).
#   cmake -DPROTO_DIR=<proto/> -P this
foreach(file proto_codec.h proto_codec.c)
  file(STRINGS ${PROTO_DIR}/${file} includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line ${includes})
    if(line MATCHES "proto_(msg|sync|invite|seal|model)\\.h|proto\\.h\"")
      message(FATAL_ERROR "${file} includes a domain header (${line}): the codec must know no "
                          "message; describe the concept as a field kind in its table instead")
    endif()
  endforeach()
endforeach()
