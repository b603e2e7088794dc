/**
 * A receiver URL as a client gives it (generateImage's webhookUrl, updateWebhookSettings): its
 * syntax checked at the edge (zod), its address checked here after DNS resolution, so a URL that
 * could never be delivered to is refused when it is given (BAD_USER_INPUT on `webhookUrl`), not a
 * day of retries later. The worker checks again at each try (the name may resolve elsewhere by then).
 */
import { z } from 'zod';
import { DomainError } from '../errors';
import { resolveReceiver, WebhookAddressError } from './addresses';

/** Longer URLs are refused: a receiver's address, not a place for data. */
export const WEBHOOK_URL_MAX_LENGTH = 2048;

export const webhookUrlSchema = z
  .string()
  .trim()
  .max(WEBHOOK_URL_MAX_LENGTH, `webhookUrl must be at most ${WEBHOOK_URL_MAX_LENGTH} characters`)
  .refine((v) => {
    try {
      const u = new URL(v);
      return (u.protocol === 'https:' || u.protocol === 'http:') && u.hostname !== '' && !u.username && !u.password;
    } catch {
      return false;
    }
  }, 'webhookUrl must be an http:// or https:// URL without user:password');

/** Refuses (BAD_USER_INPUT on `webhookUrl`) a URL whose host is, or resolves to, an address webhooks may not go to. */
export async function checkReceiverUrl(url: string, allowPrivate: boolean): Promise<void> {
  try {
    await resolveReceiver(new URL(url).hostname, allowPrivate);
  } catch (err) {
    if (err instanceof WebhookAddressError) throw new DomainError('BAD_USER_INPUT', err.message, { field: 'webhookUrl' });
    throw err;
  }
}
