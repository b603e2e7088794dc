import { Model } from 'objection';
import type { GenerationStatus } from '../../generation/lifecycle';
import type { GenerationInput } from '../../generation/input';

export class Generation extends Model {
  static override tableName = 'generations';
  declare id: string;
  declare user_id: string;
  declare status: GenerationStatus;
  declare input: GenerationInput;
  declare credits_reserved: number;
  declare attempts: number;
  declare progress: number;
  declare error_code: string | null;
  declare error_message: string | null;
  declare error_retryable: boolean | null;
  declare refunded_at: Date | null;
  declare created_at: Date;
  declare started_at: Date | null;
  declare finished_at: Date | null;
  declare updated_at: Date;
  /** startDeadlineSeconds after the insert (Postgres's clock): still QUEUED then, it is CANCELLED with DEADLINE_EXCEEDED. */
  declare start_deadline_at: Date | null;
}
