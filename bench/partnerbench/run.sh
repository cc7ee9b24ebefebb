#!/usr/bin/env bash
# The blind-linkage benchmark end to end (see main.go): a partner's file of
# COHORT/MEMBERS/OTHERS persons, ROWS_PER_PERSON rows each, through the real
# lopnrd (--dev, local key store and directory) and lopnr on this machine.
#   bench/partnerbench/run.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-$(mktemp -d /tmp/partnerbench-XXXX)}
: "${COHORT:=100000}" "${MEMBERS:=100000}" "${OTHERS:=400000}" "${ROWS_PER_PERSON:=2}"
bin=$dir/bin
mkdir -p "$bin"
go build -o "$bin/lopnr" ./cmd/lopnr
go build -o "$bin/lopnrd" ./cmd/lopnrd
go build -o "$bin/partnerbench" ./bench/partnerbench
"$bin/partnerbench" -prepare -out "$dir" -cohort "$COHORT" -members "$MEMBERS" -others "$OTHERS" -rows-per-person "$ROWS_PER_PERSON"

port=$(( 20000 + RANDOM % 20000 ))
export LOPNR_SERVER=127.0.0.1:$port LOPNR_DEV=true
"$bin/lopnrd" --dev --listen "$LOPNR_SERVER" --metrics-listen "" --policy "$dir/policy.yaml" --data-dir "$dir/data" 2> "$dir/lopnrd.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q '"lopnrd serving"' "$dir/lopnrd.log" && break; sleep 0.2; done

recipient=$(cat "$dir/recipient.txt")
"$bin/lopnr" projects create partnerbench --epm-dnr 2026-00000-01 --approved "$dir/approved.yaml" --recipient "$recipient" > /dev/null
"$bin/lopnr" projects approve partnerbench c1 --as approver > /dev/null   # four eyes: a second person approves the rules
"$bin/partnerbench" -assign -out "$dir"
reg=$("$bin/lopnr" partners register partnerbench "CN=dev-partner,O=lopnrd --dev" --recipient "$recipient" \
	--exchange blind --budget 10000000 --reason "partnerbench")
change=$(awk '/lopnr projects approve/ {print $NF}' <<< "$reg")
"$bin/lopnr" projects approve partnerbench "$change" --as approver > /dev/null   # and the partner's registration

cat "$dir/truth.txt"
t0=$(date +%s.%N)
/usr/bin/time -f "blind: %e s, peak %M kB (lopnr)" "$bin/lopnr" partner blind --as partner --project partnerbench "$dir/partner.csv" "$dir/partner.pseud.csv" 2> >(grep -v '^lopnr: blind' >&2)
t1=$(date +%s.%N)
up=$("$bin/lopnr" partner upload --as partner --project partnerbench --source scb_inkomst --keyed-by pseudonym \
	--variable INKOMST --variable AR --variable KOMMUN "$dir/partner.pseud.csv")
echo "$up"
t2=$(date +%s.%N)
job=${up##* }
"$bin/lopnr" watch "$job" > "$dir/watch.txt"
t3=$(date +%s.%N)
tail -1 "$dir/watch.txt"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
	printf "blind %.1f s, upload and match %.1f s, supplementary delivery %.1f s: end to end %.1f s\n", b-a, c-b, d-c, d-a }'
echo "lopnrd peak memory: $(grep VmHWM /proc/$server/status | tr -s " ")"
echo "data in $dir"
