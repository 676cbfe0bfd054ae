/**
 * Alerts (issue 15, section 3): `writ alerts list|ack|undo`. Rules are AlertRule documents in the
 * policy set (`writ policy apply`); the server evaluates them (docs/alerts.md).
 */
import { Option, type Command } from 'commander';
import type { ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

type ClientOf = (cmd: Command) => { api: ApiClient; format: Format };

interface AlertJson {
  id: string;
  rule: string;
  kind: string;
  key: string;
  state: string;
  count: number;
  firstAt: string;
  lastAt: string;
  ackedBy: string | null;
  ackedAt: string | null;
  details: Record<string, unknown>;
  response: { quarantined: string; expiresAt: string | null; undoneAt: string | null; undoneBy: string | null } | null;
}

const responseText = (a: AlertJson): string =>
  !a.response ? '-' : a.response.undoneAt ? `quarantined ${a.response.quarantined} (undone)` : `quarantined ${a.response.quarantined}`;

export function registerAlerts(program: Command, clientOf: ClientOf): void {
  const alerts = program.command('alerts').description('alerts raised by AlertRule documents: list, acknowledge, undo an automatic quarantine');
  alerts
    .command('list')
    .description('alerts, most recently seen first: rule, kind, what fired it, how often (within the rule window), state, what its response did')
    .option('--rule <name>', 'only this rule')
    .addOption(new Option('--state <state>', 'only alerts in this state').choices(['open', 'acked']))
    .option('--limit <n>', 'at most this many', '100')
    .action(async (f: { rule?: string; state?: string; limit: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const q = new URLSearchParams({ limit: f.limit });
      if (f.rule) q.set('rule', f.rule);
      if (f.state) q.set('state', f.state);
      const res = await api.call<{ alerts: AlertJson[] }>('GET', `/v1/alerts?${q}`);
      print(format, res.alerts, () => ({
        head: ['ID', 'RULE', 'KIND', 'KEY', 'COUNT', 'STATE', 'LAST', 'RESPONSE'],
        body: res.alerts.map((a) => [a.id, a.rule, a.kind, a.key, String(a.count), a.state, a.lastAt, responseText(a)]),
      }));
    });
  alerts
    .command('ack')
    .description('acknowledge an alert: it leaves the open list; a later occurrence opens a new one')
    .argument('<id>', 'the alert ID (writ alerts list)')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const a = await api.call<AlertJson>('POST', `/v1/alerts/${encodeURIComponent(id)}/ack`);
      if (format !== 'table') print(format, a);
      else process.stderr.write(`alert ${a.id} acknowledged by ${a.ackedBy} at ${a.ackedAt}\n`);
    });
  alerts
    .command('undo')
    .description("undo what an alert's response did: lift the quarantine it wrote (an operator's quarantine written since stays)")
    .argument('<id>', 'the alert ID (writ alerts list)')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ alert: AlertJson; lifted: boolean }>('POST', `/v1/alerts/${encodeURIComponent(id)}/undo`);
      if (format !== 'table') print(format, res);
      else
        process.stderr.write(
          res.lifted
            ? `lifted the quarantine of ${res.alert.response?.quarantined} (alert ${res.alert.id})\n`
            : `nothing lifted: the quarantine of ${res.alert.response?.quarantined} is no longer the one alert ${res.alert.id} wrote (undone before, expired, or replaced)\n`,
        );
    });
}
