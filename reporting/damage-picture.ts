import type { StepRecord } from '../exec/run-case.ts';
import { describeRegion, type FormatSketch, type Region } from '../formats/rules.ts';
import type { ClusterRole, StructureSketch } from '../qcow2/structure.ts';

// The picture of the damage (damage.svg beside report.md): a qcow2 image as its host clusters,
// qemu-img's result above the subject's, each cluster coloured by what references it, and the
// clusters the structure oracle names marked: a refcount stored below, above or without its
// references, the refcount block that holds such an entry, a COPIED flag that disagrees with the
// refcount, a cluster referenced past the end of the file. Runs of clusters alike collapse into one
// box with their count, so a large image stays one screen wide. Drawn from the step records a
// report stores (StepRecord.structures): no image is needed to redraw it.

export type MarkKind =
  | 'undercounted'
  | 'overcounted'
  | 'leaked'
  | 'block-holds-wrong-refcounts'
  | 'copied-flag'
  | 'past-eof'
  | 'maps-past-end';

interface Mark {
  kind: MarkKind;
  text: string;
}

type BoxRole = ClusterRole | 'free' | 'beyond-file';

const ROLE_COLOURS: Record<BoxRole, string> = {
  header: '#7f7f7f',
  l1: '#1f5fbf',
  l2: '#6fa8ef',
  data: '#e8c88a',
  'data-zero': '#f3e6c8',
  compressed: '#b07a3a',
  'refcount-table': '#1e7a3a',
  'refcount-block': '#6cc77f',
  'snapshot-table': '#7a3fa8',
  'snapshot-l1': '#a883d0',
  'snapshot-l2': '#cdb8e8',
  'snapshot-data': '#f0e2c4',
  'crypto-header': '#333333',
  'bitmap-directory': '#0f7f7f',
  'bitmap-table': '#3fb3b3',
  'bitmap-data': '#a6e0e0',
  free: '#ffffff',
  // not in the file at all: refcounts a bug stored for clusters past its end
  'beyond-file': '#e4e4e4',
};

const MARKS: Record<MarkKind, { colour: string; dash: string | null; meaning: string }> = {
  undercounted: { colour: '#d00000', dash: null, meaning: 'refcount below its references (a corruption)' },
  overcounted: { colour: '#ff8c00', dash: null, meaning: 'refcount above its references' },
  leaked: { colour: '#c9a400', dash: null, meaning: 'refcount on a cluster nothing references (a leak)' },
  'block-holds-wrong-refcounts': {
    colour: '#c000c0',
    dash: '4 2',
    meaning: 'refcount block holding the wrong refcounts',
  },
  'copied-flag': { colour: '#0050d0', dash: '2 2', meaning: 'COPIED flag disagrees with the refcount' },
  'past-eof': { colour: '#000000', dash: '1 2', meaning: 'referenced past the end of the file' },
  'maps-past-end': { colour: '#008080', dash: '6 2', meaning: 'L2 table mapping guest clusters past the disk end' },
};

/** A mark's outline: its colour, width and dashes. */
const outline = (kind: MarkKind) => {
  const style = MARKS[kind];
  return `stroke="${style.colour}" stroke-width="3"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''}`;
};

