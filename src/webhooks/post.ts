/**
 * One try of a webhook: a POST to a checked address (./addresses), bounded by WEBHOOK_TIMEOUT_MS
 * from the start of the connection to the end of the answer. Redirects are not followed (a 3xx
 * could point anywhere, including where the address rule forbids), so the answer is judged as it
 * is. What the answer means for the delivery (done, retry, stop) is the error table's
 * (src/jobs/errors.ts); this only reports what happened.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { pinnedLookup, resolveReceiver, WebhookAddressError } from './addresses';

/** Bytes of a receiver's answer that are read (and dropped); a longer one is cut off. */
const MAX_RESPONSE_BYTES = 64 * 1024;

export interface WebhookPost {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  allowPrivate: boolean;
  signal?: AbortSignal;
}

/** A try that got no HTTP answer: refused address, no connection, timeout. */
export class WebhookPostError extends Error {
  override name = 'WebhookPostError';
  constructor(
    readonly code: 'WEBHOOK_ADDRESS_REFUSED' | 'WEBHOOK_UNRESOLVABLE' | 'WEBHOOK_UNREACHABLE' | 'WEBHOOK_TIMEOUT',
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Resolves with the answer's status code (whatever it is); rejects with a WebhookPostError when there is none. */
export async function postWebhook(p: WebhookPost): Promise<number> {
  const url = new URL(p.url);
  // Node does not call `lookup` for an IP literal: check it here.
  if (isIP(url.hostname.replace(/^\[|\]$/g, ''))) {
    await resolveReceiver(url.hostname, p.allowPrivate).catch((err: WebhookAddressError) => {
      throw new WebhookPostError(err.code, err.message);
    });
  }
  const client = url.protocol === 'https:' ? https : http;
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const fail = (err: WebhookPostError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      p.signal?.removeEventListener('abort', onAbort);
      req.destroy();
      reject(err);
    };
    const req = client.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(p.body), ...p.headers },
        lookup: pinnedLookup(p.allowPrivate),
        // A fresh connection per try: a pooled one could outlive the address check it was made under.
        agent: false,
      },
      (res) => {
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_RESPONSE_BYTES) res.destroy();
        });
        const done = () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          p.signal?.removeEventListener('abort', onAbort);
          resolve(res.statusCode ?? 0);
        };
        res.on('end', done);
        res.on('close', done);
        res.on('error', done);
      },
    );
    const timer = setTimeout(() => fail(new WebhookPostError('WEBHOOK_TIMEOUT', `The receiver did not answer within ${p.timeoutMs} ms.`)), p.timeoutMs);
    const onAbort = () => fail(new WebhookPostError('WEBHOOK_UNREACHABLE', 'The delivery was stopped.'));
    if (p.signal?.aborted) onAbort();
    p.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code;
      if (code === 'WEBHOOK_ADDRESS_REFUSED' || code === 'WEBHOOK_UNRESOLVABLE') fail(new WebhookPostError(code, err.message));
      else fail(new WebhookPostError('WEBHOOK_UNREACHABLE', `The receiver could not be reached (${err.code ?? err.message}).`, { cause: err }));
    });
    req.end(p.body);
  });
}
