#!/usr/bin/env bash
# Runs every test binary given on the command line, passes their TAP
# through, and closes with the aggregate "N passed, N failed" line.
set -u
passed=0 failed=0 skipped=0 crashed=0
for t in "$@"; do
	name=$(basename "$t")
	echo "# ---- $name"
	out=$(mktemp)
	"$t" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	p=$(grep -E '^ok [0-9]+' "$out" | grep -vc '# SKIP')
	s=$(grep -cE '^ok [0-9]+ .*# SKIP' "$out")
	f=$(grep -cE '^not ok [0-9]+' "$out")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "not ok - $name exited with status $rc"
		f=1
		crashed=$((crashed + 1))
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	rm -f "$out"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
