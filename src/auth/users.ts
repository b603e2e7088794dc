/** What the API tells about users: their public profile, their photo credits and their ledger. */
import type { Knex } from 'knex';
import { creditHistory, grantCredits, type CreditEntry } from '../credits/ledger';
import type { Page, PageRequest } from '../paging';
import { inOrderOf } from '../db/inOrderOf';
import { User } from '../db/models';
import { DomainError } from '../errors';
import { parseUuid } from '../ids';
import type { Logger } from '../logger';
import type { AuthUser } from './tokens';

export interface UserProfile {
  id: string;
  email: string;
  /** The requester proved to be this user in the same operation (signIn), without a token yet. */
  viewer?: boolean;
}

export class UserService {
  constructor(
    private readonly db: Knex,
    /** Admin actions are logged with who did them. */
    private readonly log: Logger,
  ) {}

  async profile(id: string): Promise<UserProfile | null> {
    return (await this.profiles([id]))[0] ?? null;
  }

  /** Each user's profile (null for a user that is gone), in one query however many. */
  async profiles(ids: readonly string[]): Promise<Array<UserProfile | null>> {
    const rows = await User.query(this.db).findByIds([...ids]).select('id', 'email');
    return inOrderOf(ids, rows, (r) => r.id, (r): UserProfile | null => ({ id: r.id, email: r.email }), null);
  }

  /** Each user's photo credits left now (each image of a batch costs one; 0 for a user that is gone), in one query however many. */
  async creditsOf(ids: readonly string[]): Promise<number[]> {
    const rows = await User.query(this.db).findByIds([...ids]).select('id', 'photo_credits');
    return inOrderOf(ids, rows, (r) => r.id, (r) => r.photo_credits, 0);
  }

  /** The user's ledger, newest first. */
  creditHistory(userId: string, req: PageRequest): Promise<Page<CreditEntry>> {
    return creditHistory(this.db, userId, req);
  }

  /** Admins only: adds (or, negative, takes) credits with a reason; returns the user's profile. */
  async grantCredits(actor: AuthUser, userId: string, amount: number, reason: string): Promise<UserProfile> {
    if (!actor.isAdmin) throw new DomainError('FORBIDDEN', 'Only an admin may grant photo credits.');
    const id = parseUuid(userId);
    const profile = id ? await this.profile(id) : null;
    if (!id || !profile || (await grantCredits(this.db, id, amount, reason)) === null) {
      throw new DomainError('NOT_FOUND', `User ${userId} was not found.`);
    }
    this.log.info({ admin: actor.id, adminEmail: actor.email, action: 'grantPhotoCredits', target: id, amount, reason }, 'admin granted photo credits');
    return profile;
  }
}
