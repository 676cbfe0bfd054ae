/** The agent API's routes, as both sides name them. */
export const AGENT_PATHS = {
  attestJoinToken: '/v1/agent/attest/join-token',
  attestPsat: '/v1/agent/attest/k8s-psat',
  sync: '/v1/agent/sync',
  svids: '/v1/agent/svids',
  jwtSvid: '/v1/agent/jwt-svid',
  renew: '/v1/agent/renew',
  /** Body: a protobuf `writ.authz.v1.ReportRequest` (its codecs: `encodeReport` / `decodeReport` in @writ/sdk's decision-log.ts). */
  decisions: '/v1/agent/decisions',
  /** Body: `WorkloadsMessage` (workloads.ts), the whole snapshot of what the agent runs. */
  workloads: '/v1/agent/workloads',
} as const;

/** The decision report's content type (JSON `{decisions, dropped}` is still taken from agents of earlier versions). */
export const DECISION_REPORT_TYPE = 'application/x-protobuf';
