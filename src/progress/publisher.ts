/**
 * Publishing a generation's state: one atomic Lua script assigns the next `seq`, keeps `progress`
 * from going back, refuses anything after a terminal state, stores the snapshot (expiring after
 * RESULT_EXPIRES_S) and PUBLISHes it, so the snapshot and the live message never disagree.
 */
import type { Redis } from 'ioredis';
import { isTerminal } from '../generation/lifecycle';
import { RedisScript } from '../redis';
import type { ProgressEvent, ProgressUpdate } from './event';
import { progressChannel, progressKey } from './event';

const PUBLISH_LUA = `
local cur = redis.call('HMGET', KEYS[1], 'seq', 'progress', 'final', 'status', 'dedupe')
if cur[3] == '1' then return false end
if ARGV[6] == '1' and cur[4] and cur[4] ~= 'QUEUED' then return false end
if ARGV[7] ~= '' and cur[5] == ARGV[7] then return false end
local seq = (tonumber(cur[1]) or 0) + 1
local p = tonumber(ARGV[2])
local prev = tonumber(cur[2]) or 0
if prev > p then p = prev end
local data = '{"seq":' .. seq .. ',"progress":' .. p .. ',' .. string.sub(ARGV[4], 2)
redis.call('HSET', KEYS[1], 'seq', seq, 'progress', p, 'final', ARGV[3], 'status', ARGV[1], 'dedupe', ARGV[7], 'data', data)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], data)
return data
`;

/** The field ARGV[1] of each key's hash, or nil where there is none: one call for many snapshots. */
const FIELD_OF_EACH_LUA = `
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[1]) end
return out
`;

/** Keys: the snapshot, the channel. Arguments: status, progress, final, body, ttl, onlyIfQueued, dedupe. */
const PUBLISH = new RedisScript<string | null>(PUBLISH_LUA, 2);
/** The count of keys, the keys, then the field to read. */
const FIELD_OF_EACH = new RedisScript<Array<string | null>>(FIELD_OF_EACH_LUA);

export interface PublishOptions {
  /** Apply only while the generation is still QUEUED (queue-position updates must not undo a start). */
  onlyIfQueued?: boolean;
  /** Skip when the last published update had the same dedupe key (e.g. an unchanged queue position). */
  dedupe?: string;
}

export class ProgressPublisher {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly expiresS: number,
  ) {}

  /** Returns the event as stored, or null when it was refused (after a terminal state, or deduped). */
  async publish(update: ProgressUpdate | ProgressEvent, opts: PublishOptions = {}): Promise<ProgressEvent | null> {
    // seq and progress are the script's to set; a seq passed along from an earlier event is dropped.
    const { progress, seq: _ignored, ...rest } = update as ProgressEvent;
    const body = JSON.stringify(rest);
    const stored = await PUBLISH.run(
      this.redis,
      progressKey(this.prefix, update.generationId),
      progressChannel(this.prefix, update.generationId),
      update.status,
      String(Math.min(1, Math.max(0, progress))),
      isTerminal(update.status) ? '1' : '0',
      body,
      String(this.expiresS),
      opts.onlyIfQueued ? '1' : '0',
      opts.dedupe ?? '',
    );
    return stored ? (JSON.parse(stored) as ProgressEvent) : null;
  }

  /** Whether the generation's snapshot holds a terminal state (e.g. its owner cancelled it). */
  async isFinal(generationId: string): Promise<boolean> {
    return (await this.redis.hget(progressKey(this.prefix, generationId), 'final')) === '1';
  }

  /** The seq of each generation's snapshot (null where there is none), in one Redis call. */
  async readSeqs(generationIds: readonly string[]): Promise<Array<number | null>> {
    const seqs = await this.fieldOfEach(generationIds, 'seq');
    return seqs.map((seq) => (seq === null ? null : Number(seq)));
  }

  async read(generationId: string): Promise<ProgressEvent | null> {
    const [event] = await this.readMany([generationId]);
    return event ?? null;
  }

  /** Each generation's snapshot (null where there is none), in one Redis call however many. */
  async readMany(generationIds: readonly string[]): Promise<Array<ProgressEvent | null>> {
    const data = await this.fieldOfEach(generationIds, 'data');
    return data.map((d) => (d === null ? null : (JSON.parse(d) as ProgressEvent)));
  }

  private async fieldOfEach(generationIds: readonly string[], field: 'seq' | 'data'): Promise<Array<string | null>> {
    if (generationIds.length === 0) return [];
    const keys = generationIds.map((id) => progressKey(this.prefix, id));
    const values = await FIELD_OF_EACH.run(this.redis, keys.length, ...keys, field);
    return generationIds.map((_id, i) => values[i] ?? null);
  }
}
