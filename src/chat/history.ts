/**
 * The chat history: a succeeded generation that names a character (the old service's
 * `character_name`) is one exchange of the chat with that character, the user's prompt and the
 * images that answered it. A generation without a character belongs to no chat and is not saved
 * (it is still listed by `generations`). The exchange references its generation; its images are
 * the generation's `generated_images` rows, read when it is shown.
 */
import type { Knex } from 'knex';
import type { ModelObject } from 'objection';
import type { ChatExchange } from '../db/models';
import type { GenerationRow } from '../generation/repository';
import { pageQuery, toPage, type Page, type PageRequest } from '../paging';

/** A row of `chat_exchanges`. */
export type ChatExchangeRow = ModelObject<ChatExchange>;

/** The character whose chat a generation belongs to, or null when it belongs to none. */
export const chatCharacterOf = (generation: GenerationRow): string | null =>
  generation.status === 'SUCCEEDED' ? generation.input.characterName : null;

/**
 * Saves a succeeded generation as an exchange of its character's chat, once: the exchange is unique
 * per generation, so a job that runs twice (re-delivered, or queued again by a re-delivered upload)
 * leaves one. Returns the exchange, or null when an earlier run saved it (or there is no character).
 * It is dated when the images were ready, however late the job runs.
 */
export async function saveChatExchange(db: Knex, generation: GenerationRow): Promise<ChatExchangeRow | null> {
  const character = chatCharacterOf(generation);
  if (!character) return null;
  const [saved] = (await db('chat_exchanges')
    .insert({
      user_id: generation.user_id,
      character_name: character,
      generation_id: generation.id,
      prompt: generation.input.prompt,
      // Read in SQL, to the microsecond: the row's JavaScript Date keeps only milliseconds.
      created_at: db.raw('COALESCE((SELECT finished_at FROM generations WHERE id = ?), now())', [generation.id]),
    })
    .onConflict('generation_id')
    .ignore()
    .returning('*')) as ChatExchangeRow[];
  return saved ?? null;
}

/** One page of a user's chat with a character, newest first. */
export async function pageChatExchanges(db: Knex, userId: string, characterName: string, req: PageRequest): Promise<Page<ChatExchangeRow>> {
  const rows = (await pageQuery(db, 'chat_exchanges', req, 'chat').where({ user_id: userId, character_name: characterName })) as Array<
    ChatExchangeRow & { cursor_at: string }
  >;
  return toPage('chat', req, rows);
}

/** The last exchange of each of a user's characters, the most recent chat first. */
export async function lastChatExchanges(db: Knex, userId: string): Promise<ChatExchangeRow[]> {
  const rows = (await db('chat_exchanges')
    .distinctOn('character_name')
    .where({ user_id: userId })
    .orderBy([
      { column: 'character_name' },
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])) as ChatExchangeRow[];
  return rows.sort((a, b) => b.created_at.getTime() - a.created_at.getTime() || (a.id < b.id ? 1 : -1));
}
