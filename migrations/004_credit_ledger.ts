import type { Knex } from 'knex';

/**
 * The credit ledger: every change of a user's photo credits is a row here, written in the same
 * statement or transaction as the balance (src/credits/ledger.ts, src/db/statements.ts,
 * src/generation/repository.ts), so the balance always equals the sum of the user's rows.
 * - charge: a generation reserved its credits (negative), one per generation;
 * - refund: a generation that failed or was cancelled gave them back (positive), one per
 *   generation: the unique key below makes a second refund impossible, whatever the code does;
 * - grant: credits given (or taken) by an operator or an admin, or at sign-up, with a reason.
 * Users that exist already get one grant row with their balance as it stands ("balance before the
 * ledger"), so the rule holds from the first day.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('credit_ledger', (t) => {
    t.bigIncrements('id').primary();
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.text('kind').notNullable();
    t.integer('amount').notNullable();
    // RESTRICT: deleting a generation must not silently take money rows (and the balance rule) with it.
    t.uuid('generation_id').references('generations.id').onDelete('RESTRICT');
    t.text('reason');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // A user's history, newest first (me { creditHistory }, paged by (created_at, id)).
    t.index(['user_id', 'created_at', 'id']);
  });
  await knex.raw(`ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_kind CHECK (kind IN ('charge', 'refund', 'grant'))`);
  // Charges and refunds belong to a generation; grants do not.
  await knex.raw(`ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_generation CHECK ((kind = 'grant') = (generation_id IS NULL))`);
  await knex.raw(`ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_sign CHECK (kind = 'grant' OR (kind = 'charge') = (amount < 0))`);
  // One charge and at most one refund per generation.
  await knex.raw(`CREATE UNIQUE INDEX credit_ledger_one_per_generation ON credit_ledger (generation_id, kind) WHERE generation_id IS NOT NULL`);
  await knex.raw(
    `INSERT INTO credit_ledger (user_id, kind, amount, reason, created_at)
     SELECT id, 'grant', photo_credits, 'balance before the ledger', now() FROM users WHERE photo_credits <> 0`,
  );
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward only');
}
