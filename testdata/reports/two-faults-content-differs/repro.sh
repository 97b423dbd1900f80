#!/usr/bin/env bash
# Reproduces content/content-differs/subject/region=grown,subject=data,qemu=zeros: guest content differs first at offset 33554432 (grown)
# Found by the instar resize fuzzer (corpus iotest-025-grow-fully-written, 2026-12-07 17:20 UTC). Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
qemu-img create -q -f qcow2 -o cluster_size=65536,refcount_bits=16,compat=1.1 base.qcow2 33554432 >/dev/null || exit 2
qemu-io -f qcow2 -c 'write -q -P 197 0 33554432' base.qcow2 >/dev/null || exit 2
cp base.qcow2 reference.qcow2 && cp base.qcow2 subject.qcow2 || exit 2
timeout -k 5 "$TIMEOUT" qemu-img resize -f qcow2 reference.qcow2 96M; rc_ref=$?; ref=$(outcome $rc_ref)
timeout -k 5 "$TIMEOUT" "$INSTAR" resize -f qcow2 subject.qcow2 96M; rc_sub=$?; sub=$(outcome $rc_sub)
echo '== step 1, resize to 96M (grow):' "qemu-img $ref, subject $sub"
reproduced=0
qemu-img compare -f qcow2 -F qcow2 reference.qcow2 subject.qcow2; [ $? = 1 ] && reproduced=1
[ "$ref$sub" = okok ] || reproduced=0
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: content/content-differs/subject/region=grown,subject=data,qemu=zeros'; exit 1; fi
echo 'did not reproduce'; exit 0