const roleName = (r: BoxRole) => (r === 'beyond-file' ? 'past the end of the file' : r);

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Every marked cluster of one side and why. */
export function marksOf(s: StructureSketch): Map<number, Mark[]> {
  const marks = new Map<number, Mark[]>();
  const add = (cluster: number, mark: Mark) => {
    const list = marks.get(cluster) ?? [];
    if (!list.some((m) => m.kind === mark.kind)) list.push(mark);
    marks.set(cluster, list);
  };
  const perBlock = (s.clusterSize * 8) / s.refcountBits;
  const blocks = new Map(s.refcountBlocks.map((b) => [b.tableIndex, b.cluster]));
  const wrongPerBlock = new Map<number, number>();
  for (const m of s.refcountMismatches) {
    add(m.cluster, { kind: m.class, text: `refcount ${m.stored}, referenced ${m.expected} times` });
    const block = blocks.get(Math.floor(m.cluster / perBlock));
    if (block !== undefined) wrongPerBlock.set(block, (wrongPerBlock.get(block) ?? 0) + 1);
  }
  for (const [block, n] of wrongPerBlock)
    add(block, { kind: 'block-holds-wrong-refcounts', text: `holds ${n} of the wrong refcounts listed` });
  for (const c of s.copiedMismatches)
    add(c.cluster, { kind: 'copied-flag', text: `${c.table} entry's COPIED flag, but refcount ${c.stored}` });
  for (const b of s.beyondEof) add(b.cluster, { kind: 'past-eof', text: `${b.role} past the end of the file` });
  const past = new Map<number, number>();
  for (const m of s.mappingsBeyondEnd ?? [])
    if (m.cluster !== undefined) past.set(m.cluster, (past.get(m.cluster) ?? 0) + 1);
  for (const [cluster, n] of past)
    add(cluster, { kind: 'maps-past-end', text: `maps ${n} of the listed guest clusters past the disk's end` });
  return marks;
}

interface Box {
  first: number;
  last: number;
  role: BoxRole;
  shared: boolean;
  marks: Mark[];
}

/** The side's clusters as boxes: each marked cluster alone, runs of unmarked clusters alike in one
 * box (up to two alike stay apart: a box of one is easier to read than "x2"). */
export function boxesOf(s: StructureSketch, marks: Map<number, Mark[]>): Box[] {
  const fileClusters = Math.ceil(s.fileLength / s.clusterSize);
  const lastRun = s.clusterRoles.at(-1)?.last ?? -1;
  const end = Math.max(fileClusters, lastRun + 1, ...[...marks.keys()].map((c) => c + 1));
  // the image as intervals: its role runs and the free gaps between them
  const intervals: Omit<Box, 'marks'>[] = [];
  let at = 0;
  for (const r of [...s.clusterRoles].sort((a, b) => a.first - b.first)) {
    const gap = Math.min(r.first, fileClusters);
    if (gap > at) intervals.push({ first: at, last: gap - 1, role: 'free', shared: false });
    if (r.first > Math.max(at, fileClusters))
      intervals.push({ first: Math.max(at, fileClusters), last: r.first - 1, role: 'beyond-file', shared: false });
    intervals.push({ first: r.first, last: r.last, role: r.role, shared: r.shared });
    at = r.last + 1;
  }
  if (at < fileClusters) intervals.push({ first: at, last: fileClusters - 1, role: 'free', shared: false });
  at = Math.max(at, fileClusters);
  if (at < end) intervals.push({ first: at, last: end - 1, role: 'beyond-file', shared: false });
  const marked = [...marks.keys()].sort((a, b) => a - b);
  const boxes: Box[] = [];
  const plain = (first: number, last: number, i: Omit<Box, 'marks'>) => {
    if (last < first) return;
    if (last - first < 2) for (let c = first; c <= last; c++) boxes.push({ ...i, first: c, last: c, marks: [] });
    else boxes.push({ ...i, first, last, marks: [] });
  };
  for (const i of intervals) {
    let from = i.first;
    for (const c of marked) {
      if (c < i.first || c > i.last) continue;
      plain(from, c - 1, i);
      boxes.push({ ...i, first: c, last: c, marks: marks.get(c)! });
      from = c + 1;
    }
    plain(from, i.last, i);
  }
  return boxes;
}

const SOLO = 24;
const RUN = 64;
const HEIGHT = 28;
const GAP = 3;
const WIDTH = 1000;
const ROW = HEIGHT + 22;

