#!/usr/bin/env bash
# Estimates the cycles of one free+malloc pair on hakmem's hit paths with llvm-mca (Intel and AMD core models), from a built library's own machine code.
#
#   bash bench/mca.sh [LIB.so] [SIZE]     (default build/libhakmem.so, 32)
#   FREE=0x1d100 MALLOC=0x1ed40 bash bench/mca.sh libtcmalloc_minimal.so.4   (a stripped peer:
#       the entry addresses, from `nm -D`, of its free and malloc)
#
# The loop it models is bench_pair's LIFO pattern: free(p); p = malloc(SIZE);
# *(char *)p = 1. Both hit paths are cut from `objdump -d` of the library,
# from the entry to the first ret (branches to the slow paths become jumps to
# the end, taken never); the two calls are laid end to end with the loop's
# own moves. -noalias=false makes llvm-mca treat every load as possibly
# depending on every earlier store: the default (no aliasing) hides exactly
# the chain from free's stores to the next malloc's loads. llvm-mca models no
# cache misses and no memory renaming, so its figures rank variants of the
# same code; they are not wall time (bench/run.py has that).
set -eu
lib=${1:-build/libhakmem.so}
size=${2:-32}
mca=$(command -v llvm-mca-14 || command -v llvm-mca || true)
if [ -z "$mca" ]; then
    echo "bench/mca.sh: needs llvm-mca (Debian: apt-get install llvm-14)" >&2
    exit 2
fi

# The hit path of FUNC (a symbol, or an address in a stripped library): its
# instructions up to the first ret, in AT&T syntax llvm-mca reads
# (objdump's addresses, comments and symbol names removed).
hit_path() {
    local range=()
    if [[ $1 == 0x* ]]; then
        range=(--start-address="$1" --stop-address=$(($1 + 4096)))
    fi
    objdump -d --no-show-raw-insn "${range[@]}" "$lib" | awk -v f="<$1>:" -v addr="$1" '
        (addr ~ /^0x/ && / <[^>]*>:$/ && !on) || $2 == f { on = 1; next }
        on && /^$/ { exit }
        on {
            sub(/^ *[0-9a-f]+:\t/, "")
            sub(/ *#.*/, "")
            if ($1 == "ret") exit
            if ($1 ~ /^j/ && NF == 3) { print "\t" $1 " .Lout"; next }  # a branch to a slow path
            print "\t" $0
        }'
}

free_fn=${FREE:-free}
[ -n "${FREE:-}" ] || objdump -d "$lib" | grep -q '<free>:' || free_fn=hak_free
malloc_fn=${MALLOC:-malloc}
[ -n "${MALLOC:-}" ] || objdump -d "$lib" | grep -q '<malloc>:' || malloc_fn=hak_malloc

src=$(mktemp --suffix=.s)
trap 'rm -f "$src"' EXIT
{
    echo "# free(p) with p in %rdi"
    hit_path "$free_fn"
    echo "	mov \$$size, %edi"
    hit_path "$malloc_fn"
    echo "	movb \$1, (%rax)"
    echo "	mov %rax, %rdi"
    echo ".Lout:"
} >"$src"

echo "hit paths of $lib ($free_fn + $malloc_fn($size)): $(grep -c '^	' "$src") instructions a pair"
for cpu in icelake-server znver3; do
    out=$("$mca" -mtriple=x86_64-linux-gnu -mcpu="$cpu" -noalias=false -iterations=1000 "$src" 2>&1)
    cycles=$(awk '/^Total Cycles:/ { print $3 }' <<<"$out")
    uops=$(awk '/^Total uOps:/ { print $3 }' <<<"$out")
    rthru=$(awk '/^Block RThroughput:/ { print $3 }' <<<"$out")
    awk -v c="$cycles" -v u="$uops" -v r="$rthru" -v cpu="$cpu" 'BEGIN {
        printf "  %-15s %6.2f cycles a pair (1000 iterations, -noalias=false), %5.2f uops, block rthroughput %s\n",
            cpu, c / 1000, u / 1000, r }'
done
if [ "${MCA_VERBOSE:-0}" = 1 ]; then
    cat "$src"
    "$mca" -mtriple=x86_64-linux-gnu -mcpu=icelake-server -noalias=false -iterations=100 -timeline \
        -timeline-max-iterations=3 "$src"
fi
