import { readdir, readFile } from 'node:fs/promises';
import { makeDirectory } from '../exec/files.ts';
import { basename, join, resolve } from 'node:path';
import { parseCase, type Case } from '../model/case.ts';
import { FatalError } from '../model/errors.ts';
import { readReport, writeJsonAtomic } from './store.ts';

// corpus/ holds regression cases: the minimal cases of filed reports, promoted by hand with
// --promote, and scenarios written from elsewhere (qemu's own iotests), which say where they come
// from instead of a signature. Every run replays them before its generated cases; a corpus case
// that gives a new finding is a regression.

export interface CorpusEntry {
  /** The file name without .json: names the case in reports and the summary. */
  name: string;
  case: Case;
  /** The signature the case was promoted for, or null for a case written from a source. */
  signature: string | null;
}

type CorpusFile =
  | {
      formatVersion: 1;
      signature: string;
      promotedFrom: string;
      promotedAt: string;
      /** What the finding was, for a reader of the file. */
      message: string;
      case: Case;
    }
  | {
      formatVersion: 1;
      /** Where the scenario comes from, e.g. "qemu iotests 025 (tests/qemu-iotests/025)". */
      source: string;
      /** What the scenario does. */
      description: string;
      case: Case;
    };

/** Every *.json in `dir`, sorted by name; a missing directory is an empty corpus, unless it must
 * exist (a --corpus the user named). */
export async function loadCorpus(dir: string, mustExist = false): Promise<CorpusEntry[]> {
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' && !mustExist) return [] as string[];
    throw new FatalError(`cannot read the corpus directory ${dir}: ${err.message} (pass --corpus DIR)`);
  });
  const entries: CorpusEntry[] = [];
  for (const file of names.filter((n) => n.endsWith('.json')).sort()) {
    const path = join(dir, file);
    let json: CorpusFile;
    try {
      json = JSON.parse(await readFile(path, 'utf8')) as CorpusFile;
    } catch (err) {
      throw new FatalError(`corpus case ${path} is not valid JSON: ${(err as Error).message}; fix or remove it`);
    }
    const signature = json && 'signature' in json && typeof json.signature === 'string' ? json.signature : null;
    const source = json && 'source' in json && typeof json.source === 'string' ? json.source : null;
    if (signature === null && source === null)
      throw new FatalError(
        `corpus case ${path} has neither a signature nor a source: make corpus cases with --promote, ` +
          'or name where a written one comes from in "source"',
      );
    try {
      entries.push({
        name: basename(file, '.json'),
        signature,
        case: parseCase(json.case, `${path}: case`),
      });
    } catch (err) {
      throw new FatalError(`${(err as Error).message}; fix or remove ${path}`);
    }
  }
  return entries;
}

/** Copies a report's (smallest) case into the corpus, named after the report folder. */
export async function promote(reportFolder: string, corpusDir: string): Promise<string> {
  const report = await readReport(reportFolder);
  const name = basename(resolve(reportFolder));
  const file: CorpusFile = {
    formatVersion: 1,
    signature: report.signature,
    promotedFrom: name,
    promotedAt: new Date().toISOString(),
    message: report.finding.message,
    case: report.case,
  };
  await makeDirectory(corpusDir);
  const path = join(corpusDir, `${name}.json`);
  await writeJsonAtomic(path, file);
  return path;
}
