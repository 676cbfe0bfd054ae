export {
  GRPC_STATUS, GrpcError, GrpcClient, ServerCall, Deframer, acceptUnaryRequest, frame, parseEndpoint, encodeGrpcMessage, decodeGrpcMessage,
  DEFAULT_MAX_MESSAGE_BYTES, type GrpcStatus,
} from './grpc.ts';
export {
  ProtoError, Writer, fields, encodeStruct, decodeStruct,
  encodeX509SvidResponse, decodeX509SvidResponse, encodeX509BundlesResponse, decodeX509BundlesResponse,
  encodeJwtSvidRequest, decodeJwtSvidRequest, encodeJwtSvidResponse, decodeJwtSvidResponse,
  encodeJwtBundlesResponse, decodeJwtBundlesResponse, encodeValidateJwtSvidRequest, decodeValidateJwtSvidRequest,
  encodeValidateJwtSvidResponse, decodeValidateJwtSvidResponse,
  type X509Svid, type X509SvidResponse, type X509BundlesResponse, type JwtSvidRequest, type JwtSvid, type JwtBundlesResponse,
  type ValidateJwtSvidRequest, type ValidateJwtSvidResponse,
} from './proto.ts';
export { WorkloadClient, type X509Context, type RetryOptions } from './workload-client.ts';
export { BundleSet, X509Source, JwtSource, validateJwtSvid, type SourceOptions } from './sources.ts';
export { createMtlsServer, mtlsConnect, authorizeAny, authorizeId, authorizeMemberOf, verifyPeer, peerChain, peerIdOf, type Authorizer, type MtlsServerOptions, type MtlsConnectOptions } from './tls.ts';
export { splitDer, toX509Context, type X509SvidItem } from './workload-client.ts';
export { JwtSvidValidator, type ValidatedJwtSvid } from '@writ/spiffe';
export { LocalPolicy, writMiddleware, writFastify, authorizeRequest, type MiddlewareOptions, type WritRequestInfo } from './authz.ts';
export { DecisionReporter, DECISION_LIMITS, decisionShape, decodeDecision, decodeReport, encodeDecision, encodeReport, newDecisionId, readReport, type DecisionShape, type ReportedDecision } from './decision-log.ts';
export { ReportBuffer, type FailedMessage } from './report-buffer.ts';
