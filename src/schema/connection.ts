/**
 * Relay connections (edges, node, cursor, pageInfo) over the keyset pages of src/paging.ts, and the
 * `first` / `after` arguments every list takes, checked at the edge.
 */
import type { ArgBuilder, ObjectRef } from '@pothos/core';
import { afterSchema, DEFAULT_PAGE_SIZE, firstSchema, pageRequest, type Cursor, type CursorList, type Page, type PageRequest } from '../paging';
import type { Builder, BuilderTypes } from './builder';

export function addConnectionTypes(builder: Builder, pageSizeMax: number) {
  const PageInfo = builder.objectRef<Page<unknown>>('PageInfo').implement({
    fields: (t) => ({
      hasNextPage: t.exposeBoolean('hasNextPage'),
      hasPreviousPage: t.exposeBoolean('hasPreviousPage', { description: 'True when `after` was given (this list pages forward only).' }),
      startCursor: t.string({ nullable: true, resolve: (p) => p.edges[0]?.cursor ?? null }),
      endCursor: t.string({ nullable: true, resolve: (p) => p.edges.at(-1)?.cursor ?? null }),
    }),
  });

  /** `<name>Connection` and `<name>Edge` for nodes of type `node`. */
  function connection<T>(name: string, node: ObjectRef<BuilderTypes, T>) {
    const Edge = builder.objectRef<Page<T>['edges'][number]>(`${name}Edge`).implement({
      fields: (t) => ({
        node: t.expose('node', { type: node }),
        cursor: t.exposeString('cursor', { description: 'Opaque: pass it as `after` for the items that follow this one.' }),
      }),
    });
    return builder.objectRef<Page<T>>(`${name}Connection`).implement({
      fields: (t) => ({
        edges: t.field({ type: [Edge], resolve: (p) => p.edges }),
        pageInfo: t.field({ type: PageInfo, resolve: (p) => p }),
      }),
    });
  }

  /** The paging arguments of a list; each arrives checked when given (`after` decoded). */
  function pageArgs(arg: ArgBuilder<BuilderTypes>, list: CursorList) {
    return {
      first: arg.int({ description: `Items in this page: 0..${pageSizeMax} (PAGE_SIZE_MAX), default ${Math.min(DEFAULT_PAGE_SIZE, pageSizeMax)}.` }).validate(firstSchema(pageSizeMax)),
      after: arg.string({ description: 'Where the previous page ended (its pageInfo.endCursor, or any edge\'s cursor): this page holds the items after it.' }).validate(afterSchema(list)),
    };
  }

  /** The page the checked arguments ask for. */
  const page = (args: { first?: number | null; after?: Cursor | null }): PageRequest => pageRequest(args, pageSizeMax);

  return { connection, pageArgs, page };
}

export type ConnectionTypes = ReturnType<typeof addConnectionTypes>;
