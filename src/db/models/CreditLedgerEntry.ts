import { Model } from 'objection';

export type CreditKind = 'charge' | 'refund' | 'grant';

/** One change of a user's photo credits (migrations/004_credit_ledger.ts). */
export class CreditLedgerEntry extends Model {
  static override tableName = 'credit_ledger';
  declare id: string;
  declare user_id: string;
  declare kind: CreditKind;
  declare amount: number;
  declare generation_id: string | null;
  declare reason: string | null;
  declare created_at: Date;
}
