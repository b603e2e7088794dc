/**
 * The Standard Webhooks signature (standardwebhooks.com): `webhook-signature` is `v1,` and the
 * base64 HMAC-SHA256 of `${webhook-id}.${webhook-timestamp}.${body}`, keyed with the bytes the
 * secret's base64 part decodes to (after `whsec_`). Any receiver library of the spec verifies it.
 */
import { createHmac, randomBytes } from 'node:crypto';

const SECRET_PREFIX = 'whsec_';
/** 24 random bytes: the spec asks for 24 to 64. */
const SECRET_BYTES = 24;

export const newWebhookSecret = (): string => `${SECRET_PREFIX}${randomBytes(SECRET_BYTES).toString('base64')}`;

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

/** The three headers of one try; the timestamp is the try's own (receivers refuse one older than about 5 minutes). */
export function signWebhook(secret: string, webhookId: string, body: string, now = new Date()): SignedHeaders {
  const timestamp = String(Math.floor(now.getTime() / 1000));
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
  const signature = createHmac('sha256', key).update(`${webhookId}.${timestamp}.${body}`).digest('base64');
  return { 'webhook-id': webhookId, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` };
}
