// How commit's own output is judged (oracles/output.ts): its words are qemu-img's (`Image
// committed.`); instar's --output json report must have these keys (../shared/reference/instar-ops.md).
// qemu-img has no JSON and the counts are instar's own; the images are the chain oracle's.

export const COMMIT_JSON_KEYS = [
  'overlay',
  'overlay_format',
  'backing',
  'backing_format',
  'clusters_committed',
  'bytes_committed',
  'overlay_clusters_cleared',
] as const;
