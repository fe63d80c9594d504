import { describe, expect, it } from 'vitest';
import { inFormWords } from '../web-client/ui/form-words.ts';

const labels = new Map([
  ['minUpdates', 'Min updates'],
  ['clientsPerRound', 'Clients per round (K)'],
  ['clipNorm', 'L2 bound (0 = off)'],
  ['dp.clipNorm', 'DP clip bound S'],
  ['dp.noiseMultiplier', 'DP noise multiplier z'],
  ['aggregation', 'Aggregation'],
  ['rounds', 'Rounds'],
]);

describe('a rule message in the words of the form', () => {
  it('names camelCase fields by their labels', () => {
    const actual = inFormWords('minUpdates must not exceed clientsPerRound', labels);
    expect(actual).toBe('Min updates must not exceed Clients per round (K)');
  });

  it('takes a dotted name as one field, not as its last part', () => {
    expect(inFormWords('dp.clipNorm must be a number or "adaptive"', labels)).toBe('DP clip bound S must be a number or "adaptive"');
    expect(inFormWords('needs dp.noiseMultiplier with dp.clipNorm', labels)).toBe('Needs DP noise multiplier z with DP clip bound S');
    // the plain field of the same last name keeps its own label
    expect(inFormWords('clipNorm is ignored', labels)).toBe('L2 bound (0 = off) is ignored');
  });

  it('leaves ordinary lowercase words alone, even when a field is named so', () => {
    expect(inFormWords('has no effect under secure aggregation', labels)).toBe('Has no effect under secure aggregation');
    expect(inFormWords('must be at least 1 for rounds to run', labels)).toBe('Must be at least 1 for rounds to run');
  });

  it('leaves camelCase or dotted words that are no field as they are, and a sentence end out of the token', () => {
    expect(inFormWords('see the codec topkStage, e.g. in minUpdates.', labels)).toBe('See the codec topkStage, e.g. in Min updates.');
  });
});
