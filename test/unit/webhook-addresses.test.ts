/**
 * The address rule of webhooks: which IPs a delivery may connect to (IPv4, IPv6, IPv4-mapped IPv6,
 * the metadata services), and names checked after resolution.
 */
import { describe, expect, it } from 'vitest';
import { refusedAddress, resolveReceiver } from '../../src/webhooks/addresses';

describe('refusedAddress', () => {
  it('refuses loopback, private, CGNAT, link-local and reserved IPv4', () => {
    expect(refusedAddress('127.0.0.1')).toBe('loopback');
    expect(refusedAddress('127.255.1.2')).toBe('loopback');
    expect(refusedAddress('10.1.2.3')).toBe('private');
    expect(refusedAddress('172.16.0.1')).toBe('private');
    expect(refusedAddress('172.31.255.255')).toBe('private');
    expect(refusedAddress('192.168.1.1')).toBe('private');
    expect(refusedAddress('100.64.0.1')).toBe('shared (CGNAT)');
    expect(refusedAddress('0.0.0.0')).toBe('unspecified');
    expect(refusedAddress('224.0.0.1')).toBe('multicast');
    expect(refusedAddress('255.255.255.255')).toBe('reserved');
  });

  it('refuses the metadata services of the clouds', () => {
    expect(refusedAddress('169.254.169.254')).toBe('link-local (metadata)');
    expect(refusedAddress('100.100.100.200')).toBe('shared (CGNAT)');
    expect(refusedAddress('192.0.0.192')).toBe('reserved');
    expect(refusedAddress('fd00:ec2::254')).toBe('unique-local');
  });

  it('allows public IPv4, including the neighbours of the private ranges', () => {
    expect(refusedAddress('8.8.8.8')).toBeNull();
    expect(refusedAddress('172.32.0.1')).toBeNull();
    expect(refusedAddress('100.128.0.1')).toBeNull();
    expect(refusedAddress('169.255.0.1')).toBeNull();
    expect(refusedAddress('11.0.0.1')).toBeNull();
  });

  it('refuses loopback, unique-local, link-local and special IPv6, and allows public IPv6', () => {
    expect(refusedAddress('::1')).toBe('loopback');
    expect(refusedAddress('[::1]')).toBe('loopback');
    expect(refusedAddress('::')).toBe('unspecified');
    expect(refusedAddress('fc00::1')).toBe('unique-local');
    expect(refusedAddress('fd12:3456::1')).toBe('unique-local');
    expect(refusedAddress('fe80::1')).toBe('link-local (metadata)');
    expect(refusedAddress('fe80::1%eth0')).toBe('link-local (metadata)');
    expect(refusedAddress('ff02::1')).toBe('multicast');
    expect(refusedAddress('64:ff9b::a9fe:a9fe')).toBe('reserved');
    expect(refusedAddress('2001:4860:4860::8888')).toBeNull();
    expect(refusedAddress('2606:4700::1111')).toBeNull();
  });

  it('judges an IPv4-mapped IPv6 address by the IPv4 address inside', () => {
    expect(refusedAddress('::ffff:127.0.0.1')).toBe('loopback');
    expect(refusedAddress('::ffff:7f00:1')).toBe('loopback');
    expect(refusedAddress('::ffff:169.254.169.254')).toBe('link-local (metadata)');
    expect(refusedAddress('::ffff:a9fe:a9fe')).toBe('link-local (metadata)');
    expect(refusedAddress('0:0:0:0:0:ffff:10.0.0.1')).toBe('private');
    expect(refusedAddress('::ffff:8.8.8.8')).toBeNull();
  });

  it('refuses what is not an IP address', () => {
    expect(refusedAddress('example.com')).toBe('reserved');
    expect(refusedAddress('')).toBe('reserved');
  });
});

describe('resolveReceiver', () => {
  it('checks a name by every address it resolves to', async () => {
    await expect(resolveReceiver('localhost', false)).rejects.toMatchObject({ code: 'WEBHOOK_ADDRESS_REFUSED' });
    await expect(resolveReceiver('127.0.0.1', false)).rejects.toMatchObject({ code: 'WEBHOOK_ADDRESS_REFUSED' });
    await expect(resolveReceiver('[::ffff:169.254.169.254]', false)).rejects.toMatchObject({ code: 'WEBHOOK_ADDRESS_REFUSED' });
  });

  it('lets every address through with allowPrivate (tests and local development)', async () => {
    const found = await resolveReceiver('127.0.0.1', true);
    expect(found).toEqual([{ address: '127.0.0.1', family: 4 }]);
  });

  it('says so when a name does not resolve', async () => {
    await expect(resolveReceiver('no-such-host.invalid', false)).rejects.toMatchObject({ code: 'WEBHOOK_UNRESOLVABLE' });
  });
});
