/**
 * Objection models: one per table the code reads or writes through them, and the one row type of
 * that table (`ModelObject<Model>`). The hot statements that bypass Objection (prepared, measured in
 * bench/) still return these row types.
 */
export { User } from './User';
export { Generation } from './Generation';
export { CreditLedgerEntry, type CreditKind } from './CreditLedgerEntry';
export { ChatExchange } from './ChatExchange';
