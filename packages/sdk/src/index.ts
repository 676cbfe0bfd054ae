// What a service author uses. The agent's, server's and proxy's plumbing (the gRPC layer, wire
// codecs, the decision log's encoding) is in ./internal.ts, an entry point that is not published.
export {
  WorkloadClient,
  type X509Context,
  type X509SvidItem,
  type RetryOptions,
  type ExchangeTokenOptions,
  type ExchangedToken,
} from './workload-client.ts';
export { TokenExchangeError, type ExchangeTokenType } from './token-exchange.ts';
export { BundleSet, X509Source, JwtSource, validateJwtSvid, type SourceOptions, type SourceWait } from './sources.ts';
export type { JwtSvid } from './proto.ts';
export {
  createMtlsServer,
  mtlsConnect,
  authorizeAny,
  authorizeId,
  authorizeMemberOf,
  type Authorizer,
  type MtlsServerOptions,
  type MtlsConnectOptions,
} from './tls.ts';
export { JwtSvidValidator, type ValidatedJwtSvid } from '@writ/spiffe';
export { LocalPolicy, writMiddleware, writFastify, authorizeRequest, type MiddlewareOptions, type WritRequestInfo } from './authz.ts';
export { requireToken, type TokenOptions, type RequireTokenOptions } from './authz.ts';
export { DecisionReporter, type ReportedDecision } from './decision-log.ts';
// The errors the Workload API client rejects with, so a caller can `switch (err.code)`.
export { GrpcError, GRPC_STATUS, type GrpcStatus } from './grpc.ts';
