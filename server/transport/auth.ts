import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Compares a presented token with the admin token in constant time. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (!presented) return false;
  return timingSafeEqual(digest(presented), digest(expected));
}

/** Whether a request presents the admin token (Authorization: Bearer <token>). */
export function isAdmin(req: Request, adminToken: string): boolean {
  return tokenMatches(/^Bearer (.+)$/.exec(req.get('authorization') ?? '')?.[1], adminToken);
}

export function requireAdmin(adminToken: string): RequestHandler {
  return (req, res, next) => {
    if (!isAdmin(req, adminToken)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'admin token required: send Authorization: Bearer <ADMIN_TOKEN>' });
      return;
    }
    next();
  };
}
