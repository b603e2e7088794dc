/** Small answers of the node:http servers (the API's routes outside GraphQL, a worker's health port). */
import type http from 'node:http';

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/** Why a request body was not read whole. */
export class BodyError extends Error {
  override name = 'BodyError';
  constructor(readonly reason: 'too-large' | 'cut-short', message: string) {
    super(message);
  }
}

/**
 * A request's body, at most `maxBytes`: refused by its Content-Length before a byte is read when it
 * says more, else as soon as more arrives (the rest is not buffered; answer with `connection:
 * close` so the connection is dropped). Rejects with a BodyError.
 */
export function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  const tooLarge = () => new BodyError('too-large', `The request body is larger than ${maxBytes} bytes.`);
  if (Number(req.headers['content-length'] ?? 0) > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.pause();
        reject(tooLarge());
      } else chunks.push(c);
    });
    let ended = false;
    req.on('end', () => {
      ended = true;
      resolve(Buffer.concat(chunks));
    });
    // An upload the client aborted errors ('aborted') before it closes: the same cut-short body.
    req.on('error', () => {
      if (!ended) reject(new BodyError('cut-short', 'The request body was cut short.'));
    });
    // Before 'end', the client hung up (and hears no answer).
    req.on('close', () => {
      if (!ended) reject(new BodyError('cut-short', 'The request body was cut short.'));
    });
  });
}
