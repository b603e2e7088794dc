#!/usr/bin/env node
/// <reference types="node" />
/**
 * The command line on the client library:
 *
 *   npm run generate -- "a lighthouse at dusk" --steps 30 --out ./images
 *   sd-jobs "a lighthouse at dusk" --json          (the package's bin)
 *
 * On a terminal a progress bar redraws one line (status, step n/N, queue position, ETA); into a pipe
 * or a file it prints one plain line per state. The images are written to --out. Ctrl-C cancels the
 * generation (its credits go back) and exits 130; a generation that does not succeed, or an error
 * from the service, exits 1 with the error's code.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient, SdJobsError, type GenerateImageInput, type Progress } from './index.js';

const USAGE = `usage: sd-jobs "<prompt>" [options]        (in the repository: npm run generate -- "<prompt>" [options])

  --steps N           sampling steps (default 20)
  --width N, --height N   image size, multiples of 8 (default 512)
  --batch-size N      images in one generation, one credit each (default 1)
  --seed N            -1 for random (default)
  --negative TEXT     negative prompt
  --sampler NAME      e.g. "Euler a" (default)
  --cfg-scale N       (default 7)
  --character NAME    save the result in this character's chat history
  --out DIR           where to write the images (default: the current folder)
  --json              print the result as JSON (no progress)
  --url URL           the service (default SD_JOBS_URL, else http://localhost:4000)
  --token TOKEN       an API token (default SD_JOBS_TOKEN)
  --help

Exit codes: 0 done, 1 the generation or the service failed (the code is printed), 2 bad usage,
130 cancelled with Ctrl-C.`;

/** Thrown for a bad command line: printed with the usage, exit code 2. */
class UsageError extends Error {}

const BAR_WIDTH = 24;
const DEFAULT_COLUMNS = 100;

function parseCommandLine(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        steps: { type: 'string' },
        width: { type: 'string' },
        height: { type: 'string' },
        'batch-size': { type: 'string' },
        seed: { type: 'string' },
        negative: { type: 'string' },
        sampler: { type: 'string' },
        'cfg-scale': { type: 'string' },
        character: { type: 'string' },
        out: { type: 'string' },
        json: { type: 'boolean', default: false },
        url: { type: 'string' },
        token: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) return { help: true as const };
  if (positionals.length !== 1 || !positionals[0]!.trim()) throw new UsageError('give the prompt as one argument (quote it)');
  const number = (name: string, raw: string | undefined) => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, not ${JSON.stringify(raw)}`);
    return n;
  };
  const input: GenerateImageInput = {
    prompt: positionals[0]!,
    steps: number('steps', values.steps),
    width: number('width', values.width),
    height: number('height', values.height),
    batchSize: number('batch-size', values['batch-size']),
    seed: number('seed', values.seed),
    cfgScale: number('cfg-scale', values['cfg-scale']),
    negativePrompt: values.negative,
    sampler: values.sampler,
    characterName: values.character,
  };
  for (const key of Object.keys(input) as Array<keyof GenerateImageInput>) if (input[key] === undefined) delete input[key];
  const token = values.token ?? process.env.SD_JOBS_TOKEN;
  if (!token) throw new UsageError('give an API token with --token or SD_JOBS_TOKEN');
  return {
    help: false as const,
    input,
    url: values.url ?? process.env.SD_JOBS_URL ?? 'http://localhost:4000',
    token,
    out: values.out ?? '.',
    json: values.json,
  };
}

const seconds = (s: number | null | undefined) => (s === null || s === undefined ? '' : s >= 90 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);

/** What a state says, in words: status, step n/N, queue position, ETA. */
function describe(p: Progress): string {
  const parts: string[] = [p.status];
  if (p.status === 'QUEUED' && p.queuePosition) parts.push(`#${p.queuePosition} in the queue`);
  if (p.totalSteps) parts.push(`step ${p.step ?? 0}/${p.totalSteps}`);
  if (p.etaSeconds !== null && p.etaSeconds !== undefined && !['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(p.status)) parts.push(`ETA ${seconds(p.etaSeconds)}`);
  if (p.error) parts.push(`${p.error.code}: ${p.error.message}`);
  return parts.join('  ');
}

function bar(progress: number): string {
  const filled = Math.round(Math.max(0, Math.min(1, progress)) * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(Math.round(progress * 100)).padStart(3)}%`;
}

/** Shows progress: a redrawn bar on a terminal, one line per change of status elsewhere. */
function progressView(stream: NodeJS.WriteStream) {
  let lastStatus = '';
  return {
    show(p: Progress) {
      if (stream.isTTY) {
        // A terminal that reports no size (0 columns, as under `script`) is taken as 100 wide.
        const width = stream.columns > 0 ? stream.columns : DEFAULT_COLUMNS;
        const line = `${bar(p.progress)}  ${describe(p)}`;
        // Cut to the terminal's width (a wrapped line cannot be redrawn) and padded over the last one.
        stream.write(`\r${line.slice(0, width - 1).padEnd(Math.min(width, DEFAULT_COLUMNS) - 1)}`);
      } else if (p.status !== lastStatus) {
        stream.write(`${describe(p)}\n`);
      }
      lastStatus = p.status;
    },
    end() {
      if (stream.isTTY && lastStatus) stream.write('\n');
    },
  };
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`sd-jobs: ${err.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const client = createClient({ url: options.url, token: options.token });
  const abort = new AbortController();
  let interrupted = false;
  const onInterrupt = () => {
    // The first Ctrl-C cancels the generation; a second one leaves at once.
    if (interrupted) process.exit(130);
    interrupted = true;
    abort.abort(new SdJobsError('CANCELLED', 'Cancelled with Ctrl-C.'));
  };
  process.on('SIGINT', onInterrupt);
  const view = options.json ? null : progressView(process.stdout);
  try {
    const done = await client.generate(options.input, { signal: abort.signal, onProgress: (p) => view?.show(p) });
    view?.end();
    await mkdir(options.out, { recursive: true });
    const files: string[] = [];
    for (const [index, image] of done.images.entries()) {
      const response = await fetch(image.url, { signal: abort.signal });
      if (!response.ok) throw new SdJobsError('DOWNLOAD_FAILED', `Image ${index} answered HTTP ${response.status}.`);
      const file = path.join(options.out, `${done.generationId}-${index}.webp`);
      await writeFile(file, Buffer.from(await response.arrayBuffer()));
      files.push(file);
    }
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ id: done.generationId, status: done.status, images: done.images.map((image, i) => ({ ...image, file: files[i] })) }, null, 2)}\n`);
    } else {
      for (const file of files) process.stdout.write(`${file}\n`);
    }
    return 0;
  } catch (err) {
    view?.end();
    if (interrupted) {
      process.stderr.write('sd-jobs: cancelled\n');
      return 130;
    }
    const code = err instanceof SdJobsError ? err.code : 'ERROR';
    const message = err instanceof Error ? err.message : String(err);
    if (options.json) process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
    process.stderr.write(`sd-jobs: ${code}: ${message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`sd-jobs: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
