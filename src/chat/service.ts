/**
 * What the API reads of the chat history, for the caller alone: one character's exchanges a page
 * at a time, and the characters with their last exchange. Each exchange comes with its
 * generation's images, read for the whole page in one query.
 */
import type { Knex } from 'knex';
import type { AuthUser } from '../auth/tokens';
import { loadImagesOfGenerations } from '../generation/images';
import type { Page, PageRequest } from '../paging';
import type { ProgressImage } from '../progress/event';
import { lastChatExchanges, pageChatExchanges, type ChatExchangeRow } from './history';

export interface ChatExchangeView extends ChatExchangeRow {
  images: ProgressImage[];
}

export interface ChatCharacter {
  name: string;
  lastExchange: ChatExchangeView;
}

export class ChatService {
  constructor(private readonly db: Knex) {}

  async history(user: AuthUser, characterName: string, req: PageRequest): Promise<Page<ChatExchangeView>> {
    const page = await pageChatExchanges(this.db, user.id, characterName, req);
    const views = await this.withImages(page.edges.map((e) => e.node));
    return { ...page, edges: page.edges.map((e, i) => ({ node: views[i]!, cursor: e.cursor })) };
  }

  async characters(user: AuthUser): Promise<ChatCharacter[]> {
    const views = await this.withImages(await lastChatExchanges(this.db, user.id));
    return views.map((lastExchange) => ({ name: lastExchange.character_name, lastExchange }));
  }

  private async withImages(rows: ChatExchangeRow[]): Promise<ChatExchangeView[]> {
    const images = await loadImagesOfGenerations(this.db, rows.map((r) => r.generation_id));
    return rows.map((r) => ({ ...r, images: images.get(r.generation_id) ?? [] }));
  }
}
