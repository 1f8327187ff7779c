# check_include.cmake: compiles two one-line C files with the include path of
# one library: ALLOWED (a header the library may use) must compile, FORBIDDEN (a
# header against the arrows of docs/architecture.md §3) must not. The first is
# the control that keeps the check honest: a broken include path would make
# every forbidden include fail too.
#   cmake -DCC=cc -DINCLUDES="dir;dir" -DALLOWED=h -DFORBIDDEN=h -DWORK=dir -P check_include.cmake
file(MAKE_DIRECTORY ${WORK})
set(flags)
foreach(dir ${INCLUDES})
  list(APPEND flags "-I${dir}")
endforeach()
foreach(kind ALLOWED FORBIDDEN)
  set(src ${WORK}/${kind}.c)
  file(WRITE ${src} "#include \"${${kind}}\"\nint s_layout_probe;\n")
  execute_process(COMMAND ${CC} -std=c11 -D_GNU_SOURCE -fsyntax-only ${flags} ${src}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  set(${kind}_rc ${rc})
  set(${kind}_out "${out}")
endforeach()
if(NOT ALLOWED_rc EQUAL 0)
  message(FATAL_ERROR "control failed: ${ALLOWED} does not compile with this include path:\n${ALLOWED_out}")
endif()
if(FORBIDDEN_rc EQUAL 0)
  message(FATAL_ERROR "arrow not enforced: ${FORBIDDEN} compiles with this include path (${INCLUDES})")
endif()
string(REPLACE "." "\\." forbidden_re "${FORBIDDEN}")
# gcc: "x.h: No such file or directory"; clang: "'x.h' file not found"
if(NOT FORBIDDEN_out MATCHES "${forbidden_re}: No such file" AND
   NOT FORBIDDEN_out MATCHES "'${forbidden_re}' file not found")
  message(FATAL_ERROR "${FORBIDDEN} failed for another reason than a missing header:\n${FORBIDDEN_out}")
endif()
message(STATUS "ok: ${ALLOWED} visible, ${FORBIDDEN} not")
