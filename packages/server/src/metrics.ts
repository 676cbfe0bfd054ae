import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The server's metrics, on a registry of its own (several servers can share a process in tests). */
export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  readonly svidsIssued: Counter<'type'>;
  readonly decisions: Counter<'decision' | 'reason'>;
  readonly decisionLatency: Histogram<string>;
  readonly decisionsDropped: Counter<'reporter'>;
  /** Admission webhook answers by hook, decision (allow, deny, skipped) and the strictest mode that applied. */
  readonly admissionReviews: Counter<'hook' | 'decision' | 'mode'>;
  /** `POST /v1/token` answers: granted, or refused with the OAuth error (a closed set). */
  readonly tokenExchanges: Counter<'result'>;
  /** Webhook bodies dropped from a full queue, by event (vulnerability, alert). */
  readonly webhookDropped: Counter<'event'>;
  /** Alerts raised (a new alert, or a repeat counted into one) by rule kind. */
  readonly alerts: Counter<'kind'>;
  /** Automatic quarantines by alert rules: done, or skipped (protected identity, hourly limit). */
  readonly alertResponses: Counter<'result'>;
  /** Per-edge alert state evicted to keep it bounded (least recently seen first). */
  readonly alertEdgeEvictions: Counter<string>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'writ_' });
  return {
    registry,
    httpRequests: new Counter({
      name: 'writ_http_requests_total',
      help: 'HTTP requests by route and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'writ_http_request_duration_seconds',
      help: 'HTTP request latency.',
      labelNames: ['method', 'route'],
      registers: [registry],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    }),
    svidsIssued: new Counter({ name: 'writ_svids_issued_total', help: 'SVIDs signed by the admin API.', labelNames: ['type'], registers: [registry] }),
    tokenExchanges: new Counter({
      name: 'writ_token_exchanges_total',
      help: 'Token exchange answers: granted, or the RFC 6749 error of a refusal.',
      labelNames: ['result'],
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'writ_authz_decisions_total',
      help: 'Authorization decisions reported by enforcement points.',
      labelNames: ['decision', 'reason'],
      registers: [registry],
    }),
    decisionLatency: new Histogram({
      name: 'writ_authz_decision_duration_seconds',
      help: 'Time enforcement points took to decide.',
      registers: [registry],
      buckets: [0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.005],
    }),
    decisionsDropped: new Counter({
      name: 'writ_decision_log_dropped_total',
      help: 'Decisions that did not reach the log: dropped by an enforcement point whose buffer was full, or refused here as malformed.',
      labelNames: ['reporter'],
      registers: [registry],
    }),
    webhookDropped: new Counter({
      name: 'writ_webhook_dropped_total',
      help: 'Webhook bodies dropped because the delivery queue was full, by event.',
      labelNames: ['event'],
      registers: [registry],
    }),
    alerts: new Counter({ name: 'writ_alerts_total', help: 'Alerts raised (new or repeated) by rule kind.', labelNames: ['kind'], registers: [registry] }),
    alertResponses: new Counter({
      name: 'writ_alert_responses_total',
      help: 'Automatic quarantines by alert rules: quarantined, protected (own agents, the server), limited (hourly limit reached), failed.',
      labelNames: ['result'],
      registers: [registry],
    }),
    alertEdgeEvictions: new Counter({
      name: 'writ_alert_edge_evictions_total',
      help: 'Edges whose alert state (deny rate, seen edges) was evicted to keep it bounded.',
      registers: [registry],
    }),
    admissionReviews: new Counter({
      name: 'writ_admission_reviews_total',
      help: 'Admission webhook answers by hook, decision and mode.',
      labelNames: ['hook', 'decision', 'mode'],
      registers: [registry],
    }),
  };
}
