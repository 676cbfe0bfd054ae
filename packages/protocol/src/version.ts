/**
 * The agent protocol's version. Each agent request carries `writ-protocol: N`, the version the
 * agent speaks; each answer on an agent route carries the version the server speaks. A server
 * answers every version from MIN_PROTOCOL_VERSION up: what a later version added is optional in
 * the request (a sync without `lean`, `policy`, `quarantine` or `images` is one of version 1), so
 * an agent one version older keeps working unchanged while its node is upgraded.
 *
 * 1: agents before the header (sync by `since`, `wait`, `bundles`; every later parameter optional).
 * 2: the header itself, both ways.
 */
export const PROTOCOL_VERSION = 2;
export const MIN_PROTOCOL_VERSION = 1;
export const PROTOCOL_HEADER = 'writ-protocol';

/**
 * The version a peer named in its header: absent is 1 (agents and servers from before the
 * header); anything but a whole number from 1 to 999 is taken as absent, never refused, so a
 * garbled header cannot cut an agent off.
 */
export function parseProtocolVersion(header: string | readonly string[] | undefined): number {
  const v = Array.isArray(header) ? header[0] : header;
  return typeof v === 'string' && /^[1-9]\d{0,2}$/.test(v) ? Number(v) : MIN_PROTOCOL_VERSION;
}
