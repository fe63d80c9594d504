import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Compares a presented token with the admin token in constant time. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (!presented) return false;
  return timingSafeEqual(digest(presented), digest(expected));
}

export function requireAdmin(adminToken: string): RequestHandler {
  return (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!tokenMatches(match?.[1], adminToken)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'admin token required: send Authorization: Bearer <ADMIN_TOKEN>' });
      return;
    }
    next();
  };
}
