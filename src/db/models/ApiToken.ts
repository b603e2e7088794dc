import { Model } from 'objection';
import { User } from './User';

export class ApiToken extends Model {
  static override tableName = 'api_tokens';
  declare id: string;
  declare user_id: string;
  /** sha256 hex of the token; the token itself is shown once and never stored. */
  declare token_hash: string;
  declare name: string;
  declare created_at: Date;
  declare revoked_at: Date | null;
  declare user?: User;

  static override relationMappings = () => ({
    user: {
      relation: Model.BelongsToOneRelation,
      modelClass: User,
      join: { from: 'api_tokens.user_id', to: 'users.id' },
    },
  });
}
