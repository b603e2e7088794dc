/**
 * Which addresses a webhook may be sent to. A receiver URL is the client's to choose, so without
 * this rule the worker would POST wherever a client points it: at the cloud's metadata service
 * (169.254.169.254, which hands out credentials), at Redis or Postgres on loopback, or at anything
 * on the private network. Refused: loopback, RFC 1918 private, CGNAT (100.64/10, where Alibaba's
 * metadata service lives), link-local (the metadata services), unique-local IPv6 (AWS's IPv6
 * metadata address is one), and the unspecified, multicast, reserved and translation ranges.
 * IPv4-mapped IPv6 addresses (::ffff:10.0.0.1) are judged by the IPv4 address they carry.
 *
 * Names are checked after DNS resolution, every address a name resolves to, and the connection is
 * made to an address that was checked (`pinnedLookup`): a name cannot resolve to a public address
 * for the check and to a private one for the connection. WEBHOOK_ALLOW_PRIVATE lifts the rule, for
 * tests and local development (a receiver on 127.0.0.1).
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';

export type RefusedKind = 'unspecified' | 'loopback' | 'private' | 'shared (CGNAT)' | 'link-local (metadata)' | 'unique-local' | 'multicast' | 'reserved';

const IPV4_RANGES: ReadonlyArray<readonly [string, number, RefusedKind]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared (CGNAT)'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local (metadata)'],
  ['172.16.0.0', 12, 'private'],
  // IETF protocol assignments; Oracle Cloud's metadata service is 192.0.0.192.
  ['192.0.0.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'reserved'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];

const IPV6_RANGES: ReadonlyArray<readonly [string, number, RefusedKind]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  // IPv4-compatible addresses (deprecated): ::a.b.c.d.
  ['::', 96, 'reserved'],
  // NAT64 and IPv4/IPv6 translation: the IPv4 address inside could be anything.
  ['64:ff9b::', 96, 'reserved'],
  ['64:ff9b:1::', 48, 'reserved'],
  ['fc00::', 7, 'unique-local'],
  ['fe80::', 10, 'link-local (metadata)'],
  ['fec0::', 10, 'reserved'],
  ['ff00::', 8, 'multicast'],
];

const ranges = new Map<RefusedKind, BlockList>();
for (const [network, prefix, kind] of [...IPV4_RANGES, ...IPV6_RANGES]) {
  let list = ranges.get(kind);
  if (!list) ranges.set(kind, (list = new BlockList()));
  list.addSubnet(network, prefix, isIP(network) === 4 ? 'ipv4' : 'ipv6');
}

/** The IPv4 address an IPv4-mapped IPv6 address carries (::ffff:a.b.c.d or ::ffff:7f00:1), else null. */
function mappedIpv4(ip: string): string | null {
  const m = /^(?:0{0,4}:){0,5}:?ffff:(.+)$/i.exec(ip);
  if (!m) return null;
  const rest = m[1]!;
  if (isIP(rest) === 4) return rest;
  const hex = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(rest);
  if (!hex) return null;
  const hi = parseInt(hex[1]!, 16);
  const lo = parseInt(hex[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Why a webhook may not go to this IP address, or null when it may. Anything that is not an IP is refused. */
export function refusedAddress(ip: string): RefusedKind | null {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(bare);
  if (family === 0) return 'reserved';
  if (family === 6) {
    const v4 = mappedIpv4(bare);
    if (v4) return refusedAddress(v4);
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [kind, list] of ranges) if (list.check(bare, type)) return kind;
  return null;
}

/** A receiver's host that resolves (or is) an address webhooks may not go to, or that does not resolve. */
export class WebhookAddressError extends Error {
  override name = 'WebhookAddressError';
  constructor(
    readonly code: 'WEBHOOK_ADDRESS_REFUSED' | 'WEBHOOK_UNRESOLVABLE',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Host lookups run on libuv's small thread pool (shared with file I/O, password hashing and image
 * work) and have no timeout of their own: a receiver whose DNS never answers must not be able to
 * take that pool. So at most this many webhook lookups run at once in a process, and each is given
 * up after LOOKUP_TIMEOUT_MS (its thread finishes by itself; the slot is kept until it does).
 */
const LOOKUP_CONCURRENCY = 2;
const LOOKUP_TIMEOUT_MS = 5000;
let lookupsRunning = 0;
const lookupQueue: Array<() => void> = [];

function lookupAll(host: string): Promise<LookupAddress[]> {
  return new Promise<LookupAddress[]>((resolve, reject) => {
    // Counted from the call: a lookup waiting for a slot times out too.
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(Object.assign(new Error('lookup timed out'), { code: 'ETIMEOUT' }));
    }, LOOKUP_TIMEOUT_MS);
    const run = () => {
      if (settled) {
        lookupQueue.shift()?.();
        return;
      }
      lookupsRunning++;
      dnsLookup(host, { all: true, verbatim: true }, (err, found) => {
        lookupsRunning--;
        lookupQueue.shift()?.();
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve(found);
      });
    };
    if (lookupsRunning < LOOKUP_CONCURRENCY) run();
    else lookupQueue.push(run);
  });
}

/**
 * Every address `host` resolves to (or the literal itself), each checked; throws WebhookAddressError.
 * Its messages name the rule, never the address a name resolved to (that would map internal DNS).
 */
export async function resolveReceiver(host: string, allowPrivate: boolean): Promise<LookupAddress[]> {
  const bare = host.replace(/^\[|\]$/g, '');
  const family = isIP(bare);
  const addresses: LookupAddress[] = family
    ? [{ address: bare, family }]
    : await lookupAll(bare).catch((err: NodeJS.ErrnoException) => {
        throw new WebhookAddressError('WEBHOOK_UNRESOLVABLE', `The webhook host ${host} does not resolve (${err.code ?? 'no answer'}).`);
      });
  if (addresses.length === 0) throw new WebhookAddressError('WEBHOOK_UNRESOLVABLE', `The webhook host ${host} has no address.`);
  if (!allowPrivate) {
    for (const { address } of addresses) {
      const kind = refusedAddress(address);
      if (kind) throw new WebhookAddressError('WEBHOOK_ADDRESS_REFUSED', `Webhooks are not sent to ${kind} addresses (${host}).`);
    }
  }
  return addresses;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http.request that resolves through `resolveReceiver` and hands the socket only the
 * addresses it checked: the connection goes to a checked address, never to a second resolution.
 * (Node skips `lookup` for an IP literal host: the caller checks literals itself.)
 */
export function pinnedLookup(allowPrivate: boolean) {
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback): void => {
    resolveReceiver(hostname, allowPrivate).then(
      (addresses) => (options.all ? callback(null, addresses) : callback(null, addresses[0]!.address, addresses[0]!.family)),
      (err: Error) => callback(Object.assign(err, { code: (err as WebhookAddressError).code }), ''),
    );
  };
}
