import { WritError } from './errors.ts';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration such as `90s`, `5m`, `1h30m`, `7d` into milliseconds. A bare number is seconds.
 * Zero, negative and values above `maxMs` are rejected with ERR_DURATION_INVALID naming `field`.
 */
export function parseDuration(input: string | number, field: string, maxMs = 366 * 86_400_000, minMs = 1000): number {
  let ms: number;
  if (typeof input === 'number') ms = input * 1000;
  else if (typeof input === 'string' && /^\d+$/.test(input.trim())) ms = Number(input.trim()) * 1000;
  else if (typeof input === 'string' && /^(\d+(ms|s|m|h|d))+$/.test(input.trim()) && input.length <= 32) {
    ms = 0;
    for (const m of input.trim().matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  } else {
    throw new WritError('ERR_DURATION_INVALID', `${field}: ${JSON.stringify(String(input).slice(0, 40))} is not a duration (e.g. 90s, 5m, 1h, 7d)`, { field });
  }
  if (!Number.isFinite(ms) || ms < minMs) throw new WritError('ERR_DURATION_INVALID', `${field}: must be at least ${formatDuration(minMs)}`, { field });
  if (ms > maxMs) throw new WritError('ERR_DURATION_INVALID', `${field}: must be at most ${formatDuration(maxMs)}`, { field });
  return ms;
}

export function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
