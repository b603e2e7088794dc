/**
 * The address a request came from, for the limits keyed by client: the socket's peer, or, behind
 * TRUST_PROXY proxies, the address that many hops from the right of X-Forwarded-For.
 *
 * Each proxy appends the peer it saw to X-Forwarded-For, so with N trusted proxies the chain
 * (the header's entries, then our own peer) ends in N addresses written by proxies we trust: the
 * entry N places from its right end was written by the outermost trusted proxy, about its own peer,
 * which is the client. Entries further left came from the client and may be anything. Without
 * TRUST_PROXY the header is ignored: anyone can send one.
 */
import type http from 'node:http';
import net from 'node:net';

/** `::ffff:10.0.0.1` (an IPv4 peer of a dual-stack socket) is 10.0.0.1. */
function plain(address: string): string {
  const a = address.trim();
  return a.toLowerCase().startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

export function clientIp(req: http.IncomingMessage, trustProxy: number): string {
  const peer = plain(req.socket.remoteAddress ?? '');
  if (trustProxy <= 0) return peer || 'unknown';
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const chain = [...forwarded, peer];
  // Fewer hops than proxies (a request that skipped one): the leftmost is the best we know.
  const candidate = plain(chain[Math.max(0, chain.length - 1 - trustProxy)] ?? '');
  // A trusted proxy writes addresses; anything else means the chain is not what TRUST_PROXY says.
  return net.isIP(candidate) ? candidate : peer || 'unknown';
}

/**
 * The key a client's address is counted under: an IPv4 address as it is, an IPv6 address by its
 * /64 (one subscriber usually holds a whole /64, so counting single addresses would let one client
 * pick a fresh address for each attempt).
 */
export function ipLimitKey(ip: string): string {
  if (!net.isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.toLowerCase().split('::', 2);
  const left = head ? head.split(':') : [];
  const right = ip.includes('::') ? (tail ? tail.split(':') : []) : [];
  // An embedded IPv4 tail (::1.2.3.4) is two groups; it never reaches the first four.
  const groups = ip.includes('::') ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
