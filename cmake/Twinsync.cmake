# Shared build rules: compiler flags, dependency lookup with the Debian package
# to install when something is missing, and the helpers that add unit tests and
# fuzz targets the same way in every folder.

add_compile_options(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
                    -Wformat=2 -Wvla -D_GNU_SOURCE)
if(TWINSYNC_WERROR)
  add_compile_options(-Werror)
endif()
# TWINSYNC_SANITIZE: "address" builds with ASan + UBSan (ON, from when this was
# a boolean, means the same, so old build commands keep working); "thread"
# builds with TSan, which cannot be combined with ASan; empty or OFF: none.
string(TOLOWER "${TWINSYNC_SANITIZE}" twinsync_sanitize)
if(twinsync_sanitize MATCHES "^(on|yes|true|1|address)$")
  set(TWINSYNC_SANITIZER address)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(twinsync_sanitize STREQUAL "thread")
  set(TWINSYNC_SANITIZER thread)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(twinsync_sanitize MATCHES "^(|off|no|false|0|none)$")
  set(TWINSYNC_SANITIZER "")
else()
  message(FATAL_ERROR "TWINSYNC_SANITIZE=${TWINSYNC_SANITIZE}: use address, thread or OFF")
endif()
if(TWINSYNC_SANITIZER AND TWINSYNC_FUZZ AND NOT TWINSYNC_SANITIZER STREQUAL "address")
  message(FATAL_ERROR "TWINSYNC_FUZZ goes with TWINSYNC_SANITIZE=address (or none), not ${TWINSYNC_SANITIZE}")
endif()
if(TWINSYNC_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TWINSYNC_FUZZ needs clang: configure with CC=clang")
  endif()
  # Coverage instrumentation for every library in this build, so that the fuzz
  # targets that link them are guided (libFuzzer mutates blind otherwise); the
  # other programs of the build run as usual.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config' (or run scripts/setup)")
endif()

# twinsync_require(VAR MODULE DEBIAN_PACKAGE): imported target PkgConfig::VAR, or a
# configure error that names the package to install.
function(twinsync_require var module package)
  pkg_check_modules(${var} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "missing dependency '${module}': install the Debian package '${package}' "
                        "(apt-get install ${package}, or run scripts/setup)")
  endif()
endfunction()

twinsync_require(ZMQ libzmq libzmq3-dev)
twinsync_require(MSGPACK msgpack libmsgpack-dev)
twinsync_require(CRYPTO libcrypto libssl-dev)
twinsync_require(CURL libcurl libcurl4-openssl-dev)
twinsync_require(SQLITE sqlite3 libsqlite3-dev)
twinsync_require(JANSSON jansson libjansson-dev)
twinsync_require(MHD libmicrohttpd libmicrohttpd-dev)
twinsync_require(CMOCKA cmocka libcmocka-dev)

find_package(Python3 COMPONENTS Interpreter)
find_package(Threads REQUIRED)

# twinsync_add_unit_test(NAME SOURCES src... LIBS lib...): a cmocka test run by
# CTest with the label "unit" (the label scripts/test runs under the sanitizers).
function(twinsync_add_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "unit;${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()

# twinsync_add_fuzzer(NAME SOURCE src LIBS lib... CORPUS dir SECONDS n): a libFuzzer
# target, built only with TWINSYNC_FUZZ, run by CTest (label "fuzz") for a bounded
# time over its seed corpus; a crash fails the test.
set(TWINSYNC_FUZZ_SECONDS 60 CACHE STRING "Seconds each fuzz test runs")
function(twinsync_add_fuzzer name)
  cmake_parse_arguments(F "" "SOURCE;CORPUS" "LIBS" ${ARGN})
  if(NOT TWINSYNC_FUZZ)
    return()
  endif()
  add_executable(${name} ${F_SOURCE})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  set(work ${CMAKE_CURRENT_BINARY_DIR}/${name}-corpus)
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
                   $<TARGET_FILE:${name}> -max_total_time=${TWINSYNC_FUZZ_SECONDS}
                   -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${work} ${F_CORPUS})
  set_tests_properties(${name} PROPERTIES LABELS "fuzz"
                       TIMEOUT 600 FIXTURES_REQUIRED ${name}_dir)
  add_test(NAME ${name}_mkdir COMMAND ${CMAKE_COMMAND} -E make_directory ${work})
  set_tests_properties(${name}_mkdir PROPERTIES LABELS "fuzz" FIXTURES_SETUP ${name}_dir)
endfunction()
