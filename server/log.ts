/** One logger with namespaces, structured (one JSON object per line). Never pass secrets in. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(namespace: string): Logger;
}

export function createLogger(namespace = 'fl', sink: (line: string) => void = (l) => process.stdout.write(l + '\n'), quiet = false): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (quiet && level === 'info') return;
    sink(JSON.stringify({ t: new Date().toISOString(), level, ns: namespace, msg, ...fields }));
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (ns) => createLogger(`${namespace}:${ns}`, sink, quiet),
  };
}