/** One side's rows of boxes, from `y`; returns the SVG and the height used. */
function sideSvg(label: string, side: 'reference' | 'subject', s: StructureSketch, y: number) {
  const marks = marksOf(s);
  const boxes = boxesOf(s, marks);
  const parts: string[] = [];
  const counts = [
    `refcounts ${s.mismatchCounts.undercounted} below, ${s.mismatchCounts.overcounted} above, ` +
      `${s.mismatchCounts.leaked} leaked`,
    `COPIED flags ${s.copiedMismatchCount} wrong`,
    `${s.beyondEofCount} past the file`,
    // absent in steps recorded before mappings were kept
    ...(s.mappingsBeyondEndCount === undefined ? [] : [`${s.mappingsBeyondEndCount} mapped past the disk`]),
  ].join('; ');
  parts.push(
    `<text x="0" y="${y + 14}" font-weight="bold">${xml(label)}</text>` +
      `<text x="0" y="${y + 30}" fill="#444">${xml(
        `${Math.ceil(s.fileLength / s.clusterSize)} clusters of ` +
          `${s.clusterSize} bytes, refcount_bits ${s.refcountBits}: ${counts}`,
      )}</text>`,
  );
  let [x, row] = [0, y + 40];
  for (const b of boxes) {
    const w = b.first === b.last ? SOLO : RUN;
    if (x + w > WIDTH) [x, row] = [0, row + ROW];
    const range = b.first === b.last ? `cluster ${b.first}` : `clusters ${b.first}-${b.last} (${b.last - b.first + 1})`;
    const why = b.marks.map((m) => `; ${m.text}`).join('');
    const title = `${range}: ${roleName(b.role)}${b.shared ? ', shared' : ''}${why}`;
    const fill = ROLE_COLOURS[b.role];
    parts.push(
      `<g><title>${xml(title)}</title>` +
        `<rect x="${x}" y="${row}" width="${w}" height="${HEIGHT}" fill="${fill}" stroke="#555" stroke-width="0.5"` +
        `${b.shared ? ' fill-opacity="0.6"' : ''}/>`,
    );
    if (b.first !== b.last)
      parts.push(
        `<text x="${x + w / 2}" y="${row + 18}" text-anchor="middle" font-size="10">` +
          `×${b.last - b.first + 1}</text>`,
      );
    b.marks.forEach((m, i) => {
      const inset = i * 3 + 1.5;
      parts.push(
        `<rect class="mark mark-${m.kind}" data-side="${side}" data-cluster="${b.first}" ` +
          `x="${x + inset}" y="${row + inset}" width="${w - 2 * inset}" height="${HEIGHT - 2 * inset}" ` +
          `fill="none" ${outline(m.kind)}/>`,
      );
    });
    // the cluster number under every marked box and every run, and at the start of each row
    if (b.marks.length > 0 || b.first !== b.last || x === 0)
      parts.push(
        `<text x="${x + (w === SOLO ? SOLO / 2 : 1)}" y="${row + HEIGHT + 11}" font-size="9" fill="#333"` +
          `${w === SOLO ? ' text-anchor="middle"' : ''}>${b.first}</text>`,
      );
    parts.push('</g>');
    x += w + GAP;
  }
  return { svg: parts.join('\n'), height: row + ROW - y, roles: new Set(boxes.map((b) => b.role)), marks };
}

/** Whether two results differ in their structures: marks on either side, or clusters used
 * otherwise (a table moved, a run grown). */
export function structuresDiffer(r: StructureSketch, s: StructureSketch): boolean {
  const runs = (x: StructureSketch) => JSON.stringify(x.clusterRoles);
  const marked = (x: StructureSketch) =>
    x.refcountMismatches.length + x.copiedMismatches.length + x.beyondEof.length + (x.mappingsBeyondEnd?.length ?? 0) >
    0;
  return marked(r) || marked(s) || runs(r) !== runs(s) || r.fileLength !== s.fileLength;
}

/** damage.svg for a report's finding: null where its step has no structures of both results
 * (not qcow2, an older report, a side unreadable) or where they do not differ. */
