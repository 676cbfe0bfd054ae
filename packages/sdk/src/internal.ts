// `@writ/sdk/internal`: what the agent, the server and the proxy share with the SDK (the gRPC
// layer on node:http2, the Workload API and decision log codecs). Not published (scripts/pack.mjs
// packs index.ts only); no compatibility promise.
export {
  GRPC_STATUS,
  GrpcError,
  GrpcClient,
  ServerCall,
  Deframer,
  acceptUnaryRequest,
  frame,
  parseEndpoint,
  encodeGrpcMessage,
  decodeGrpcMessage,
  DEFAULT_MAX_MESSAGE_BYTES,
  type GrpcStatus,
} from './grpc.ts';
export {
  ProtoError,
  Writer,
  fields,
  encodeStruct,
  decodeStruct,
  encodeX509SvidResponse,
  decodeX509SvidResponse,
  encodeX509BundlesResponse,
  decodeX509BundlesResponse,
  encodeJwtSvidRequest,
  decodeJwtSvidRequest,
  encodeJwtSvidResponse,
  decodeJwtSvidResponse,
  encodeJwtBundlesResponse,
  decodeJwtBundlesResponse,
  encodeValidateJwtSvidRequest,
  decodeValidateJwtSvidRequest,
  encodeValidateJwtSvidResponse,
  decodeValidateJwtSvidResponse,
  type X509Svid,
  type X509SvidResponse,
  type X509BundlesResponse,
  type JwtSvidRequest,
  type JwtSvid,
  type JwtBundlesResponse,
  type ValidateJwtSvidRequest,
  type ValidateJwtSvidResponse,
} from './proto.ts';
export { splitDer, toX509Context } from './workload-client.ts';
export {
  TOKEN_BROKER_EXCHANGE,
  decodeExchangeRequest,
  encodeExchangeResponse,
  refusalMessage,
  type ExchangeRequestMessage,
  type ExchangeResponseMessage,
} from './token-exchange.ts';
export { verifyPeer, peerChain, peerIdOf } from './tls.ts';
export {
  DECISION_LIMITS,
  decisionShape,
  decodeDecision,
  decodeReport,
  encodeDecision,
  encodeReport,
  newDecisionId,
  readReport,
  type DecisionShape,
  type ReportedDecision,
} from './decision-log.ts';
export { ReportBuffer, type FailedMessage } from './report-buffer.ts';
export {
  enforce,
  httpRefusal,
  grpcRefusal,
  pathRefusal,
  requestPath,
  parseCheckAction,
  readToken,
  tokenRefusal,
  type TokenRead,
  type TokenRejection,
  type ReceivedToken,
  type TokenVerifier,
  type Enforced,
  type EnforcerOptions,
  type DecisionLogEntry,
  type HttpRefusal,
} from './enforce.ts';
export { HealthServer, processMetrics, renderMetrics, type HealthOptions, type MetricFamily, type MetricSample } from './health.ts';
