/**
 * Post-processed images between the generation job and the upload job: staged durably in Postgres
 * (the upload may run on another machine), then stored and recorded once.
 */
import type { Knex } from 'knex';
import type { ProgressImage } from '../progress/event';
import { PHASE_PROGRESS, TERMINAL_STATUSES, TRANSITIONS } from './lifecycle';
import { refusedTransition, type GenerationRow } from './repository';

export interface StagedImage {
  index: number;
  webp: Buffer;
  thumbnail: Buffer;
  width: number;
  height: number;
  blurhash: string;
  seed: number | null;
  sha256: string;
}

/** An image as recorded: its storage keys, not URLs (the API signs URLs per answer). */
export interface StoredImage {
  index: number;
  storageKey: string;
  thumbnailKey: string;
  width: number;
  height: number;
  blurhash: string;
  seed: number | null;
  sha256: string;
  bytes: number;
}

/**
 * Stages the files and takes the `stage` transition (UPLOADING) in one transaction; re-staging
 * overwrites. False when the generation is already final; IllegalTransitionError from a status
 * that does not allow it.
 */
export async function stageImagesForUpload(db: Knex, generationId: string, images: StagedImage[]): Promise<boolean> {
  const staged = await db.transaction(async (trx) => {
    const moved = await trx('generations')
      .where({ id: generationId })
      .whereIn('status', TRANSITIONS.stage.from)
      .update({
        status: TRANSITIONS.stage.to,
        progress: trx.raw('GREATEST(progress, ?)', [PHASE_PROGRESS.uploading]),
        updated_at: trx.fn.now(),
      });
    if (moved === 0) return false;
    await trx('staged_images')
      .insert(
        images.map((i) => ({
          generation_id: generationId,
          index: i.index,
          webp: i.webp,
          thumbnail: i.thumbnail,
          width: i.width,
          height: i.height,
          blurhash: i.blurhash,
          seed: i.seed,
          sha256: i.sha256,
        })),
      )
      .onConflict(['generation_id', 'index'])
      .merge();
    return true;
  });
  return staged || refusedTransition(db, generationId, 'stage').then(() => false);
}

/** Drops a generation's staged images (it ended without them being stored). */
export async function discardStagedImages(db: Knex, generationId: string): Promise<void> {
  await db('staged_images').where({ generation_id: generationId }).delete();
}

/**
 * Drops the staged images of every generation that has ended: a cancel or failure that raced the
 * staging transaction, or a worker that died between staging and queuing the upload. Returns the
 * number of generations whose images were dropped.
 */
export async function discardEndedStagedImages(db: Knex): Promise<number> {
  const ended = db('generations').select('id').whereIn('status', [...TERMINAL_STATUSES]).whereIn('id', db('staged_images').distinct('generation_id'));
  const rows: Array<{ generation_id: string }> = await db('staged_images').whereIn('generation_id', ended).delete().returning('generation_id');
  return new Set(rows.map((r) => r.generation_id)).size;
}

export async function hasStagedImages(db: Knex, generationId: string): Promise<boolean> {
  return Boolean(await db('staged_images').where({ generation_id: generationId }).first('index'));
}

export async function loadStagedImages(db: Knex, generationId: string): Promise<StagedImage[]> {
  const rows = await db('staged_images').where({ generation_id: generationId }).orderBy('index');
  return rows.map((r: Record<string, unknown>) => ({
    index: r.index as number,
    webp: r.webp as Buffer,
    thumbnail: r.thumbnail as Buffer,
    width: r.width as number,
    height: r.height as number,
    blurhash: r.blurhash as string,
    seed: (r.seed as number | null) ?? null,
    sha256: r.sha256 as string,
  }));
}

/**
 * Records the stored images, takes the `succeed` transition and drops the staged copies, in one
 * transaction. Returns the final row, or null when the generation had already ended (e.g. cancelled).
 */
export async function completeGeneration(
  db: Knex,
  generationId: string,
  images: StoredImage[],
): Promise<GenerationRow | null> {
  const completed = await db.transaction(async (trx) => {
    const [row] = (await trx('generations')
      .where({ id: generationId })
      .whereIn('status', TRANSITIONS.succeed.from)
      .update({ status: TRANSITIONS.succeed.to, progress: PHASE_PROGRESS.succeeded, finished_at: trx.fn.now(), updated_at: trx.fn.now() })
      .returning('*')) as GenerationRow[];
    if (!row) return null;
    await trx('generated_images')
      .insert(
        images.map((i) => ({
          generation_id: generationId,
          index: i.index,
          storage_key: i.storageKey,
          thumbnail_key: i.thumbnailKey,
          width: i.width,
          height: i.height,
          blurhash: i.blurhash,
          seed: i.seed,
          sha256: i.sha256,
          bytes: i.bytes,
        })),
      )
      .onConflict(['generation_id', 'index'])
      .ignore();
    await trx('staged_images').where({ generation_id: generationId }).delete();
    return row;
  });
  return completed ?? refusedTransition(db, generationId, 'succeed');
}

export async function loadGenerationImages(db: Knex, generationId: string): Promise<ProgressImage[]> {
  const rows = await db('generated_images').where({ generation_id: generationId }).orderBy('index');
  return rows.map(toProgressImage);
}

/** The images of several generations in one query (a page of a list), by generation id, in index order. */
export async function loadImagesOfGenerations(db: Knex, generationIds: readonly string[]): Promise<Map<string, ProgressImage[]>> {
  const byGeneration = new Map(generationIds.map((id) => [id, [] as ProgressImage[]]));
  if (generationIds.length === 0) return byGeneration;
  const rows = await db('generated_images').whereIn('generation_id', generationIds).orderBy(['generation_id', 'index']);
  for (const r of rows as Array<Record<string, unknown>>) byGeneration.get(r.generation_id as string)?.push(toProgressImage(r));
  return byGeneration;
}

function toProgressImage(r: Record<string, unknown>): ProgressImage {
  return {
    key: r.storage_key as string,
    thumbnailKey: r.thumbnail_key as string,
    width: r.width as number,
    height: r.height as number,
    blurhash: r.blurhash as string,
    seed: (r.seed as number | null) ?? null,
  };
}
