#!/usr/bin/env bash
# Makes sure the packages the build and tests need are present. As root it
# installs what is missing with apt-get; otherwise it prints the command.
# Usage: scripts/deps.sh [optional-group...]   (groups: fuzz spin plot)
set -u
need=(gcc make liburcu-dev libxxhash-dev)   # always
declare -A check=(
	[gcc]="command -v gcc"
	[make]="command -v make"
	[liburcu-dev]="test -e /usr/include/urcu/urcu-bp.h -o -e /usr/include/$(gcc -print-multiarch 2>/dev/null)/urcu/urcu-bp.h"
	[libxxhash-dev]="test -e /usr/include/xxhash.h"
	[clang]="command -v clang"
	[libclang-rt-14-dev]="test -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a"
	[spin]="command -v spin"
	[gnuplot-nox]="command -v gnuplot"
)
for g in "$@"; do
	case "$g" in
	fuzz) need+=(clang libclang-rt-14-dev) ;;
	spin) need+=(spin) ;;
	plot) need+=(gnuplot-nox) ;;
	*) echo "deps.sh: unknown group '$g'" >&2; exit 2 ;;
	esac
done
missing=()
for p in "${need[@]}"; do
	bash -c "${check[$p]}" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
	echo "deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null || {
		echo "deps.sh: apt-get install ${missing[*]} failed" >&2; exit 1; }
else
	echo "deps.sh: missing packages: ${missing[*]}" >&2
	echo "  run: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