export function damagePicture(steps: readonly StepRecord[], step: number, title: string): string | null {
  const structures = steps.find((s) => s.index === step)?.structures;
  if (!structures || !structuresDiffer(structures.reference, structures.subject)) return null;
  const top = 24;
  const ref = sideSvg('qemu-img (reference)', 'reference', structures.reference, top);
  const sub = sideSvg('subject', 'subject', structures.subject, top + ref.height + 10);
  const roles = [...new Set([...ref.roles, ...sub.roles])];
  const kinds = [...new Set([...ref.marks.values(), ...sub.marks.values()].flat().map((m) => m.kind))];
  let y = top + ref.height + sub.height + 24;
  const legend: string[] = [`<text x="0" y="${y}" font-weight="bold">Legend</text>`];
  y += 8;
  roles.forEach((role, i) => {
    const [lx, ly] = [(i % 5) * 200, y + Math.floor(i / 5) * 20];
    legend.push(
      `<rect x="${lx}" y="${ly}" width="14" height="14" fill="${ROLE_COLOURS[role]}" ` +
        'stroke="#555" stroke-width="0.5"/>' +
        `<text x="${lx + 20}" y="${ly + 11}">${xml(roleName(role))}</text>`,
    );
  });
  y += Math.ceil(roles.length / 5) * 20 + 6;
  kinds.forEach((kind, i) => {
    const style = MARKS[kind];
    legend.push(
      `<rect x="1.5" y="${y + i * 20 + 1.5}" width="14" height="14" fill="none" ${outline(kind)}/>` +
        `<text x="24" y="${y + i * 20 + 13}">${xml(style.meaning)}</text>`,
    );
  });
  y += kinds.length * 20 + 20;
  legend.push(
    `<text x="0" y="${y}" fill="#444">Runs of alike clusters are one box (×count); ` +
      'numbers are host clusters; hover a box for its clusters and what is wrong.</text>',
  );
  return svgDocument(title, y + 10, [ref.svg, sub.svg, ...legend]);
}

