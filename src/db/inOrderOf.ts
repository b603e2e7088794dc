/**
 * Lines up rows read for several ids (`WHERE id IN (…)`, in no order, each id at most once) with
 * the ids asked for: one entry per id, in the same order, `missing` where no row had that id.
 * What a batch lookup returns, so a DataLoader can hand each caller its own.
 */
export function inOrderOf<R, V>(
  ids: readonly string[],
  rows: readonly R[],
  idOf: (row: R) => string,
  valueOf: (row: R) => V,
  missing: V,
): V[] {
  const byId = new Map(rows.map((r) => [idOf(r), r]));
  return ids.map((id) => {
    const row = byId.get(id);
    return row === undefined ? missing : valueOf(row);
  });
}

/** Groups rows by an id (e.g. a user's tokens by user): one list per id asked for, in the same order, empty where none. */
export function groupedInOrderOf<R, V>(ids: readonly string[], rows: readonly R[], idOf: (row: R) => string, valueOf: (row: R) => V): V[][] {
  const byId = new Map(ids.map((id) => [id, [] as V[]]));
  for (const r of rows) byId.get(idOf(r))?.push(valueOf(r));
  return ids.map((id) => byId.get(id)!);
}
