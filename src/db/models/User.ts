import { Model } from 'objection';

export class User extends Model {
  static override tableName = 'users';
  declare id: string;
  declare email: string;
  declare photo_credits: number;
  declare is_admin: boolean;
  /** Argon2id (PHC string); null for users made by an operator, who sign in with API tokens only. */
  declare password_hash: string | null;
  declare email_verified_at: Date | null;
  declare notify_images_ready: boolean;
  declare created_at: Date;
  declare updated_at: Date;
}
