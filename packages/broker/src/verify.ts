/**
 * The receiving side alone (`@writ/broker/verify`): verifying a Writ-issued access or transaction
 * token, without the request parser or the TokenPolicy reader (and so without YAML), for the SDK
 * middleware and the proxy.
 */
export { BROKER_ERROR_CODES, TokenError, type BrokerErrorCode, type OAuthError } from './errors.ts';
export { MAX_DEPTH_LIMIT } from './limits.ts';
export {
  ACCESS_TOKEN_TYP,
  DEFAULT_TOKEN_LEEWAY_SECONDS,
  TXN_TOKEN_TYP,
  actorsOf,
  verifyToken,
  type VerifiedToken,
  type VerifyTokenOptions,
} from './tokens.ts';
