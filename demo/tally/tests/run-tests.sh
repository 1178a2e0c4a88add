#!/bin/sh
# tally's own tests: run as `make check` (and by dh_auto_test during a package build).
set -eu
TALLY=${1:-./tally}
fail=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: expected '$2', got '$3'"; fail=1; fi
}
export TALLY_CONF=/nonexistent
check "counts all by default" "2 3 14" "$(printf 'one two\nthree\n' | $TALLY)"
check "lines" "2" "$(printf 'a\nb\n' | $TALLY -l)"
check "words" "3" "$(printf ' a  b\tc \n' | $TALLY -w)"
check "bytes" "4" "$(printf 'abc\n' | $TALLY -c)"
conf=$(mktemp)
echo "mode = words  # comment" > "$conf"
check "config sets the default" "2" "$(echo one two | TALLY_CONF=$conf $TALLY)"
check "option beats config" "1" "$(echo one two | TALLY_CONF=$conf $TALLY -l)"
rm -f "$conf"
if $TALLY -x </dev/null >/dev/null 2>&1; then echo "not ok - unknown option fails"; fail=1; else echo "ok - unknown option fails"; fi
exit $fail