/** The picture's frame: its size, a white ground, its title, then `body`. */
function svgDocument(title: string, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" ` +
      `font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="0" y="14" font-size="14" font-weight="bold">${xml(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

// vhdx, vmdk and vpc: the file as the regions its reader found (headers, tables, BAT, grain
// directory and tables, blocks and grains), in file order, and the regions a broken rule names
// marked. Runs of blocks or grains alike collapse as qcow2 clusters do.

/** A region's kind: its name without its extent and its number (`extent x: grain 128` -> `grain`). */
export const regionKind = (name: string) => name.replace(/^.*: /, '').replace(/ \d+$/, '');

/** The regions a broken rule names: by their place in its message, or, for a structure there is one
 * of (a footer, a BAT, a grain directory), by the rule's name (`footer-checksum`, `bat-entry-states`). */
export function brokenRegions(s: FormatSketch): Map<string, string[]> {
  const named = new Map<string, string[]>();
  for (const region of s.regions) {
    const kind = regionKind(region.name);
    const numbered = kind !== region.name.replace(/^.*: /, '');
    const why = s.broken.filter(
      (b) =>
        b.message.includes(describeRegion(region)) ||
        (!numbered &&
          (b.rule === kind || b.rule.startsWith(`${kind}-`) || kind.startsWith(`${b.rule.split('-')[0]}-`))),
    );
    if (why.length > 0)
      named.set(
        region.name,
        why.map((b) => `${b.rule}: ${b.message}`),
      );
  }
  return named;
}

const KIND_COLOURS = ['#7f7f7f', '#1f5fbf', '#6fa8ef', '#1e7a3a', '#6cc77f', '#7a3fa8', '#b07a3a', '#3fb3b3'];

/** One side's file map from `y`. */
function fileMapSvg(
  label: string,
  side: 'reference' | 'subject',
  s: FormatSketch,
  y: number,
  colours: Map<string, string>,
) {
  const named = brokenRegions(s);
  type Item = { kind: string; first: Region; last: Region; count: number; why: string[] };
  const items: Item[] = [];
  for (const r of [...s.regions].sort((a, b) => a.offset - b.offset)) {
    const kind = regionKind(r.name);
    const why = named.get(r.name) ?? [];
    const last = items.at(-1);
    if (last && why.length === 0 && last.why.length === 0 && last.kind === kind && kind !== r.name) {
      last.last = r;
      last.count++;
    } else items.push({ kind, first: r, last: r, count: 1, why });
  }
  const parts = [
    `<text x="0" y="${y + 14}" font-weight="bold">${xml(label)}</text>` +
      `<text x="0" y="${y + 30}" fill="#444">${xml(
        `${s.format}, ${s.fileLength} bytes, ${s.regions.length} regions ` +
          `read; ${s.broken.length} rules broken${s.broken.map((b) => `: ${b.rule}`).join('')}`,
      )}</text>`,
  ];
  let [x, row] = [0, y + 40];
  for (const it of items) {
    const text = it.count > 1 ? `${it.kind} ×${it.count}` : it.first.name.replace(/^.*: /, '');
    const w = Math.max(SOLO, Math.min(160, text.length * 6.5 + 8));
    if (x + w > WIDTH) [x, row] = [0, row + ROW];
    const end = it.last.offset + it.last.length;
    const title =
      `${it.count > 1 ? `${it.count} ${it.kind}s` : it.first.name} at ${it.first.offset}-${end}` +
      it.why.map((w) => `; ${w}`).join('');
    parts.push(
      `<g><title>${xml(title)}</title><rect x="${x}" y="${row}" width="${w}" height="${HEIGHT}" ` +
        `fill="${colours.get(it.kind)}" fill-opacity="0.45" stroke="#555" stroke-width="0.5"/>` +
        `<text x="${x + 4}" y="${row + 18}" font-size="10">${xml(text)}</text>` +
        (it.why.length > 0
          ? `<rect class="mark mark-broken-rule" data-side="${side}" data-region="${xml(it.first.name)}" ` +
            `x="${x + 1.5}" y="${row + 1.5}" width="${w - 3}" height="${HEIGHT - 3}" fill="none" ` +
            `stroke="#d00000" stroke-width="3"/>`
          : '') +
        `<text x="${x + 1}" y="${row + HEIGHT + 11}" font-size="9" fill="#333">${it.first.offset}</text></g>`,
    );
    x += w + GAP;
  }
  return { svg: parts.join('\n'), height: row + ROW - y, marked: items.some((i) => i.why.length > 0) };
}

/** The picture of a vhdx, vmdk or vpc finding's step: null where the results do not differ. */
export function filePicture(steps: readonly StepRecord[], step: number, title: string): string | null {
  const structures = steps.find((s) => s.index === step)?.formatStructures;
  if (!structures) return null;
  const { reference: r, subject: s } = structures;
  const layout = (x: FormatSketch) => JSON.stringify(x.regions.map((g) => [g.name, g.offset, g.length]));
  if (r.broken.length === 0 && s.broken.length === 0 && layout(r) === layout(s)) return null;
  const kinds = [...new Set([...r.regions, ...s.regions].map((g) => regionKind(g.name)))];
  const colours = new Map(kinds.map((k, i) => [k, KIND_COLOURS[i % KIND_COLOURS.length]!]));
  const top = 24;
  const ref = fileMapSvg('qemu-img (reference)', 'reference', r, top, colours);
  const sub = fileMapSvg('subject', 'subject', s, top + ref.height + 10, colours);
  const y = top + ref.height + sub.height + 24;
  return svgDocument(title, y + 30, [
    ref.svg,
    sub.svg,
    `<rect x="1.5" y="${y - 10}" width="14" height="14" fill="none" stroke="#d00000" stroke-width="3"/>` +
      `<text x="24" y="${y + 1}">a region a broken rule names; boxes in file order, numbers are byte offsets, ` +
      'runs of alike blocks or grains are one box (×count); hover a box for what is wrong</text>',
  ]);
}

/** The file a report folder keeps its picture in. */
export const PICTURE_FILE = 'damage.svg';

/** A report's picture, titled by its signature (null: none, as damagePicture and filePicture). */
export const reportPicture = (r: { steps: readonly StepRecord[]; finding: { step: number }; signature: string }) =>
  damagePicture(r.steps, r.finding.step, r.signature) ?? filePicture(r.steps, r.finding.step, r.signature);
