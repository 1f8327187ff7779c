# Fails when the generated sections of docs/protocol.md differ from what
# proto_doc prints from the protocol's tables in proto/ (the one model).
# Run by CTest as protocol_doc_in_sync:
#   cmake -DPROTO_DOC=<proto_doc> -DDOC=<docs/protocol.md> -DOUT=<scratch file> -P this
execute_process(COMMAND ${PROTO_DOC} ${DOC} ${OUT} RESULT_VARIABLE rc ERROR_VARIABLE why)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "proto_doc could not bring ${DOC} up to date: ${why}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${DOC} ${OUT} RESULT_VARIABLE differ)
if(differ)
  execute_process(COMMAND diff -u ${DOC} ${OUT} OUTPUT_VARIABLE diff ERROR_VARIABLE diff)
  message("${diff}")
  message(FATAL_ERROR
    "docs/protocol.md differs from the protocol's tables in proto/ (diff above: - is the "
    "document, + what the tables say). Do not edit a generated section by hand: change the "
    "table in proto/ and run\n    cmake --build build --target protocol-doc\n"
    "to rewrite the generated sections of docs/protocol.md.")
endif()
