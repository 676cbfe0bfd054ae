/**
 * The wire messages of `writ.broker.v1.TokenBroker/Exchange` (packages/sdk/proto/writ_broker.proto)
 * and the error a refused exchange rejects with. Shared by the SDK client and the agent.
 */
import { GrpcError } from './grpc.ts';
import { Writer, fields } from './proto.ts';

export const TOKEN_BROKER_EXCHANGE = '/writ.broker.v1.TokenBroker/Exchange';

export type ExchangeTokenType = 'jwt' | 'txn_token';

export interface ExchangeRequestMessage {
  readonly audience: string;
  readonly scope: readonly string[];
  readonly requestedTokenType: string;
  readonly subjectToken: string;
  readonly actorToken: string;
  readonly requestContext: string;
  readonly requestDetails: string;
  readonly spiffeId: string;
}

export interface ExchangeResponseMessage {
  readonly token: string;
  /** Seconds since the epoch. */
  readonly expiresAt: number;
  readonly scope: readonly string[];
  readonly tokenType: string;
  readonly cached: boolean;
}

export function encodeExchangeRequest(m: Partial<ExchangeRequestMessage>): Buffer {
  const w = new Writer().string(1, m.audience);
  for (const s of m.scope ?? []) w.string(2, s);
  return w
    .string(3, m.requestedTokenType)
    .string(4, m.subjectToken)
    .string(5, m.actorToken)
    .string(6, m.requestContext)
    .string(7, m.requestDetails)
    .string(8, m.spiffeId)
    .finish();
}

export function decodeExchangeRequest(buf: Buffer): ExchangeRequestMessage {
  const out = {
    audience: '',
    scope: [] as string[],
    requestedTokenType: '',
    subjectToken: '',
    actorToken: '',
    requestContext: '',
    requestDetails: '',
    spiffeId: '',
  };
  const names = ['', 'audience', 'scope', 'requestedTokenType', 'subjectToken', 'actorToken', 'requestContext', 'requestDetails', 'spiffeId'] as const;
  for (const f of fields(buf)) {
    if (f.wire !== 2 || f.field < 1 || f.field > 8) continue;
    const name = names[f.field]!;
    const v = f.data.toString('utf8');
    if (name === 'scope') out.scope.push(v);
    else if (name !== '') out[name] = v;
  }
  return out;
}

export function encodeExchangeResponse(m: ExchangeResponseMessage): Buffer {
  const w = new Writer().string(1, m.token).enumValue(2, Math.max(0, Math.floor(m.expiresAt)));
  for (const s of m.scope) w.string(3, s);
  w.string(4, m.tokenType);
  if (m.cached) w.bool(5, true);
  return w.finish();
}

export function decodeExchangeResponse(buf: Buffer): ExchangeResponseMessage {
  let token = '';
  let expiresAt = 0;
  const scope: string[] = [];
  let tokenType = '';
  let cached = false;
  for (const f of fields(buf)) {
    if (f.field === 1 && f.wire === 2) token = f.data.toString('utf8');
    else if (f.field === 2 && f.wire === 0) expiresAt = f.int;
    else if (f.field === 3 && f.wire === 2) scope.push(f.data.toString('utf8'));
    else if (f.field === 4 && f.wire === 2) tokenType = f.data.toString('utf8');
    else if (f.field === 5 && f.wire === 0) cached = f.int !== 0;
  }
  return { token, expiresAt, scope, tokenType, cached };
}

/** The gRPC status message of a refusal: "OAUTH_ERROR: description [ERR_CODE]". */
export function refusalMessage(error: string, description: string, code: string): string {
  return `${error}: ${description}${code ? ` [${code}]` : ''}`;
}

/**
 * A refused token exchange: the gRPC `code` (GRPC_STATUS), and when the server decided, the
 * RFC 6749 `error` (`invalid_scope`, `access_denied`, ...) and Writ's `writCode`
 * (`ERR_TOKEN_SCOPE_INVALID`, ...).
 */
export class TokenExchangeError extends GrpcError {
  override name = 'TokenExchangeError';
  readonly error: string;
  readonly writCode: string;
  constructor(code: number, details: string) {
    super(code, details);
    const m = /^([a-z_]+): (.*?)(?: \[(ERR_[A-Z0-9_]+)\])?$/s.exec(details);
    this.error = m?.[1] ?? '';
    this.writCode = m?.[3] ?? '';
  }

  static from(err: unknown): unknown {
    return err instanceof GrpcError && !(err instanceof TokenExchangeError) ? new TokenExchangeError(err.code, err.details) : err;
  }
}
