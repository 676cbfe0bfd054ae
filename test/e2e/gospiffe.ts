/**
 * test/go/gospiffe (go-spiffe, the SPIFFE reference library, as a workload) run by the e2e tests as
 * another uid: one-shot commands that print one JSON line, and long-running ones whose JSON lines
 * are read as they come.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, run, type RunResult } from './helpers.ts';

export const GOSPIFFE = join(ROOT, 'test/go/bin/gospiffe');

export interface GoResult {
  readonly code: number | null;
  /** Its last line, parsed. */
  readonly out: Record<string, unknown>;
  readonly raw: RunResult;
}

const asUid = (uid: number, socket: string, args: string[]): string[] => [
  `--reuid=${uid}`,
  `--regid=${uid}`,
  '--clear-groups',
  GOSPIFFE,
  args[0]!,
  '-socket',
  socket,
  ...args.slice(1),
];

/** `gospiffe ARGS` as `uid` against the Workload API at `socket`: its last JSON line. */
export async function gospiffe(uid: number, socket: string, args: string[], input?: string): Promise<GoResult> {
  const raw = await run('setpriv', asUid(uid, socket, args), { timeoutMs: 90_000, ...(input !== undefined ? { input } : {}) });
  try {
    return { code: raw.code, out: JSON.parse(raw.stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>, raw };
  } catch {
    return assert.fail(`gospiffe ${args.join(' ')} printed no JSON (exit ${raw.code}): ${raw.stdout}${raw.stderr}`);
  }
}

/**
 * A long-running `gospiffe ARGS` as `uid` (pushed to `children`, which the test stops): resolves with
 * its JSON lines so far once one satisfies `ready`; rejects when it exits first or prints a non-JSON line.
 */
export function spawnGospiffe(
  uid: number,
  socket: string,
  args: string[],
  children: ChildProcess[],
  ready: (line: Record<string, string>) => boolean,
): Promise<{ child: ChildProcess; lines: Array<Record<string, string>> }> {
  const child = spawn('setpriv', asUid(uid, socket, args), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const lines: Array<Record<string, string>> = [];
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let line: Record<string, string>;
        try {
          line = JSON.parse(text) as Record<string, string>;
        } catch {
          return reject(new Error(`gospiffe ${args[0]} printed a line that is not JSON: ${text}`));
        }
        lines.push(line);
        if (ready(line)) resolve({ child, lines });
      }
    });
    child.once('exit', (code) => reject(new Error(`gospiffe ${args[0]} exited ${code}: ${JSON.stringify(lines)} ${err}`)));
  });
}
