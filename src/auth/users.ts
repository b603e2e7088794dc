/** What the API tells about users: their public profile and their photo credits. */
import type { Knex } from 'knex';
import { User } from '../db/models';

export interface UserProfile {
  id: string;
  email: string;
}

export class UserService {
  constructor(private readonly db: Knex) {}

  async profile(id: string): Promise<UserProfile | null> {
    const row = await User.query(this.db).findById(id).select('id', 'email');
    return row ? { id: row.id, email: row.email } : null;
  }

  /** Photo credits left now (each image of a batch costs one); 0 for a user that is gone. */
  async credits(id: string): Promise<number> {
    const row = await User.query(this.db).findById(id).select('photo_credits');
    return row?.photo_credits ?? 0;
  }
}
