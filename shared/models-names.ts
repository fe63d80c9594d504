/** Model names without pulling TF.js in: protocol and schema code import these. */
export const MODEL_NAMES = ['cnn-small', 'cnn', 'mlp'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];
