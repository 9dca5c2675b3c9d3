#!/bin/sh
# Runs C test programs one by one (cmocka), prints each one's output, and a
# closing "N passed, N failed" line. Exits non-zero if any failed.
passed=0
failed=0
failed_names=""
for t in "$@"; do
    echo "== $t"
    if "$t"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names="$failed_names $t"
    fi
done
echo "C test programs: $passed passed, $failed failed"
[ -n "$failed_names" ] && echo "failed:$failed_names"
[ "$failed" -eq 0 ]
