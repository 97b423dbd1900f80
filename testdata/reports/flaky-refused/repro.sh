#!/usr/bin/env bash
# Reproduces outcome/refused/subject/flaky-instar: refusing once: the subject refused a shrink step that qemu-img accepted: flaky-instar: refusing once
# Found by the instar resize fuzzer (seed 24, iteration 0, 2026-12-02 14:44 UTC). Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal
outcome() { case $1 in 0) echo ok ;; 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
qemu-img create -q -f qcow2 -o cluster_size=2048,refcount_bits=4,compat=1.1 base.qcow2 169984 >/dev/null || exit 2
qemu-io -f qcow2 -c 'write -q -P 6 148992 3584' -c 'write -q -P 8 79360 2048' -c 'discard -q 83968 512' -c 'write -q -P 3 77312 512' -c 'discard -q 79360 6144' -c 'write -q -P 79 86016 1024' base.qcow2 >/dev/null || exit 2
cp base.qcow2 reference.qcow2 && cp base.qcow2 subject.qcow2 || exit 2
timeout -k 5 "$TIMEOUT" qemu-img resize -f qcow2 --shrink reference.qcow2 79360; ref=$(outcome $?)
timeout -k 5 "$TIMEOUT" "$INSTAR" resize -f qcow2 --shrink subject.qcow2 79360; sub=$(outcome $?)
echo '== step 1, resize to 79360 (shrink):' "qemu-img $ref, subject $sub"
reproduced=0
[ "$ref" = ok ] && [ "$sub" = refused ] && reproduced=1
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: outcome/refused/subject/flaky-instar: refusing once'; exit 1; fi
echo 'did not reproduce'; exit 0
