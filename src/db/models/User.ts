import { Model } from 'objection';

export class User extends Model {
  static override tableName = 'users';
  declare id: string;
  declare email: string;
  declare photo_credits: number;
  declare is_admin: boolean;
  declare created_at: Date;
  declare updated_at: Date;
}
