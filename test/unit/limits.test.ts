/**
 * The pieces of the abuse limits that need no API: the client's address and its key, and the
 * open-stream slots of a process that dies (over a real Redis, a key prefix of its own).
 */
import type http from 'node:http';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { clientIp, ipLimitKey } from '../../src/limits/clientIp';
import { StreamSlots } from '../../src/limits/streamSlots';
import { createLogger } from '../../src/logger';
import { REDIS_URL } from '../helpers/stack';
import { until } from '../helpers/wait';

const request = (peer: string, forwarded?: string | string[]) =>
  ({ socket: { remoteAddress: peer }, headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded } }) as unknown as http.IncomingMessage;

describe('clientIp', () => {
  it('is the peer without TRUST_PROXY, whatever X-Forwarded-For says', () => {
    expect(clientIp(request('10.0.0.5', '203.0.113.1'), 0)).toBe('10.0.0.5');
    expect(clientIp(request('::ffff:10.0.0.5'), 0)).toBe('10.0.0.5');
  });

  it('is the address TRUST_PROXY hops from the right of the chain (header entries, then the peer)', () => {
    expect(clientIp(request('10.0.0.5', '198.51.100.1, 203.0.113.1'), 1)).toBe('203.0.113.1');
    expect(clientIp(request('10.0.0.5', '198.51.100.1, 203.0.113.1'), 2)).toBe('198.51.100.1');
    // Several headers are one list, in order.
    expect(clientIp(request('10.0.0.5', ['198.51.100.1', '203.0.113.1']), 1)).toBe('203.0.113.1');
    // Fewer hops than proxies: the leftmost; no header: the peer.
    expect(clientIp(request('10.0.0.5', '203.0.113.1'), 3)).toBe('203.0.113.1');
    expect(clientIp(request('10.0.0.5'), 1)).toBe('10.0.0.5');
    // Not an address where a trusted proxy wrote one: the peer.
    expect(clientIp(request('10.0.0.5', 'unknown'), 1)).toBe('10.0.0.5');
  });
});

describe('ipLimitKey', () => {
  it('keeps IPv4 addresses and counts IPv6 by /64, however it is written', () => {
    expect(ipLimitKey('203.0.113.7')).toBe('203.0.113.7');
    expect(ipLimitKey('2001:db8:1:2::1')).toBe('2001:db8:1:2::/64');
    expect(ipLimitKey('2001:0DB8:0001:0002:ffff:0:0:9')).toBe('2001:db8:1:2::/64');
    expect(ipLimitKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(ipLimitKey('::1')).toBe('0:0:0:0::/64');
    expect(ipLimitKey('2001:db8:1:3::1')).not.toBe(ipLimitKey('2001:db8:1:2::1'));
  });
});

describe('StreamSlots', () => {
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const log = createLogger('silent');
  const settings = { subscriptionsPerUser: 1, subscriptionsPerProcess: 0, subscriptionHeartbeatMs: 100 };
  const connections: Redis[] = [];
  const open = () => {
    const redis = new Redis(REDIS_URL);
    connections.push(redis);
    return new StreamSlots(redis, prefix, settings, log);
  };
  afterAll(async () => {
    const admin = new Redis(REDIS_URL);
    const keys = await admin.keys(`${prefix}:*`);
    if (keys.length) await admin.del(...keys);
    admin.disconnect();
    for (const c of connections) c.disconnect();
  });

  it('keeps a live process its slot with heartbeats, and frees the slot of one that died', async () => {
    const alive = open();
    const slot = await alive.acquire('u1');
    const other = open();
    // Well past three heartbeats of silence would have been: the heartbeat keeps the slot.
    const key = `${prefix}:limit:streams:u1`;
    const admin = connections[0]!;
    const firstBeat = Number(await admin.zscore(key, (await admin.zrange(key, 0, 0))[0]!));
    await until(async () => Number(await admin.zscore(key, (await admin.zrange(key, 0, 0))[0]!)) > firstBeat + 3 * 100, 'several heartbeats');
    await expect(other.acquire('u1')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    slot.release();
    await until(async () => (await admin.zcard(key)) === 0, 'the released slot to go');

    // A process that dies: its connection drops, nothing is released, no heartbeat comes.
    const doomedRedis = new Redis(REDIS_URL);
    const doomed = new StreamSlots(doomedRedis, prefix, settings, log);
    await doomed.acquire('u2');
    doomedRedis.disconnect();
    await expect(other.acquire('u2')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    let taken = false;
    await until(async () => (taken = await other.acquire('u2').then(() => true, () => false)), 'the dead process\'s slot to go stale');
    expect(taken).toBe(true);
    await Promise.all([alive.close(), other.close(), doomed.close()]);
  });
});
