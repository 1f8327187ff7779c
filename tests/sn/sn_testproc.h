/*  sn_testproc.h: child processes for the ServiceNow client's tests (the
    emulator, an openssl TLS server): spawn with stderr to a file, stop and
    reap. Failures fail the running cmocka test. */

#ifndef SN_TESTPROC_H
#define SN_TESTPROC_H

#include <sys/types.h>

//  Removes proxy settings from the environment: loopback traffic of the tests
//  must never go through a proxy.
void sn_testproc_no_proxy(void);

//  Spawns argv (argv[0] searched in PATH) with stderr appended to stderr_path
//  (NULL: inherited); returns its pid.
pid_t sn_testproc_spawn(const char *const *argv, const char *stderr_path);

//  Runs argv to completion; fails the test unless it exits with status 0.
void sn_testproc_run(const char *const *argv, const char *stderr_path);

//  True while the process has not exited (reaps it when it has).
int sn_testproc_alive(pid_t pid);

//  Sends SIGTERM and reaps; accepts pid <= 0.
void sn_testproc_stop(pid_t pid);

//  Sleeps ms milliseconds.
void sn_testproc_sleep_ms(long ms);

#endif
