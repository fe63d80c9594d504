/**
 * The dashboard's live channel: a socket.io namespace `/admin` that only admin-token holders can
 * join (checked in the handshake, in constant time). It pushes a snapshot when something changed
 * (at most every 250 ms) and each event of the log. Nothing here accepts commands: runs are
 * started and stopped over the authenticated HTTP API.
 */
import type { Server } from 'socket.io';
import { ADMIN_NAMESPACE, type AdminClientToServerEvents, type AdminServerToClientEvents } from '../../shared/protocol.ts';
import type { Federation } from '../federation.ts';
import { tokenMatches } from './auth.ts';

const PUSH_EVERY_MS = 250;

export function attachAdminFeed(io: Server, federation: Federation, adminToken: string): () => void {
  const admin = io.of(ADMIN_NAMESPACE) as unknown as import('socket.io').Namespace<AdminClientToServerEvents, AdminServerToClientEvents>;
  admin.use((socket, next) => {
    const token = (socket.handshake.auth as { token?: unknown } | undefined)?.token;
    if (typeof token === 'string' && tokenMatches(token, adminToken)) next();
    else next(new Error('unauthorized: the admin token is required'));
  });
  admin.on('connection', (socket) => {
    socket.emit('admin:events', federation.recentEvents());
    socket.emit('admin:snapshot', federation.adminSnapshot());
  });

  let timer: ReturnType<typeof setTimeout> | undefined;
  const push = () => {
    timer = undefined;
    if (admin.sockets.size > 0) admin.emit('admin:snapshot', federation.adminSnapshot());
  };
  const unobserve = federation.observe({
    changed: () => {
      timer ??= setTimeout(push, PUSH_EVERY_MS);
    },
    event: (e) => {
      if (admin.sockets.size > 0) admin.emit('admin:event', e);
    },
  });
  return () => {
    unobserve();
    if (timer) clearTimeout(timer);
  };
}
