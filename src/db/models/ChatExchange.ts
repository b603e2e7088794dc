import { Model } from 'objection';

/** One exchange of a chat: the prompt a user sent a character and the generation that answered it. */
export class ChatExchange extends Model {
  static override tableName = 'chat_exchanges';
  declare id: string;
  declare user_id: string;
  declare character_name: string;
  declare generation_id: string;
  declare prompt: string;
  declare created_at: Date;
}
