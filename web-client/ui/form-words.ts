/**
 * A rule's message in the words of a form: the field names it mentions become the labels the
 * person sees. A field name is a camelCase word (`minUpdates`) or a dotted path (`dp.clipNorm`),
 * taken as one token; plain lowercase words are left alone even when a field bears that name
 * ("under secure aggregation" stays as written), since in a sentence they are ordinary words.
 */
export function inFormWords(message: string, labels: ReadonlyMap<string, string>): string {
  const named = message.replace(/\b[a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)*\b/g, (token) => (/[A-Z.]/.test(token) ? (labels.get(token) ?? token) : token));
  return named.replace(/^./, (c) => c.toUpperCase());
}
