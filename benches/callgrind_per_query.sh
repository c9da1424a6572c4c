#!/usr/bin/env bash
# Where a proxy's instructions per forwarded query go, by function: the difference of the two
# callgrind profiles `cargo bench --bench compare` keeps (2N and N transactions), divided by N,
# so start-up, logins and shutdown cancel out.
#
#   benches/callgrind_per_query.sh PROFILE_2N PROFILE_N N [self|inclusive] [TOP]
#
# e.g. benches/callgrind_per_query.sh target/benchmarks/callgrind-tidepool-simple-{2n,n}.out 20000
# Prints "instructions per query  function", largest first (default: self cost, top 40).
set -euo pipefail
twice=$1; once=$2; n=$3; mode=${4:-self}; top=${5:-40}
inclusive=no; [ "$mode" = inclusive ] && inclusive=yes
table() { # profile -> "count<TAB>function" for every function
  callgrind_annotate --inclusive="$inclusive" --threshold=100 --show-percs=no --auto=no "$1" 2>/dev/null |
    awk '/^-+$/ { dashes++; next } dashes >= 6 && $1 ~ /^[0-9,]+$/ {
      count = $1; gsub(",", "", count); $1 = ""; sub(/^ +/, ""); print count "\t" $0 }'
}
join -t $'\t' -a 1 -a 2 -e 0 -o 0,1.1,2.1 -1 2 -2 2 \
  <(table "$twice" | sort -t $'\t' -k 2,2) <(table "$once" | sort -t $'\t' -k 2,2) |
  awk -F '\t' -v n="$n" '{ d = ($2 - $3) / n; if (d >= 0.5 || d <= -0.5) printf "%10.0f  %s\n", d, $1 }' |
  sort -rn | head -n "$top"
