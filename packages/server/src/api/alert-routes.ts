/** Alerts (issue 15, section 3): list, show, acknowledge, and undo what a rule's response did. */
import { WritError } from '@writ/spiffe';
import { ALERT_STATES, type AlertState } from '../store/types.ts';
import { alertJson } from '../alerts/service.ts';
import type { ApiContext } from './context.ts';
import { integerParam, ok, stringParam, type AddRoute } from './http.ts';

const ID = /^[A-Za-z0-9-]{1,64}$/;

export function alertRoutes(ctx: ApiContext, add: AddRoute): void {
  const alerts = () => {
    if (!ctx.alerts) throw new WritError('ERR_NOT_FOUND', 'alerts are not running on this server');
    return ctx.alerts;
  };
  const idParam = (raw: string): string => {
    const id = decodeURIComponent(raw);
    if (!ID.test(id)) throw new WritError('ERR_FIELD_INVALID', 'id must be an alert ID (letters, digits and -, at most 64)', { field: 'id' });
    return id;
  };

  add(
    'GET',
    '/v1/alerts',
    'viewer',
    'Alerts, the most recently seen first (?rule=NAME&state=open|acked&limit=, default 100): each with its rule, kind, key, how often it occurred within the rule window (count), what fired it (details) and what its response did.',
    async (req) => {
      const rule = req.query.get('rule') ?? undefined;
      const state = req.query.get('state') ?? undefined;
      if (state !== undefined && !(ALERT_STATES as readonly string[]).includes(state))
        throw new WritError('ERR_FIELD_INVALID', `state must be one of ${ALERT_STATES.join(', ')}`, { field: 'state' });
      const limit = Number(req.query.get('limit') ?? 100);
      const rows = await alerts().list({ ...(rule ? { rule } : {}), ...(state ? { state: state as AlertState } : {}), limit });
      return ok({ alerts: rows.map(alertJson) });
    },
    undefined,
    { rule: stringParam(253), state: stringParam(10), limit: integerParam(1, 10_000) },
  );

  add('GET', '/v1/alerts/{id}', 'viewer', 'One alert.', async (req) => {
    const id = idParam(req.params[0]!);
    const a = await ctx.store.getAlert(id);
    if (!a) throw new WritError('ERR_NOT_FOUND', `no alert ${id}`);
    return ok(alertJson(a));
  });

  add(
    'POST',
    '/v1/alerts/{id}/ack',
    'operator',
    'Acknowledge an alert: it leaves the open list, and a later occurrence of its rule and key opens a new alert. Acknowledging it again keeps the first acknowledgement.',
    async (req) => ok(alertJson(await alerts().ack(idParam(req.params[0]!), req.role ?? 'operator'))),
  );

  add(
    'POST',
    '/v1/alerts/{id}/undo',
    'operator',
    "Undo what the alert's response did: lift the quarantine it wrote (unless another quarantine of that identity replaced it since) and record who undid it. `lifted` says whether a quarantine was lifted; undoing again changes nothing. 409 ERR_ALERT_NO_RESPONSE when its rule did nothing.",
    async (req) => {
      const { alert, lifted } = await alerts().undo(idParam(req.params[0]!), req.role ?? 'operator');
      return ok({ alert: alertJson(alert), lifted });
    },
  );
}
