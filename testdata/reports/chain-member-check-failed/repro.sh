#!/usr/bin/env bash
# Reproduces commit:chain/member-check-failed/subject/written:corruptions: qemu-img check of the parent (chain/backing.qcow2) in the subject's chain: exit 2, corruptions (corruptions 2, leaks 0)
# Found by the instar resize fuzzer (seed 1, iteration 0, 2026-12-07 17:24 UTC). Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh
# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.
set -u; INSTAR=${INSTAR:-instar}; TIMEOUT=${TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
mkdir base reference subject && cd base || exit 2
mkdir chain || exit 2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 chain/backing.qcow2 1024 >/dev/null || exit 2
qemu-io -f qcow2 -c 'write -q -P 1 0 512' chain/backing.qcow2 >/dev/null || exit 2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1,compat=1.1 -b "$PWD"/chain/backing.qcow2 -F qcow2 base.qcow2 1024 >/dev/null || exit 2
qemu-io -f qcow2 -c 'write -q -P 1 512 512' base.qcow2 >/dev/null || exit 2
cd .. || exit 2
for s in reference subject; do cp base/base.qcow2 "$s/$s.qcow2" && mkdir "$s/chain" && cp --sparse=always base/chain/backing.qcow2 "$s/chain/backing.qcow2" || exit 2; done
(cd reference && qemu-img rebase -u -f qcow2 -b "$PWD"/chain/backing.qcow2 -F qcow2 reference.qcow2) >/dev/null || exit 2
(cd subject && qemu-img rebase -u -f qcow2 -b "$PWD"/chain/backing.qcow2 -F qcow2 subject.qcow2) >/dev/null || exit 2
(cd reference && timeout -k 5 "$TIMEOUT" qemu-img commit -f qcow2 -b chain/backing.qcow2 reference.qcow2); rc_ref=$?; ref=$(outcome $rc_ref)
(cd subject && timeout -k 5 "$TIMEOUT" "$INSTAR" commit -f qcow2 -b chain/backing.qcow2 subject.qcow2); rc_sub=$?; sub=$(outcome $rc_sub)
echo '== step 1, commit -b chain/backing.qcow2 (explicit-parent):' "qemu-img $ref, subject $sub"
reproduced=0
(cd subject && qemu-img check -f qcow2 chain/backing.qcow2); [ $? != 0 ] && reproduced=1
(cd reference && qemu-img check -q -f qcow2 chain/backing.qcow2) || reproduced=0
[ "$ref$sub" = okok ] || reproduced=0
if [ "$reproduced" = 1 ]; then echo 'REPRODUCED: commit:chain/member-check-failed/subject/written:corruptions'; exit 1; fi
echo 'did not reproduce'; exit 0
