/*  ts_config.h: the one configuration engine of the three programs.

    A program writes its keys down once, in a table of ts_config_key_t:
    section and key, the kind of value, its default, its range, one line of
    help, and where the value goes (an offset into the program's own
    configuration struct, or a setter). Everything else comes from the table:

      ts_config_new         checks the table itself (every default parses)
      ts_config_load        reads an INI file (ts_ini.h); an unknown section or
                            key, a number that does not parse or is out of its
                            range, is refused as "FILE:LINE: section.key: why"
      ts_config_set         a value from the command line (ts_cli.h), checked
                            the same way and named "--section.key" in errors;
                            it wins over the file
      ts_config_apply       defaults, then the file, then the command line,
                            into the program's struct
      ts_config_clear       frees what ts_config_apply stored
      ts_config_print_help  one line per key: name, help, default, range

    Keys whose section is NULL are command-line options (--wait, --json): a
    command's options use the same table type and the same checks, and a file
    can never set them.

    Numbers are parsed strictly (strtoll and an end check): "", "abc", "12x",
    " 5" and values out of range are refused, never read as 0 or clipped.
*/
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    TS_CONFIG_STRING,      //  char *: any text
    TS_CONFIG_PATH,        //  char *: a file or directory name (no control characters)
    TS_CONFIG_INT,         //  long: a whole number in [min, max]
    TS_CONFIG_BOOL,        //  bool: true or false
    TS_CONFIG_DURATION_MS, //  long, milliseconds: a whole number, optionally with ms, s, min, h
    TS_CONFIG_BYTES,       //  long, bytes: a whole number, optionally with KiB, MiB, GiB
    TS_CONFIG_ENUM,        //  char *: one of choices
    TS_CONFIG_SWITCH,      //  bool: a command-line option without a value, true when given
    TS_CONFIG_CUSTOM       //  the key's set function parses and stores
} ts_config_kind_t;

typedef struct {
    const char *section;   //  INI section; NULL: a command-line option, never in a file
    const char *key;       //  Key; the flag is --section.key (an option's: --key)
    ts_config_kind_t kind; //  What the value is
    const char *fallback;  //  Default as the file would write it; NULL: none ("" or 0)
    long min, max;         //  Range of a number kind; both 0: any
    const char *choices;   //  TS_CONFIG_ENUM: the values, "basic|oauth"
    size_t offset;         //  Where the value goes in the caller's struct (not CUSTOM)
    //  Optional extra check of a value of any kind but SWITCH: 0, or -1 with
    //  the reason (without the key's name) in err.
    int (*check)(const char *value, char *err, size_t errlen);
    //  TS_CONFIG_CUSTOM: parses value into the caller's struct target,
    //  replacing what an earlier call stored; with target NULL it only checks.
    //  Returns 0, or -1 with the reason (without the key's name) in err.
    int (*set)(void *target, const char *value, char *err, size_t errlen);
    void (*clear)(void *target); //  TS_CONFIG_CUSTOM: frees what set stored
    const char *arg;             //  The value's name in help ("FILE"); NULL: from the kind
    const char *help;            //  One line for --help
    unsigned scope;              //  Programs whose help shows the key (bits; 0: all)
    char letter;                 //  An option's short form (-h); 0: none
} ts_config_key_t;

//  A table is an array of keys ended by an entry whose key is NULL.

typedef struct ts_config_t ts_config_t;

//  Makes the values of one table, empty. keys must outlive the result.
//  Checks the table (each key named once, every default valid for its kind
//  and range, an ENUM with choices, a CUSTOM with set and clear, SWITCH only
//  as an option). Returns the object owned by the caller, or NULL with the
//  first problem (naming the key) in err.
ts_config_t *ts_config_new(const ts_config_key_t *keys, char *err, size_t errlen);

//  Frees *self_p and sets it to NULL; accepts NULL or a pointer to NULL.
void ts_config_destroy(ts_config_t **self_p);

//  The table self was made with.
const ts_config_key_t *ts_config_keys(const ts_config_t *self);

//  The key of the table named section/key (section NULL: an option), or NULL.
const ts_config_key_t *ts_config_find(const ts_config_t *self, const char *section,
                                      const char *key);

//  Reads the INI file path (replacing a file read before) and checks every
//  entry against the table. Returns 0, or -1 with one line in err that
//  starts with the file: "PATH: cannot open ...", "PATH:LINE: unknown key
//  broker.colour (...)", "PATH:LINE: broker.credit: 'x' is not a whole
//  number". Values given with ts_config_set keep winning.
int ts_config_load(ts_config_t *self, const char *path, char *err, size_t errlen);

//  The file ts_config_load read, or NULL.
const char *ts_config_path(const ts_config_t *self);

//  Sets key (a key of self's table) from the command line; value is NULL for
//  a SWITCH. Checks the value as ts_config_load would. Returns 0, or -1 with
//  one line in err naming the flag ("--broker.credit: 'x' is not a whole
//  number"), or when out of memory.
int ts_config_set(ts_config_t *self, const ts_config_key_t *key, const char *value, char *err,
                  size_t errlen);

//  True when key was given on the command line (ts_config_set).
bool ts_config_given(const ts_config_t *self, const ts_config_key_t *key);

//  Stores every key into the caller's struct target: the command line's
//  value, else the file's, else the default; a string without any is "", a
//  number 0, a bool false. Strings are copies owned by target (free them
//  with ts_config_clear; values stored before are freed first). Returns 0,
//  or -1 with one line naming the key in err (out of memory, or a CUSTOM
//  set that refuses a value its check passed).
int ts_config_apply(const ts_config_t *self, void *target, char *err, size_t errlen);

//  Frees what ts_config_apply stored in target for the keys of table keys
//  and sets those strings to NULL; safe on a zeroed struct and twice.
void ts_config_clear(const ts_config_key_t *keys, void *target);

//  Parses text as a number of kind (TS_CONFIG_INT, _DURATION_MS or _BYTES)
//  within [min, max] (both 0: any long) into *out. Returns 0, or -1 with the
//  reason in err ("'12x' is not a whole number", "99999 is out of range
//  (0 to 65535)").
int ts_config_parse_number(ts_config_kind_t kind, const char *text, long min, long max, long *out,
                           char *err, size_t errlen);

//  Writes key's name as a flag without the dashes ("broker.credit",
//  "wait") into buf. Returns buf.
char *ts_config_flag_name(const ts_config_key_t *key, char *buf, size_t size);

//  Prints one help line for key: the name ("  broker.credit" for a key of
//  a section, "  --wait S" for an option), its help, then its choices,
//  default and range in parentheses.
void ts_config_print_key(const ts_config_key_t *key, FILE *out);

//  Prints ts_config_print_key for every key of the table whose scope is 0 or
//  shares a bit with scope, options (section NULL) left out.
void ts_config_print_help(const ts_config_key_t *keys, unsigned scope, FILE *out);

#endif
