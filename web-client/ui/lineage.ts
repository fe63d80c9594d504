/**
 * The registry's lineage as a tree a person can read: every version has one parent, so the versions
 * form a forest, but a run of 200 rounds is a chain of 200. The tree keeps the versions that tell
 * the story — roots, branch points, the first and last of each run, versions the admin named or
 * labelled, the ones asked for — and folds each straight stretch between them into a count. Pure: no DOM.
 */
import type { ModelRecord } from '../../shared/api.ts';

export interface LineageNode {
  model: ModelRecord;
  /** versions folded between this node and its shown parent (a straight chain) */
  folded: number;
  children: LineageNode[];
}

export function lineageTree(models: readonly ModelRecord[], keep: ReadonlySet<number> = new Set()): LineageNode[] {
  const byVersion = new Map(models.map((m) => [m.version, m]));
  const children = new Map<number, ModelRecord[]>();
  const roots: ModelRecord[] = [];
  for (const m of models) {
    const parent = m.parentVersion === null ? undefined : byVersion.get(m.parentVersion);
    if (!parent || parent.version === m.version) roots.push(m);
    else children.set(parent.version, [...(children.get(parent.version) ?? []), m]);
  }
  const shown = (m: ModelRecord): boolean => {
    const kids = children.get(m.version) ?? [];
    const startsRun = m.parentVersion !== null && byVersion.get(m.parentVersion)?.runId !== m.runId;
    return kids.length !== 1 || kids[0]!.runId !== m.runId || startsRun || keep.has(m.version) || m.meta.name !== null || Object.keys(m.meta.labels).length > 0;
  };
  // walk down from a shown node: a chain of single, unremarkable children folds into a count
  const build = (m: ModelRecord, seen: Set<number>): LineageNode => {
    seen.add(m.version);
    const node: LineageNode = { model: m, folded: 0, children: [] };
    for (const child of children.get(m.version) ?? []) {
      let at = child;
      let folded = 0;
      while (!shown(at) && !seen.has(at.version)) {
        seen.add(at.version);
        folded++;
        at = children.get(at.version)![0]!;
      }
      if (seen.has(at.version)) continue; // a cycle written by hand: stop
      const sub = build(at, seen);
      sub.folded = folded;
      node.children.push(sub);
    }
    return node;
  };
  const seen = new Set<number>();
  return roots.map((r) => build(r, seen));
}
