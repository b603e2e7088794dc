/**
 * A real S3 protocol server for a test file: s3rver in this process, on a free port, over a temporary
 * folder, with one bucket. It checks a presigned URL's expiry but not its signature (s3rver does not
 * implement SigV4 verification) and serves anonymous GETs, so what it can prove about URLs is that
 * they expire. `requests` records what reached it ("METHOD /path?query"), to tell a multipart upload
 * from a single PUT.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingHttpHeaders, IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';

/** s3rver's one built-in account. */
const S3RVER_KEY = 'S3RVER';

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** The S3_* settings for this server (path style: the test host name has no bucket subdomains). */
  env: Record<string, string>;
  requests: string[];
  /** Calls `listener` with each request as it arrives. */
  onRequest(listener: (methodAndUrl: string, headers: IncomingHttpHeaders) => void): void;
  close(): Promise<void>;
}

export async function startTestS3(bucket = 'images'): Promise<TestS3> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'sdjobs-s3-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket, configs: [] }] });
  let address: AddressInfo;
  try {
    address = await server.run();
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  const requests: string[] = [];
  // s3rver keeps its HTTP server as `httpServer` once running (not in its type declarations).
  const http = (server as unknown as { httpServer: Server }).httpServer;
  const onRequest = (listener: (methodAndUrl: string, headers: IncomingHttpHeaders) => void) =>
    http.on('request', (req: IncomingMessage) => listener(`${req.method} ${req.url}`, req.headers));
  onRequest((r) => requests.push(r));
  const endpoint = `http://127.0.0.1:${address.port}`;
  return {
    endpoint,
    bucket,
    env: {
      S3_ENDPOINT: endpoint,
      S3_REGION: 'us-east-1',
      S3_BUCKET: bucket,
      S3_ACCESS_KEY_ID: S3RVER_KEY,
      S3_SECRET_ACCESS_KEY: S3RVER_KEY,
      S3_FORCE_PATH_STYLE: 'true',
    },
    requests,
    onRequest,
    async close() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
