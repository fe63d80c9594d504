/** The registry's lineage as the dashboard draws it: straight chains folded, the versions that tell the story kept. */
import { describe, expect, it } from 'vitest';
import type { ModelRecord } from '../shared/api.ts';
import { lineageTree, type LineageNode } from '../web-client/ui/lineage.ts';

const version = (v: number, runId: number, round: number, parentVersion: number | null, meta: Partial<ModelRecord['meta']> = {}): ModelRecord => ({ version: v, runId, round, parentVersion, model: 'mlp', createdAt: v, testAccuracy: null, testLoss: null, meta: { name: null, description: null, owner: null, labels: {}, ...meta } });
const shape = (nodes: LineageNode[]): unknown => nodes.map((n) => [n.model.version, n.folded, shape(n.children)]);

describe('the lineage tree', () => {
  it('folds each run\'s straight chain, keeps run starts, branch points, tips, named versions and the selected ones', () => {
    // run 1: v1 (initial) … v10; run 2 starts from v6 (v11 … v13); run 3 from v10 (v14, v15); v8 is named
    const models = [version(1, 1, 0, null)];
    for (let v = 2; v <= 10; v++) models.push(version(v, 1, v - 1, v - 1, v === 8 ? { name: 'the good one' } : {}));
    models.push(version(11, 2, 0, 6), version(12, 2, 1, 11), version(13, 2, 2, 12), version(14, 3, 0, 10), version(15, 3, 1, 14));
    expect(shape(lineageTree(models))).toEqual([
      [1, 0, [[6, 4, [
        [8, 1, [[10, 1, [[14, 0, [[15, 0, []]]]]]]],
        [11, 0, [[13, 1, []]]],
      ]]]],
    ]);
    // a selected version is kept out of its fold
    expect(shape(lineageTree(models, new Set([3])))).toEqual([
      [1, 0, [[3, 1, [[6, 2, [
        [8, 1, [[10, 1, [[14, 0, [[15, 0, []]]]]]]],
        [11, 0, [[13, 1, []]]],
      ]]]]]],
    ]);
  });

  it('makes a root of a version whose parent is not listed, and stops at a cycle', () => {
    expect(shape(lineageTree([version(5, 1, 3, 4), version(6, 1, 4, 5)]))).toEqual([[5, 0, [[6, 0, []]]]]);
    expect(shape(lineageTree([version(1, 1, 0, null), version(2, 1, 1, 3), version(3, 1, 2, 2)]))).toEqual([[1, 0, []]]);
  });
});
