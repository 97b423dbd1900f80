import { constants } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compareFilesArgs } from '../model/commands.ts';
import type { SideFiles } from '../model/layout.ts';
import type { CompareObservation } from '../oracles/content.ts';
import type { SnapshotContentObservation } from '../oracles/table.ts';
import type { CaseRun } from './case-run.ts';
import { readVirtualSize } from './image-state.ts';

// The guest content an internal snapshot names, kept for the steps that apply it: when a snapshot
// a later step applies is created (by the build, or by a step both sides took), the image is
// copied as it is (a clone where the file system can); after an apply both sides tried, each is
// compared with the copy. Only the snapshots a case applies are kept, and only the first of a name
// (both tools apply the first one of a name).

export class SnapshotContent {
  private readonly applied: Set<string>;
  private readonly copies = new Map<string, string>();

  constructor(private readonly run: CaseRun) {
    this.applied = new Set(run.c.steps.flatMap((s) => (s.op === 'snapshot' && s.action === 'apply' ? [s.name] : [])));
  }

  /** Keeps `side`'s image as the content of snapshot `name`, if a later step applies it. */
  async keep(name: string, side: SideFiles): Promise<void> {
    if (!this.applied.has(name) || this.copies.has(name)) return;
    // beside the image, so that a relative backing file name still resolves
    const copy = join(side.dir, `snapshot-${this.copies.size}.${this.run.c.image.format}`);
    await copyFile(this.run.path(side), join(this.run.dir, copy), constants.COPYFILE_FICLONE);
    this.copies.set(name, copy);
  }

  /** After a step both sides accepted: a created snapshot is kept (from qemu's side); an applied
   * one is compared with what was kept, on each side. */
  async afterStep(
    content: { keeps: string } | { restores: string } | null,
  ): Promise<SnapshotContentObservation | null> {
    if (content === null) return null;
    if ('keeps' in content) {
      await this.keep(content.keeps, this.run.layout.reference);
      return null;
    }
    const copy = this.copies.get(content.restores);
    if (copy === undefined) return null;
    const { reference, subject } = this.run.layout;
    return {
      name: content.restores,
      reference: await this.compare(copy, reference),
      subject: await this.compare(copy, subject),
    };
  }

  private async compare(copy: string, side: SideFiles): Promise<CompareObservation> {
    const image = side.dir === '.' ? side.image : join(side.dir, side.image);
    const r = await this.run.run('qemu-img', compareFilesArgs(copy, image, this.run.c.image));
    const size = (file: string) => readVirtualSize(join(this.run.dir, file), this.run.c);
    return { ...r, referenceSize: await size(copy), subjectSize: await size(image) };
  }
}
