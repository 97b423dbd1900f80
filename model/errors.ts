/** An error that ends the run with exit 2 and a message that says what to do: bad input, a
 * missing tool, a full disk. Nothing already filed is touched. */
export class FatalError extends Error {}

/** The work or reports directory ran out of space. */
export class DiskFullError extends FatalError {}

/** A case stopped because the run was interrupted or stopped early; its result is discarded. */
export class CaseAborted extends Error {}

export const isNoSpace = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code === 'ENOSPC';
