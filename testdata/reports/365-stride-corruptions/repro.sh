#!/usr/bin/env bash
# Reproduces check/corruptions/subject/refcount-blocks-garbled:sub-byte: qemu-img check found 6 corruptions in the subject image
# Found by the instar resize fuzzer (seed 1, iteration 43, 2026-12-07 17:49 UTC). Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1,compat=1.1 base.qcow2 1024 >/dev/null || exit 2
cp base.qcow2 reference.qcow2 && cp base.qcow2 subject.qcow2 || exit 2
timeout -k 5 "$TIMEOUT" qemu-img resize -f qcow2 --shrink reference.qcow2 512; rc_ref=$?; ref=$(outcome $rc_ref)
timeout -k 5 "$TIMEOUT" "$INSTAR" resize -f qcow2 --shrink subject.qcow2 512; rc_sub=$?; sub=$(outcome $rc_sub)
echo '== step 1, resize to 512 --shrink (shrink):' "qemu-img $ref, subject $sub"
reproduced=0
qemu-img check -f qcow2 subject.qcow2; check=$?
[ "$check" = 2 ] && reproduced=1
[ "$ref$sub" = okok ] || reproduced=0
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: check/corruptions/subject/refcount-blocks-garbled:sub-byte'; exit 1; fi
echo 'did not reproduce'; exit 0
