export { WritProxy, parseInbound, parseOutbound, parseHostPort, type Inbound, type Outbound, type ProxyOptions } from './proxy.ts';
