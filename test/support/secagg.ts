export { chiSquareOfBytes, identities, secAggRound, type Captured, type Stage } from '../../server/sim/secagg-round.ts';
