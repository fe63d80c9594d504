/**
 * The device registry: what the dashboard shows of each device (its claims at hello, what it
 * reports while it works, its last round's accuracies) and which global model it holds, for delta
 * downloads. Round state — who is selected, who answered — is the coordinator's, not kept here.
 */
import type { DeviceInfo } from '../shared/api.ts';
import { deviceQuality } from '../shared/data-quality.ts';
import { populationOf } from '../shared/personalize.ts';
import { dataQualityRulesSchema, type DataQualityRules, type DeviceHello, type StateReport, type UpdateMetrics } from '../shared/schemas.ts';

const DEFAULT_RULES = dataQualityRulesSchema.parse({});

/** disconnected devices stay listed (as disconnected) this long */
export const FORGET_AFTER_MS = 10 * 60_000;

export class DeviceRegistry {
  private readonly devices = new Map<string, DeviceInfo>();

  join(hello: DeviceHello, now: number): void {
    const prev = this.devices.get(hello.deviceId);
    this.devices.set(hello.deviceId, {
      id: hello.deviceId,
      backend: hello.backend,
      backendReason: hello.backendReason,
      examples: hello.examples,
      heldOut: hello.heldOut,
      labelHistogram: hello.labelHistogram,
      state: 'idle',
      progress: null,
      loss: null,
      connected: true,
      joinedAt: prev?.connected ? prev.joinedAt : now,
      lastSeen: now,
      rounds: prev?.rounds ?? 0,
      lastAccuracyBefore: prev?.lastAccuracyBefore ?? null,
      lastAccuracyAfter: prev?.lastAccuracyAfter ?? null,
      modelVersion: hello.modelVersion || null,
      quality: hello.quality ? { examples: hello.examples, ...hello.quality, integrity: null } : null,
      qualityFlags: [],
      qualityAction: null,
      monitor: null,
    });
  }

  /** Marks a device disconnected (and forgets those gone for long); false when it was not known. */
  leave(id: string, now: number): boolean {
    const info = this.devices.get(id);
    if (!info) return false;
    info.connected = false;
    info.lastSeen = now;
    for (const [other, d] of this.devices) if (!d.connected && now - d.lastSeen > FORGET_AFTER_MS) this.devices.delete(other);
    return true;
  }

  report(id: string, report: StateReport, now: number): void {
    const info = this.devices.get(id);
    if (!info) return;
    info.state = report.state;
    info.progress = report.progress ?? null;
    info.loss = report.loss ?? info.loss;
    if (report.modelVersion !== undefined) info.modelVersion = report.modelVersion || null;
    info.lastSeen = now;
  }

  selected(ids: readonly string[]): void {
    for (const id of ids) {
      const info = this.devices.get(id);
      if (info) info.state = 'selected';
    }
  }

  /** A device's update counted in a round. */
  counted(id: string, metrics: UpdateMetrics): void {
    const info = this.devices.get(id);
    if (!info) return;
    info.rounds += 1;
    info.lastAccuracyBefore = metrics.accuracyBefore;
    info.lastAccuracyAfter = metrics.accuracyAfter;
  }

  /** the global model version the device says it holds */
  heldVersion(id: string): number | null {
    return this.devices.get(id)?.modelVersion ?? null;
  }

  isConnected(id: string): boolean {
    return this.devices.get(id)?.connected ?? false;
  }

  /** The devices, with their data's integrity against the connected devices' population and the scores below the rules (the run's, or the defaults). */
  list(includeDisconnected = false, rules: DataQualityRules = DEFAULT_RULES, monitored?: { flagged: readonly string[]; quarantine: boolean }): DeviceInfo[] {
    const connected = [...this.devices.values()].filter((d) => d.connected);
    const population = populationOf(connected.map((d) => d.labelHistogram));
    return [...this.devices.values()]
      .filter((d) => includeDisconnected || d.connected)
      .map((d) => {
        const { integrity, flags } = deviceQuality(rules, d.quality ?? undefined, d.labelHistogram, population);
        const quality = d.quality ? { ...d.quality, integrity } : null;
        return { ...d, quality, qualityFlags: flags, qualityAction: flags.length ? rules.action : null, monitor: monitored?.flagged.includes(d.id) ? (monitored.quarantine ? 'quarantined' : 'flagged') : null };
      });
  }

  connectedCount(): number {
    let n = 0;
    for (const d of this.devices.values()) if (d.connected) n++;
    return n;
  }
}
