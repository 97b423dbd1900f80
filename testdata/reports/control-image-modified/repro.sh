#!/usr/bin/env bash
# Reproduces unchanged-on-refusal/image-modified-on-refusal/reference/hash-changed: qemu-img refused the step but changed the image file
# Found by the instar resize fuzzer (seed 5, iteration 4, 2026-12-07 17:21 UTC). A control run (qemu-img on both sides): a harness bug.
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1,compat=1.1 base.qcow2 512 >/dev/null || exit 2
qemu-img bitmap -f qcow2 --add base.qcow2 bitmap0 >/dev/null || exit 2
cp base.qcow2 reference.qcow2 && cp base.qcow2 subject.qcow2 || exit 2
cp reference.qcow2 before.qcow2
timeout -k 5 "$TIMEOUT" qemu-img resize -f qcow2 reference.qcow2 513; rc_ref=$?; ref=$(outcome $rc_ref)
timeout -k 5 "$TIMEOUT" qemu-img resize -f qcow2 subject.qcow2 513; rc_sub=$?; sub=$(outcome $rc_sub)
echo '== step 1, resize to 513 (invalid):' "qemu-img $ref, subject $sub"
reproduced=0
if ! cmp -s before.qcow2 reference.qcow2; then echo "reference.qcow2 changed although the resize was refused"; reproduced=1; fi
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: unchanged-on-refusal/image-modified-on-refusal/reference/hash-changed'; exit 1; fi
echo 'did not reproduce'; exit 0
