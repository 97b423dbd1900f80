import { createRequire } from 'node:module';
import type { Argv } from 'yargs';
import { FatalError } from '../model/errors.ts';

// What the command lines share: the parser's setup, its wrapping, and how a bad flag becomes a
// usage error (exit 2, with a hint to --help).

// yargs's ESM build wraps help text with cliui's own hard wrap, which splits words ("qemu-img",
// "default") at the column edge; its CommonJS build wraps at words.
const yargs = createRequire(import.meta.url)('yargs') as (args: string[]) => Argv;

export class UsageError extends FatalError {}

export const usageFail = (message: string): never => {
  throw new UsageError(message);
};

/** A yargs parser with this project's conventions: strict options (and no positional arguments
 * unless `positionals`), --help wrapped at words to the terminal (at most 100 columns), no
 * --version, and every parse failure a UsageError. */
export function commandLine(argv: string[], scriptName: string, usage: string, positionals = false): Argv {
  const parser = yargs(argv);
  return (positionals ? parser.strictOptions() : parser.strict())
    .scriptName(scriptName)
    .usage(usage)
    .help()
    .version(false)
    .wrap(Math.min(100, parser.terminalWidth()))
    .fail((message, err) => {
      throw err instanceof FatalError ? err : new UsageError(message ?? String(err));
    });
}

/** Runs a command line's main: its exit code, or 2 with a message for an error that says what to
 * do (FatalError), or with the whole error for anything else (a harness bug). */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof FatalError) {
        console.error(`error: ${err.message}`);
        if (err instanceof UsageError) console.error('run with --help for the options');
      } else {
        console.error(err);
      }
      process.exitCode = 2;
    },
  );
}
