#!/usr/bin/env bash
# Reproduces repair:repair/exit-differs/subject/tier=all,qemu=0,subject=2: after a repair of tier all qemu-img exits 0 (clean) and the subject 2 (corruptions remain)
# Found by the instar resize fuzzer (seed 1, iteration 36, 2026-12-07 17:24 UTC). Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1,compat=1.1 base.qcow2 512 >/dev/null || exit 2
# damage refcount-low: cluster 0 (header) refcount 1 -> 0
printf '\x0e' | dd of=base.qcow2 bs=1 seek=1024 conv=notrunc status=none || exit 2
cp base.qcow2 reference.qcow2 && cp base.qcow2 subject.qcow2 || exit 2
timeout -k 5 "$TIMEOUT" qemu-img check -r all --output=json -f qcow2 reference.qcow2 >ref.out; rc_ref=$?; ref=$(outcome $rc_ref '0 2 3')
timeout -k 5 "$TIMEOUT" "$INSTAR" check --repair=all subject.qcow2 >sub.out; rc_sub=$?; sub=$(outcome $rc_sub '0 2 3')
echo '== step 1, check --repair=all (all):' "qemu-img $ref, subject $sub"
reproduced=0
echo "exit status: qemu-img $rc_ref, subject $rc_sub"
[ "$rc_ref" != "$rc_sub" ] && reproduced=1
[ "$ref$sub" = okok ] || reproduced=0
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: repair:repair/exit-differs/subject/tier=all,qemu=0,subject=2'; exit 1; fi
echo 'did not reproduce'; exit 0
